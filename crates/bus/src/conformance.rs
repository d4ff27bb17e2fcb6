//! The behaviour every bus backend must show, as test functions over the
//! [`Bus`] traits. A backend's tests provide a [`Store`] and run each case
//! (see [`conformance_tests!`](crate::conformance_tests)).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use hookbridge_event::{DATA_CONTENT_TYPE, Event, EventPattern, SPEC_VERSION};
use serde_json::value::RawValue;

use crate::{Bus, Consumer, Delivery, Failure, NewGroup, PublishOutcome, StartFrom, SubscribeOptions};

/// One backend store that can be opened, dropped and opened again (a restart).
#[async_trait]
pub trait Store: Send + Sync {
    async fn open(&self) -> Arc<dyn Bus>;

    /// Opens it with events expiring after `max_age` (applied within a
    /// second or so); `None` when the backend cannot be configured so.
    async fn open_with_max_age(&self, _max_age: Duration) -> Option<Arc<dyn Bus>> {
        None
    }

    /// Stops the broker (`false`: there is none, e.g. the embedded bus).
    fn stop_broker(&mut self) -> bool {
        false
    }

    /// Starts the broker again on the same address and storage.
    fn resume_broker(&mut self) {}

    /// Whether events of different types come in publish order (a log with
    /// one sequence); `false` where only each type keeps its order (Kafka:
    /// one topic per type).
    fn orders_across_types(&self) -> bool {
        true
    }

    /// Whether the broker finds offsets by time correctly (tansu's memory
    /// engine does not): the cases that start at a time are skipped without.
    fn finds_offsets_by_time(&self) -> bool {
        true
    }
}

