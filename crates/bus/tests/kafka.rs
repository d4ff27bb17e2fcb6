//! The Kafka backend against two independent Kafka-protocol brokers: the
//! shared conformance suite on noida-db's Kafka engine (in this process, as
//! it is and behind a relay that holds fetches as Kafka does) and on tansu
//! (a process), then what only Kafka does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hookbridge_brokers::{KafkaBroker, Tansu};
use hookbridge_bus::conformance::{self, Store};
use hookbridge_bus::kafka::{KafkaBus, KafkaOptions};
use hookbridge_bus::{Bus, NewGroup, PublishOutcome, Publisher as _, StartFrom, SubscribeOptions};
use hookbridge_event::EventPattern;

/// Options for tests: one partition per topic, so that each type keeps its
/// order as the conformance suite expects; quick metadata refreshes.
fn options(address: String, partitions: i32) -> KafkaOptions {
    let mut options = KafkaOptions::new(vec![address], "hookbridge");
    options.partitions = partitions;
    options.replication_factor = 1;
    options.metadata_refresh = Duration::from_secs(1);
    options.publish_timeout = Duration::from_secs(5);
    options
}

struct Noida {
    broker: KafkaBroker,
}

#[async_trait]
impl Store for Noida {
    async fn open(&self) -> Arc<dyn Bus> {
        Arc::new(KafkaBus::open(options(self.broker.address(), 1)).await.expect("Kafka bus opens"))
    }

    async fn open_with_max_age(&self, max_age: Duration) -> Option<Arc<dyn Bus>> {
        let mut options = options(self.broker.address(), 1);
        options.retention = Some(max_age);
        Some(Arc::new(KafkaBus::open(options).await.expect("Kafka bus opens")))
    }

    fn stop_broker(&mut self) -> bool {
        self.broker.stop();
        true
    }

    fn resume_broker(&mut self) {
        self.broker.resume();
    }

    fn orders_across_types(&self) -> bool {
        false
    }
}

mod noida {
    use super::*;
    hookbridge_bus::conformance_tests!(Noida { broker: KafkaBroker::start() });
}

/// noida-db behind the relay that answers fetches as a Kafka broker does
/// (an empty fetch held until a record arrives or `fetch.wait.max.ms`
/// passes, an answer cut to `fetch.max.bytes`): the same cases with a Kafka
/// broker's timing, where noida-db alone answers every fetch at once.
mod noida_held {
    use super::*;
    hookbridge_bus::conformance_tests!(Noida { broker: KafkaBroker::start_holding_fetches() });
}

/// tansu keeps its log in memory only: it cannot come back with its data
/// after an outage, and its memory engine answers `offsets_for_times`
/// wrongly, so the cases that look up offsets by time are skipped on it.
struct OnTansu {
    broker: Tansu,
}

#[async_trait]
impl Store for OnTansu {
    async fn open(&self) -> Arc<dyn Bus> {
        let mut options = options(self.broker.address(), 1);
        // tansu holds a join for about half the session timeout: the
        // smallest a broker allows keeps each join to ~3s.
        options.properties.push(("session.timeout.ms".into(), "6000".into()));
        Arc::new(KafkaBus::open(options).await.expect("Kafka bus opens"))
    }

    fn orders_across_types(&self) -> bool {
        false
    }

    fn finds_offsets_by_time(&self) -> bool {
        false
    }

    fn counts_batched_records(&self) -> bool {
        false
    }
}

mod tansu {
    use super::*;
    // Skipped on it, by the store's answers: the cases that start at a time
    // (its memory engine answers offsets_for_times wrongly), retention by
    // age (not applied by its memory engine) and the broker outage (a
    // memory-only broker loses its log when it stops).
    hookbridge_bus::conformance_tests!(OnTansu { broker: Tansu::start() });
}

fn pattern(p: &str) -> Vec<EventPattern> {
    vec![EventPattern::parse(p).unwrap()]
}