/// Generates one `#[tokio::test]` per conformance case, each with a fresh
/// store from `$store` (an async expression yielding a [`Store`]).
#[macro_export]
macro_rules! conformance_tests {
    ($store:expr) => {
        $crate::conformance_tests!(@cases $store;
            publish_delivers_matching_events_in_order,
            duplicate_ids_are_stored_once,
            group_position_survives_restart,
            nack_redelivers_after_delay_without_blocking,
            nacked_retry_survives_restart,
            dropped_delivery_is_redelivered,
            replay_from_time,
            earliest_and_latest,
            concurrent_consumers_share_a_group,
            groups_are_independent,
            dead_letters_are_kept_replayed_and_discarded,
            group_status_counts_outstanding_work,
            state_is_shared_and_durable,
            count_between_counts_a_window,
            retention_by_age,
            a_group_that_exists_misses_nothing_published_while_away,
            a_member_joins_a_running_group_without_its_help,
        );
        $crate::conformance_tests!(@mut_cases $store; a_broker_outage_loses_nothing_acknowledged, dead_letters_survive_a_broker_crash);
    };
    (@cases $store:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = $store;
                $crate::conformance::$case(&store).await;
            }
        )*
    };
    (@mut_cases $store:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let mut store = $store;
                $crate::conformance::$case(&mut store).await;
            }
        )*
    };
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A schema-valid event of type `ty` with a unique id.
pub fn event(ty: &str) -> Event {
    use hookbridge_event::data::{Bounce, BounceKind, EmailData, MessagingData, Normalized, ResourceData};
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let id = format!("conf-{}-{n}", std::process::id());
    let normalized = if ty.starts_with("email.") {
        let bounce = matches!(ty, "email.bounced" | "email.deferred").then(|| Bounce {
            kind: BounceKind::Soft,
            code: Some("421".into()),
            message: None,
        });
        Normalized::Email(EmailData {
            message_id: Some(format!("msg-{n}")),
            to: vec!["ada@example.com".into()],
            bounce,
            ..EmailData::default()
        })
    } else if ty.starts_with("message.") {
        Normalized::Messaging(MessagingData { message_id: Some(format!("msg-{n}")), ..MessagingData::default() })
    } else {
        Normalized::Resource(ResourceData { resource_id: Some(id.clone()) })
    };
    let original = RawValue::from_string(format!(r#"{{"seq":{n}}}"#)).unwrap();
    Event {
        specversion: SPEC_VERSION.into(),
        id: id.clone(),
        source: "urn:hookbridge:source:conformance".into(),
        ty: ty.into(),
        time: Utc::now(),
        subject: Some(format!("msg-{n}")),
        datacontenttype: DATA_CONTENT_TYPE.into(),
        provider: "mailpipe".into(),
        providerevent: ty.into(),
        ingesttime: Utc::now(),
        traceparent: None,
        data: normalized.into_data(&original),
    }
}

fn options(group: &str, patterns: &[&str], start: StartFrom) -> SubscribeOptions {
    SubscribeOptions {
        group: group.into(),
        patterns: patterns.iter().map(|p| EventPattern::parse(p).unwrap()).collect(),
        start,
    }
}

const FROM_START: StartFrom = StartFrom::Committed { if_new: NewGroup::Earliest };
/// How the relay subscribes: a new group starts at the latest event.
const AS_RELAY: StartFrom = StartFrom::Committed { if_new: NewGroup::Latest };

async fn next(consumer: &mut Box<dyn Consumer>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery within 10s")
        .expect("consumer works")
}

/// Asserts nothing arrives for `quiet`.
async fn assert_quiet(consumer: &mut Box<dyn Consumer>, quiet: Duration) {
    if let Ok(delivery) = tokio::time::timeout(quiet, consumer.next()).await {
        panic!("expected no delivery, got {:?}", delivery.map(|d| d.event.id));
    }
}

async fn publish(bus: &Arc<dyn Bus>, events: &[Event]) {
    for event in events {
        assert_eq!(bus.publish(event).await.unwrap(), PublishOutcome::Published);
    }
}

pub async fn publish_delivers_matching_events_in_order(store: &dyn Store) {
    let bus = store.open().await;
    let events = [event("email.bounced"), event("email.delivered"), event("message.created"), event("email.bounced")];
    publish(&bus, &events).await;
    let mut consumer = bus.subscribe(options("billing", &["email.bounced", "message.*"], FROM_START)).await.unwrap();
    let expected = [&events[0], &events[2], &events[3]];
    let mut received = Vec::new();
    for _ in expected {
        let delivery = next(&mut consumer).await;
        let sent = expected.iter().find(|e| e.id == delivery.event.id).expect("a matching event");
        assert_eq!(delivery.event.ty, sent.ty);
        assert_eq!(delivery.event.data.get(), sent.data.get());
        assert_eq!(delivery.attempt, 1);
        received.push(delivery.event.id.clone());
        delivery.ack().await.unwrap();
    }
    let ids = |events: &[&Event]| events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    if store.orders_across_types() {
        assert_eq!(received, ids(&expected));
    } else {
        // Each type in publish order.
        let bounced: Vec<_> = received.iter().filter(|id| **id != events[2].id).cloned().collect();
        assert_eq!(bounced, ids(&[&events[0], &events[3]]));
        assert!(received.contains(&events[2].id));
    }
    assert_quiet(&mut consumer, Duration::from_millis(200)).await;
}

pub async fn duplicate_ids_are_stored_once(store: &dyn Store) {
    let bus = store.open().await;
    let e = event("email.delivered");
    assert_eq!(bus.publish(&e).await.unwrap(), PublishOutcome::Published);
    assert_eq!(bus.publish(&e).await.unwrap(), PublishOutcome::Duplicate);
    // Concurrent duplicates: exactly one is stored.
    let f = event("email.delivered");
    let outcomes = futures_join(bus.clone(), f.clone(), 8).await;
    assert_eq!(outcomes.iter().filter(|o| **o == PublishOutcome::Published).count(), 1, "{outcomes:?}");
    let mut consumer = bus.subscribe(options("dups", &["*"], FROM_START)).await.unwrap();
    for expected in [&e, &f] {
        let d = next(&mut consumer).await;
        assert_eq!(d.event.id, expected.id);
        d.ack().await.unwrap();
    }
    assert_quiet(&mut consumer, Duration::from_millis(200)).await;
}

async fn futures_join(bus: Arc<dyn Bus>, e: Event, n: usize) -> Vec<PublishOutcome> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (bus, e) = (bus.clone(), e.clone());
            tokio::spawn(async move { bus.publish(&e).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

pub async fn group_position_survives_restart(store: &dyn Store) {
    let events: Vec<_> = (0..4).map(|_| event("email.queued")).collect();
    {
        let bus = store.open().await;
        publish(&bus, &events).await;
        let mut consumer = bus.subscribe(options("resume", &["*"], FROM_START)).await.unwrap();
        for e in &events[..2] {
            let d = next(&mut consumer).await;
            assert_eq!(d.event.id, e.id);
            d.ack().await.unwrap();
        }
    }
    let bus = store.open().await;
    let mut consumer = bus.subscribe(options("resume", &["*"], FROM_START)).await.unwrap();
    for e in &events[2..] {
        let d = next(&mut consumer).await;
        assert_eq!(d.event.id, e.id, "resumes after the acked events");
        d.ack().await.unwrap();
    }
    assert_quiet(&mut consumer, Duration::from_millis(200)).await;
}

pub async fn nack_redelivers_after_delay_without_blocking(store: &dyn Store) {
    let bus = store.open().await;
    let (first, second) = (event("email.bounced"), event("email.bounced"));
    publish(&bus, &[first.clone(), second.clone()]).await;
    let mut consumer = bus.subscribe(options("retry", &["*"], FROM_START)).await.unwrap();
    let d = next(&mut consumer).await;
    assert_eq!(d.event.id, first.id);
    let nacked_at = Instant::now();
    d.nack(Duration::from_millis(1500)).await.unwrap();
    // The newer event is not held back by the pending retry.
    let d = next(&mut consumer).await;
    assert_eq!(d.event.id, second.id);
    assert!(nacked_at.elapsed() < Duration::from_millis(1500), "second event waited for the retry");
    d.ack().await.unwrap();
    let d = next(&mut consumer).await;
    assert_eq!(d.event.id, first.id);
    assert_eq!(d.attempt, 2);
    assert!(nacked_at.elapsed() >= Duration::from_millis(1500), "redelivered before its delay");
    d.ack().await.unwrap();
    assert_quiet(&mut consumer, Duration::from_millis(200)).await;
}

pub async fn nacked_retry_survives_restart(store: &dyn Store) {
    let e = event("email.deferred");
    {
        let bus = store.open().await;
        publish(&bus, std::slice::from_ref(&e)).await;
        let mut consumer = bus.subscribe(options("durable-retry", &["*"], FROM_START)).await.unwrap();
        next(&mut consumer).await.nack(Duration::from_millis(300)).await.unwrap();
    }
    let bus = store.open().await;
    let mut consumer = bus.subscribe(options("durable-retry", &["*"], FROM_START)).await.unwrap();
    let d = next(&mut consumer).await;
    assert_eq!((d.event.id.as_str(), d.attempt), (e.id.as_str(), 2));
    d.ack().await.unwrap();
    assert_quiet(&mut consumer, Duration::from_millis(200)).await;
}

pub async fn dropped_delivery_is_redelivered(store: &dyn Store) {
    let bus = store.open().await;
    let e = event("email.opened");
    publish(&bus, std::slice::from_ref(&e)).await;
    let mut consumer = bus.subscribe(options("drop", &["*"], FROM_START)).await.unwrap();
    drop(next(&mut consumer).await);
    let d = next(&mut consumer).await;
    assert_eq!(d.event.id, e.id);
    d.ack().await.unwrap();
}

pub async fn replay_from_time(store: &dyn Store) {
    if !store.finds_offsets_by_time() {
        eprintln!("skipped: this broker cannot find offsets by time");
        return;
    }
    let bus = store.open().await;
    let before: Vec<_> = (0..3).map(|_| event("email.delivered")).collect();
    publish(&bus, &before).await;
    // Appends are stamped in milliseconds: step past the last one.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after: Vec<_> = (0..3).map(|_| event("email.delivered")).collect();
    publish(&bus, &after).await;
    let mut consumer = bus.subscribe(options("replay", &["*"], StartFrom::Time(since))).await.unwrap();
    for e in &after {
        let d = next(&mut consumer).await;
        assert_eq!(d.event.id, e.id);
        d.ack().await.unwrap();
    }
    assert_quiet(&mut consumer, Duration::from_millis(200)).await;
}

pub async fn earliest_and_latest(store: &dyn Store) {
    let bus = store.open().await;
    let old = event("email.queued");
    publish(&bus, std::slice::from_ref(&old)).await;
    let mut latest = bus.subscribe(options("latest", &["*"], StartFrom::Latest)).await.unwrap();
    let mut earliest = bus.subscribe(options("earliest", &["*"], StartFrom::Earliest)).await.unwrap();
    let new = event("email.queued");
    publish(&bus, std::slice::from_ref(&new)).await;
    for (consumer, expected) in [(&mut latest, &new), (&mut earliest, &old)] {
        let d = next(consumer).await;
        assert_eq!(d.event.id, expected.id);
        d.ack().await.unwrap();
    }
    let d = next(&mut earliest).await;
    assert_eq!(d.event.id, new.id);
    d.ack().await.unwrap();
}

pub async fn concurrent_consumers_share_a_group(store: &dyn Store) {
    let bus = store.open().await;
    let events: Vec<_> = (0..200).map(|_| event("email.delivered")).collect();
    let received = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let mut consumer = bus.subscribe(options("shared", &["*"], FROM_START)).await.unwrap();
        let (received, total) = (received.clone(), events.len() as u64);
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            // Until the two consumers together hold every event.
            while received.load(Ordering::SeqCst) < total && tokio::time::Instant::now() < deadline {
                if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_millis(50), consumer.next()).await {
                    got.push(d.event.id.clone());
                    d.ack().await.unwrap();
                    received.fetch_add(1, Ordering::SeqCst);
                }
            }
            got
        }));
    }
    publish(&bus, &events).await;
    let mut seen = HashSet::new();
    let mut total = 0;
    for task in tasks {
        let got = task.await.unwrap();
        total += got.len();
        seen.extend(got);
    }
    assert_eq!(total, events.len(), "each event delivered to exactly one consumer");
    assert_eq!(seen, events.iter().map(|e| e.id.clone()).collect::<HashSet<_>>());
}