/// Several partitions: two consumers of one group share them, every event
/// arrives once, and the group's position covers them all afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_shares_partitions_across_consumers() {
    let broker = KafkaBroker::start();
    let bus = KafkaBus::open(options(broker.address(), 4)).await.unwrap();
    let events: Vec<_> = (0..120).map(|_| conformance::event("email.delivered")).collect();
    for e in &events {
        assert_eq!(bus.publish(e).await.unwrap(), PublishOutcome::Published);
    }
    let subscribe = || {
        bus.subscribe(SubscribeOptions {
            group: "shared".into(),
            patterns: pattern("*"),
            start: StartFrom::Committed { if_new: NewGroup::Earliest },
        })
    };
    let (mut a, mut b) = (subscribe().await.unwrap(), subscribe().await.unwrap());
    let mut by_consumer: HashMap<&str, Vec<String>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while by_consumer.values().map(Vec::len).sum::<usize>() < events.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {:?} delivered",
            by_consumer.values().map(Vec::len).collect::<Vec<_>>()
        );
        tokio::select! {
            Ok(d) = a.next() => { by_consumer.entry("a").or_default().push(d.event.id.clone()); d.ack().await.unwrap(); }
            Ok(d) = b.next() => { by_consumer.entry("b").or_default().push(d.event.id.clone()); d.ack().await.unwrap(); }
        }
    }
    let mut all: Vec<String> = by_consumer.values().flatten().cloned().collect();
    all.sort();
    let mut sent: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    sent.sort();
    assert_eq!(all, sent, "every event exactly once");
    let status = bus.group_status("shared", &pattern("*")).await.unwrap();
    assert_eq!(status.backlog, 0, "{status:?}");
}

/// A member whose deliveries are stuck, with more records waiting than it
/// reads ahead (2,000), stops reading its consumer but still serves the
/// group's rebalances: a second member gets partitions and events while the
/// first takes nothing, and once the first takes again, every event arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_a_full_channel_still_hands_partitions_over() {
    let broker = KafkaBroker::start();
    let bus = KafkaBus::open(options(broker.address(), 4)).await.unwrap();
    let events: Vec<_> = (0..5_000).map(|_| conformance::event("email.delivered")).collect();
    // Published 50 at once: one by one takes most of half a minute.
    let publishes = events.chunks(100).map(|chunk| {
        let (bus, chunk) = (bus.clone(), chunk.to_vec());
        tokio::spawn(async move {
            for e in &chunk {
                assert_eq!(bus.publish(e).await.unwrap(), PublishOutcome::Published);
            }
        })
    });
    for publish in publishes.collect::<Vec<_>>() {
        publish.await.unwrap();
    }
    let opts = SubscribeOptions {
        group: "stuck".into(),
        patterns: pattern("*"),
        start: StartFrom::Committed { if_new: NewGroup::Earliest },
    };
    let mut stuck = bus.subscribe(opts.clone()).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(20), stuck.next()).await.expect("an event").unwrap();
    let mut seen = vec![first.event.id.clone()];
    first.ack().await.unwrap();
    // The first member's channel fills; it then takes nothing for a while.
    let mut second = bus.subscribe(opts).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(30), second.next())
        .await
        .expect("the second member gets partitions from a member whose channel is full")
        .unwrap();
    seen.push(d.event.id.clone());
    d.ack().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut unique: std::collections::HashSet<String> = seen.iter().cloned().collect();
    while unique.len() < events.len() {
        assert!(tokio::time::Instant::now() < deadline, "only {} of {} arrived", unique.len(), events.len());
        let d = tokio::select! {
            Ok(d) = stuck.next() => d,
            Ok(d) = second.next() => d,
            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
        };
        unique.insert(d.event.id.clone());
        d.ack().await.unwrap();
    }
    let sent: std::collections::HashSet<String> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(unique, sent, "every event arrived");
}

/// A consumer leaving mid-stream hands its partitions over: nothing it did
/// not settle is lost, and what it settled is not delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_loses_nothing_and_repeats_nothing_settled() {
    let broker = KafkaBroker::start();
    let bus = KafkaBus::open(options(broker.address(), 3)).await.unwrap();
    let events: Vec<_> = (0..60).map(|_| conformance::event("email.opened")).collect();
    for e in &events {
        bus.publish(e).await.unwrap();
    }
    let opts = SubscribeOptions {
        group: "handover".into(),
        patterns: pattern("email.*"),
        start: StartFrom::Committed { if_new: NewGroup::Earliest },
    };
    let mut settled = Vec::new();
    {
        let mut first = bus.subscribe(opts.clone()).await.unwrap();
        for _ in 0..20 {
            let d = tokio::time::timeout(Duration::from_secs(20), first.next()).await.unwrap().unwrap();
            settled.push(d.event.id.clone());
            d.ack().await.unwrap();
        }
        // Two more taken and never settled: they must come again.
        let _held = (first.next().await.unwrap(), first.next().await.unwrap());
    }
    let mut second = bus.subscribe(opts).await.unwrap();
    let mut rest = Vec::new();
    while settled.len() + rest.len() < events.len() {
        let d = tokio::time::timeout(Duration::from_secs(20), second.next()).await.expect("the rest arrives").unwrap();
        assert!(!settled.contains(&d.event.id), "a settled event came again: {}", d.event.id);
        rest.push(d.event.id.clone());
        d.ack().await.unwrap();
    }
    let mut all: Vec<_> = settled.into_iter().chain(rest).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), events.len());
}

/// The records carry the CloudEvents Kafka binding's headers and the
/// subject as key, and duplicates are dropped by the publishing process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_follow_the_cloudevents_kafka_binding() {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::message::{Headers as _, Message as _};
    let broker = KafkaBroker::start();
    let bus = KafkaBus::open(options(broker.address(), 1)).await.unwrap();
    let event = conformance::event("email.bounced");
    bus.publish(&event).await.unwrap();
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "inspect")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["hookbridge.email.bounced"]).unwrap();
    let message = tokio::task::spawn_blocking(move || {
        loop {
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                break m.unwrap().detach();
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(message.key(), event.subject.as_deref().map(str::as_bytes));
    let headers: HashMap<String, String> = message
        .headers()
        .unwrap()
        .iter()
        .map(|h| (h.key.to_owned(), String::from_utf8(h.value.unwrap().to_vec()).unwrap()))
        .collect();
    assert_eq!(headers["content-type"], "application/cloudevents+json; charset=UTF-8");
    assert_eq!((headers["ce_id"].as_str(), headers["ce_type"].as_str()), (event.id.as_str(), "email.bounced"));
    assert_eq!(headers["ce_source"], event.source);
    let stored = hookbridge_event::Event::from_json(message.payload().unwrap()).unwrap();
    assert_eq!(stored.id, event.id);
}

/// Kafka refuses to start without a broker to talk to, within a bound.
#[tokio::test]
async fn opening_without_a_broker_fails_clearly() {
    let port = hookbridge_brokers::free_port();
    let error = KafkaBus::open(options(format!("127.0.0.1:{port}"), 1)).await.unwrap_err();
    assert!(error.to_string().contains("cannot reach Kafka"), "{error}");
}

/// A consumer dropped (a relay stopping) closes and leaves its group once
/// its deliveries are settled: `close` returns promptly and another member
/// gets its partitions without waiting for the session timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_consumer_leaves_its_group_at_once() {
    let broker = KafkaBroker::start();
    let bus = KafkaBus::open(options(broker.address(), 2)).await.unwrap();
    let group = |patterns| SubscribeOptions {
        group: "leaving".into(),
        patterns,
        start: StartFrom::Committed { if_new: NewGroup::Earliest },
    };
    let events: Vec<_> = (0..4).map(|_| conformance::event("email.sent")).collect();
    for e in &events {
        assert_eq!(bus.publish(e).await.unwrap(), PublishOutcome::Published);
    }
    let mut first = bus.subscribe(group(vec![EventPattern::All])).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(20), first.next()).await.unwrap().unwrap();
    d.ack().await.unwrap();
    drop(first);
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), bus.close()).await.expect("the consumer closes within 5s");
    eprintln!("closed in {:?}", started.elapsed());
    // A new member gets every partition and the rest of the events soon,
    // though the session timeout is librdkafka's 10 s here.
    let second_bus = KafkaBus::open(options(broker.address(), 2)).await.unwrap();
    let mut second = second_bus.subscribe(group(vec![EventPattern::All])).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < events.len() - 1 {
        let d = tokio::time::timeout(Duration::from_secs(8), second.next()).await.expect("taken over at once").unwrap();
        seen.insert(d.event.id.clone());
        d.ack().await.unwrap();
    }
}