/// A group that exists (started once, stopped before it committed anything)
/// misses nothing published while it was away: neither events of a type it
/// had seen, nor those of a type whose topic appeared meanwhile; and, having
/// started at the latest event, nothing from before its first start.
pub async fn a_group_that_exists_misses_nothing_published_while_away(store: &dyn Store) {
    let before = event("email.sent");
    let away = [event("email.sent"), event("email.sent"), event("email.complained"), event("email.complained")];
    {
        let bus = store.open().await;
        publish(&bus, std::slice::from_ref(&before)).await;
        let consumer = bus.subscribe(options("away", &["*"], AS_RELAY)).await.unwrap();
        drop(consumer);
        publish(&bus, &away).await;
    }
    let bus = store.open().await;
    let mut consumer = bus.subscribe(options("away", &["*"], AS_RELAY)).await.unwrap();
    let mut seen = HashSet::new();
    while seen.len() < away.len() {
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("every event published while the group was away, within 30s")
            .expect("consumer works");
        assert_ne!(d.event.id, before.id, "an event from before the group's first start");
        seen.insert(d.event.id.clone());
        d.ack().await.unwrap();
    }
    assert_eq!(seen, away.iter().map(|e| e.id.clone()).collect::<HashSet<_>>());
    assert_quiet(&mut consumer, Duration::from_millis(300)).await;
}