/// A static member fenced by another consumer joining under its
/// `group.instance.id` (what a broker does to a relay whose session expired
/// in an outage and which rejoined) is given up for good by librdkafka: the
/// bus replaces it with a new consumer in the group, so the events
/// published afterwards are delivered, and none is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_static_member_joins_again() {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let broker = KafkaBroker::start();
    let mut opts = options(broker.address(), 2);
    opts.instance_id = Some("relay-1".into());
    let bus = KafkaBus::open(opts).await.unwrap();
    let group = SubscribeOptions {
        group: "fenced".into(),
        patterns: pattern("email.*"),
        start: StartFrom::Committed { if_new: NewGroup::Earliest },
    };
    let before: Vec<_> = (0..6).map(|_| conformance::event("email.sent")).collect();
    for e in &before {
        bus.publish(e).await.unwrap();
    }
    let mut consumer = bus.subscribe(group).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < before.len() {
        let d = tokio::time::timeout(Duration::from_secs(20), consumer.next()).await.expect("delivered").unwrap();
        seen.insert(d.event.id.clone());
        d.ack().await.unwrap();
    }

    // Another consumer joins under the same static id and takes the
    // partitions: the broker fences the bus's consumer.
    let intruder: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "fenced")
        .set("group.instance.id", "relay-1")
        .set("session.timeout.ms", "6000")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    intruder.subscribe(&["hookbridge.email.sent"]).unwrap();
    let intruder = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while intruder.assignment().map_or(0, |a| a.count()) == 0 {
            assert!(std::time::Instant::now() < deadline, "the intruder never got partitions");
            let _ = intruder.poll(Duration::from_millis(100));
        }
        intruder
    })
    .await
    .unwrap();
    drop(intruder);

    let after: Vec<_> = (0..6).map(|_| conformance::event("email.sent")).collect();
    for e in &after {
        bus.publish(e).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !after.iter().all(|e| seen.contains(&e.id)) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let d = tokio::time::timeout(left, consumer.next())
            .await
            .unwrap_or_else(|_| {
                panic!("{} of the later events delivered", after.iter().filter(|e| seen.contains(&e.id)).count())
            })
            .unwrap();
        seen.insert(d.event.id.clone());
        // A settlement may fail while the member changes: the event comes again.
        let _ = d.ack().await;
    }
    // And the group commits again: a fenced consumer's commits all fail.
    loop {
        let status = bus.group_status("fenced", &pattern("email.*")).await.unwrap();
        if status.backlog == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the group's position stays behind: {status:?}");
        if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
            let _ = d.ack().await;
        }
    }
}

/// On a broker that holds an empty fetch as Kafka does (the benchmarks'
/// noida-db), an idle group waits instead of polling, and an event
/// published meanwhile wakes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_group_waits_on_held_fetches_and_a_publish_wakes_it() {
    let broker = KafkaBroker::start_holding_fetches();
    let mut options = options(broker.address(), 1);
    // Held up to 1 s (the broker's longest): a wake-up is then told apart from the deadline.
    options.properties.push(("fetch.wait.max.ms".into(), "1000".into()));
    let bus = KafkaBus::open(options).await.unwrap();
    let opts = SubscribeOptions {
        group: "idle".into(),
        patterns: pattern("email.*"),
        start: StartFrom::Committed { if_new: NewGroup::Earliest },
    };
    let first = conformance::event("email.opened");
    bus.publish(&first).await.unwrap();
    let mut consumer = bus.subscribe(opts).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(20), consumer.next()).await.expect("the first event").unwrap();
    assert_eq!(d.event.id, first.id);
    d.ack().await.unwrap();

    // Idle: a fetch a second or so per consumer, not a busy loop.
    let before = broker.fetches_answered();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = broker.fetches_answered() - before;
    assert!((1..=20).contains(&idle), "{idle} fetches answered in 2 s of idling");

    for _ in 0..3 {
        let next = conformance::event("email.opened");
        let sent = std::time::Instant::now();
        bus.publish(&next).await.unwrap();
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await.expect("the next event").unwrap();
        let took = sent.elapsed();
        assert_eq!(d.event.id, next.id);
        d.ack().await.unwrap();
        assert!(took < Duration::from_millis(900), "woken by the publish, not at the hold's end: {took:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The same broker answers within the fetch's size limits, as Kafka does
/// (noida-db's engine alone sends the whole backlog in one answer, which
/// a client refuses once it is over `receive.message.max.bytes`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_a_fetch_comes_in_answers_within_its_limits() {
    let broker = KafkaBroker::start_holding_fetches();
    let mut options = options(broker.address(), 1);
    for (key, value) in [
        ("fetch.max.bytes", "65536"),
        ("max.partition.fetch.bytes", "32768"),
        ("receive.message.max.bytes", "66560"),
        ("message.max.bytes", "60000"),
    ] {
        options.properties.push((key.into(), value.into()));
    }
    let bus = KafkaBus::open(options).await.unwrap();
    let events: Vec<_> = (0..1_500).map(|_| conformance::event("email.sent")).collect();
    let publishes = events.chunks(100).map(|chunk| {
        let (bus, chunk) = (bus.clone(), chunk.to_vec());
        tokio::spawn(async move {
            for e in &chunk {
                bus.publish(e).await.unwrap();
            }
        })
    });
    for publish in publishes.collect::<Vec<_>>() {
        publish.await.unwrap();
    }
    let total: usize = events.iter().map(|e| e.to_json().len()).sum();
    assert!(total > 4 * 65536, "the backlog ({total} bytes) takes several fetches");
    let opts = SubscribeOptions {
        group: "sized".into(),
        patterns: pattern("email.*"),
        start: StartFrom::Committed { if_new: NewGroup::Earliest },
    };
    let mut consumer = bus.subscribe(opts).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < events.len() {
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {} arrived", seen.len(), events.len()))
            .unwrap();
        seen.insert(d.event.id.clone());
        d.ack().await.unwrap();
    }
    let sent: std::collections::HashSet<String> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(seen, sent);
}

/// Lookups (a state read, a group's status) are not held behind a fetch
/// the broker holds: the lookup clients' fetches wait 10 ms, not 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_do_not_wait_behind_a_held_fetch() {
    let broker = KafkaBroker::start_holding_fetches();
    let bus = KafkaBus::open(options(broker.address(), 1)).await.unwrap();
    for i in 0..3 {
        bus.put_state(&format!("k{i}"), Some(b"v".to_vec())).await.unwrap();
    }
    bus.publish(&conformance::event("email.opened")).await.unwrap();
    let mut took = Vec::new();
    for _ in 0..7 {
        let t = std::time::Instant::now();
        assert_eq!(bus.get_state("k1").await.unwrap(), Some(b"v".to_vec()));
        bus.group_status("watched", &pattern("email.*")).await.unwrap();
        took.push(t.elapsed());
    }
    took.sort();
    // Each took at least 1 s (two holds of 500 ms) when the reader waited.
    assert!(took[3] < Duration::from_millis(300), "a state read and a status took {:?} (median)", took[3]);
}