/// A second member (a relay replica, or a restart while the old process is
/// still a member) joins a running group that holds unsettled work on a new
/// type, without needing the group to be empty, and the two together
/// deliver everything.
pub async fn a_member_joins_a_running_group_without_its_help(store: &dyn Store) {
    let bus = store.open().await;
    let mut first = bus.subscribe(options("joined", &["*"], AS_RELAY)).await.unwrap();
    let events: Vec<_> = (0..6).map(|_| event("email.clicked")).collect();
    publish(&bus, &events[..3]).await;
    let held = next(&mut first).await;
    let second = tokio::time::timeout(Duration::from_secs(30), bus.subscribe(options("joined", &["*"], AS_RELAY)))
        .await
        .expect("a member joins within 30s")
        .expect("a member joins a group that has running members");
    drop(held);
    publish(&bus, &events[3..]).await;
    let seen = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let total = events.len();
    let mut tasks = Vec::new();
    for mut consumer in [first, second] {
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            while seen.lock().unwrap().len() < total && tokio::time::Instant::now() < deadline {
                if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_millis(100), consumer.next()).await {
                    seen.lock().unwrap().insert(d.event.id.clone());
                    d.ack().await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*seen.lock().unwrap(), events.iter().map(|e| e.id.clone()).collect::<HashSet<_>>());
}

pub async fn groups_are_independent(store: &dyn Store) {
    let bus = store.open().await;
    let e = event("email.bounced");
    publish(&bus, std::slice::from_ref(&e)).await;
    let mut a = bus.subscribe(options("a", &["*"], FROM_START)).await.unwrap();
    let mut b = bus.subscribe(options("b", &["email.*"], FROM_START)).await.unwrap();
    let held = next(&mut a).await;
    // Group a holding its delivery does not keep it from group b.
    let d = next(&mut b).await;
    assert_eq!(d.event.id, e.id);
    d.ack().await.unwrap();
    held.ack().await.unwrap();
}

fn failure(status: u16) -> Failure {
    Failure { attempts: 3, last_status: Some(status), last_error: format!("HTTP {status}") }
}

pub async fn dead_letters_are_kept_replayed_and_discarded(store: &dyn Store) {
    let (a, b) = (event("email.bounced"), event("email.bounced"));
    {
        let bus = store.open().await;
        publish(&bus, &[a.clone(), b.clone()]).await;
        let mut consumer = bus.subscribe(options("dlq", &["*"], FROM_START)).await.unwrap();
        for _ in 0..2 {
            next(&mut consumer).await.dead_letter("dlq", failure(500)).await.unwrap();
        }
        assert_quiet(&mut consumer, Duration::from_millis(200)).await;
    }
    // Dead letters survive a restart, with why they failed.
    let bus = store.open().await;
    let letters = bus.dead_letters("dlq").await.unwrap();
    assert_eq!(letters.iter().map(|l| l.event.id.as_str()).collect::<Vec<_>>(), [a.id.as_str(), b.id.as_str()]);
    assert_eq!(letters[0].failure, failure(500));
    assert_eq!(bus.dead_letters("another-group").await.unwrap().len(), 0);

    let mut consumer = bus.subscribe(options("dlq", &["*"], FROM_START)).await.unwrap();
    assert_eq!(bus.replay_dead_letters("dlq", Some(&letters[0].id)).await.unwrap(), 1);
    let d = next(&mut consumer).await;
    assert_eq!((d.event.id.as_str(), d.attempt), (a.id.as_str(), 1), "replayed as a first attempt");
    d.ack().await.unwrap();
    assert_eq!(bus.dead_letters("dlq").await.unwrap().len(), 1);
    assert_eq!(bus.discard_dead_letters("dlq", None).await.unwrap(), 1);
    assert!(bus.dead_letters("dlq").await.unwrap().is_empty());
    assert_quiet(&mut consumer, Duration::from_millis(200)).await;
}

pub async fn group_status_counts_outstanding_work(store: &dyn Store) {
    let bus = store.open().await;
    let patterns = [EventPattern::parse("email.*").unwrap()];
    let mut consumer = bus.subscribe(options("status", &["email.*"], StartFrom::Latest)).await.unwrap();
    publish(&bus, &[event("email.bounced"), event("message.created"), event("email.queued"), event("email.opened")])
        .await;
    let status = bus.group_status("status", &patterns).await.unwrap();
    assert_eq!(status.backlog, 3, "{status:?}");
    assert!(status.oldest_undelivered.is_some());
    next(&mut consumer).await.ack().await.unwrap();
    next(&mut consumer).await.nack(Duration::from_secs(60)).await.unwrap();
    let status = bus.group_status("status", &patterns).await.unwrap();
    // Two unsettled: one waiting for its retry, one not delivered yet.
    assert_eq!((status.backlog, status.dead_letters), (2, 0), "{status:?}");
    assert!((1..=2).contains(&status.pending_retries), "{status:?}");
}

pub async fn state_is_shared_and_durable(store: &dyn Store) {
    {
        let bus = store.open().await;
        assert_eq!(bus.get_state("relay.billing").await.unwrap(), None);
        bus.put_state("relay.billing", Some(b"disabled".to_vec())).await.unwrap();
        bus.put_state("relay.other", Some(b"x".to_vec())).await.unwrap();
        bus.put_state("relay.other", None).await.unwrap();
    }
    let bus = store.open().await;
    assert_eq!(bus.get_state("relay.billing").await.unwrap().as_deref(), Some(&b"disabled"[..]));
    assert_eq!(bus.get_state("relay.other").await.unwrap(), None);
}

pub async fn count_between_counts_a_window(store: &dyn Store) {
    if !store.finds_offsets_by_time() {
        eprintln!("skipped: this broker cannot find offsets by time");
        return;
    }
    let bus = store.open().await;
    publish(&bus, &[event("email.bounced")]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish(&bus, &[event("email.bounced"), event("message.created"), event("email.queued")]).await;
    let patterns = [EventPattern::parse("email.*").unwrap()];
    if let Some(count) = bus.count_between(&patterns, since, Utc::now()).await.unwrap() {
        assert_eq!(count, 2);
    }
}

pub async fn retention_by_age(store: &dyn Store) {
    let Some(bus) = store.open_with_max_age(Duration::from_secs(1)).await else {
        eprintln!("skipped: this backend's retention is not configurable in tests");
        return;
    };
    let old = event("email.queued");
    publish(&bus, std::slice::from_ref(&old)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fresh = event("email.queued");
    publish(&bus, std::slice::from_ref(&fresh)).await;
    // Expiry runs in the background: wait for it with a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut group = 0;
    loop {
        group += 1;
        let mut consumer =
            bus.subscribe(options(&format!("retention{group}"), &["*"], StartFrom::Earliest)).await.unwrap();
        let first = next(&mut consumer).await;
        let first_id = first.event.id.clone();
        first.ack().await.unwrap();
        if first_id == fresh.id {
            break;
        }
        assert_eq!(first_id, old.id);
        assert!(Instant::now() < deadline, "the old event was not expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn a_broker_outage_loses_nothing_acknowledged(store: &mut dyn Store) {
    let bus = store.open().await;
    let before = event("email.sent");
    publish(&bus, std::slice::from_ref(&before)).await;
    if !store.stop_broker() {
        eprintln!("skipped: this backend has no broker to lose");
        return;
    }
    // While the broker is away nothing is acknowledged: an error or no answer.
    let during = event("email.sent");
    let outcome = tokio::time::timeout(Duration::from_secs(3), bus.publish(&during)).await;
    assert!(!matches!(outcome, Ok(Ok(_))), "a publish was acknowledged with the broker down: {outcome:?}");
    assert!(bus.check_ready().await.is_err(), "ready with the broker down");
    store.resume_broker();
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = event("email.sent");
    loop {
        if let Ok(Ok(outcome)) = tokio::time::timeout(Duration::from_secs(2), bus.publish(&after)).await {
            assert_eq!(outcome, PublishOutcome::Published);
            break;
        }
        assert!(Instant::now() < deadline, "publishing did not recover after the broker came back");
    }
    assert!(bus.check_ready().await.is_ok());
    let mut consumer = bus.subscribe(options("outage", &["*"], FROM_START)).await.unwrap();
    let mut ids = HashSet::new();
    while !(ids.contains(&before.id) && ids.contains(&after.id)) {
        let d = next(&mut consumer).await;
        ids.insert(d.event.id.clone());
        d.ack().await.unwrap();
    }
}

/// Dead letters, and what a replay did to them, survive the broker being
/// killed: none is lost, whether it was written a moment or many seconds
/// before the crash.
pub async fn dead_letters_survive_a_broker_crash(store: &mut dyn Store) {
    const N: usize = 40;
    let events: Vec<Event> = (0..N).map(|_| event("email.bounced")).collect();
    let bus = store.open().await;
    publish(&bus, &events).await;
    {
        let mut consumer = bus.subscribe(options("crash", &["*"], FROM_START)).await.unwrap();
        for _ in 0..N {
            next(&mut consumer).await.dead_letter("crash", failure(410)).await.unwrap();
        }
    }
    let ids = |letters: &[crate::DeadLetter]| letters.iter().map(|l| l.event.id.clone()).collect::<HashSet<_>>();
    assert_eq!(ids(&bus.dead_letters("crash").await.unwrap()).len(), N);
    tokio::time::sleep(Duration::from_secs(3)).await;
    if !store.stop_broker() {
        eprintln!("skipped: this backend has no broker to lose");
        return;
    }
    store.resume_broker();
    let bus = store.open().await;
    let letters = bus.dead_letters("crash").await.unwrap();
    assert_eq!(ids(&letters), events.iter().map(|e| e.id.clone()).collect(), "dead letters lost in a broker crash");

    // Half replayed, then the broker killed: each is a dead letter or back on the bus.
    for letter in &letters[..N / 2] {
        assert_eq!(bus.replay_dead_letters("crash", Some(&letter.id)).await.unwrap(), 1);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    store.stop_broker();
    store.resume_broker();
    let bus = store.open().await;
    let left = ids(&bus.dead_letters("crash").await.unwrap());
    assert_eq!(left, ids(&letters[N / 2..]), "replayed dead letters came back or others went");
    let mut consumer = bus.subscribe(options("crash", &["*"], FROM_START)).await.unwrap();
    let mut replayed = HashSet::new();
    while replayed.len() < N / 2 {
        let d = next(&mut consumer).await;
        replayed.insert(d.event.id.clone());
        d.ack().await.unwrap();
    }
    assert_eq!(replayed, ids(&letters[..N / 2]));
}
