//! Per-subscriber rate limits and 429 slow-downs, through the binary on
//! every backend: a limited subscriber is paced while another is not; a
//! 429 with `Retry-After` pauses that subscriber and never dead-letters.

use std::time::Duration;

use hookbridge_brokers::{KafkaBroker, NatsServer};
use hookbridge_testkit::recorder::{Recorder, Reply};

use crate::support::{Running, kafka_bus, metric, nats_bus, send_event, write_config_on};

fn subscriber(name: &str, url: &str, extra: &str) -> String {
    format!("[[relay.subscribers]]\nname = \"{name}\"\nurl = \"{url}\"\nevents = [\"*\"]\n{extra}\n")
}

async fn limits_on(backend: &str, bus: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (limited, free, polite) = (Recorder::spawn().await, Recorder::spawn().await, Recorder::spawn().await);
    let subscribers = [
        subscriber("limited", &limited.url(), "rate_limit = \"20/s\"\nrate_limit_burst = 1"),
        subscriber("free", &free.url(), ""),
        subscriber("polite", &polite.url(), "max_in_flight = 1\nretry_schedule = [\"100ms\"]"),
    ]
    .concat();
    let config = write_config_on(dir.path(), backend, bus, &subscribers);
    let slow_down = Reply { retry_after: Some("1".into()), ..Reply::status(429) };
    polite.script([slow_down.clone(), slow_down]);
    let running = Running::start(&config);
    let client = reqwest::Client::new();

    // One event first: the polite subscriber answers it 429 twice.
    send_event(&client, &running, "email.sent", 0).await;
    let first = polite.wait_for(3, Duration::from_secs(20)).await;
    for pair in first.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(900), "paused for its Retry-After: {gap:?}");
    }
    assert_eq!(first[0].event_id(), first[2].event_id(), "the same event, tried a third time");

    for seq in 1..30 {
        send_event(&client, &running, "email.sent", seq).await;
    }
    let free_all = free.wait_for(30, Duration::from_secs(20)).await;
    let limited_all = limited.wait_for(30, Duration::from_secs(30)).await;
    polite.wait_for(32, Duration::from_secs(20)).await;
    // 20/s with a burst of 1: 29 gaps of 50 ms at least over the 29 later events.
    let span = limited_all[29].at - limited_all[1].at;
    assert!(span >= Duration::from_millis(1300), "the limited subscriber was paced: {span:?}");
    assert!(free_all[29].at + Duration::from_millis(500) < limited_all[29].at, "the other subscriber was not slowed");

    let admin = running.admin;
    let value = |name: &'static str, labels: String| async move { metric(admin, &format!("{name}{{{labels}}}")).await };
    assert!(value("hookbridge_relay_slowed_total", "reason=\"rate_limit\",subscriber=\"limited\"".into()).await > 0.0);
    assert_eq!(value("hookbridge_relay_slowed_total", "reason=\"rate_limit\",subscriber=\"free\"".into()).await, 0.0);
    assert_eq!(
        value("hookbridge_relay_slowed_total", "reason=\"retry_after\",subscriber=\"polite\"".into()).await,
        2.0
    );
    let polite_outcome = |outcome: &'static str| {
        value("hookbridge_relay_deliveries_total", format!("outcome=\"{outcome}\",subscriber=\"polite\""))
    };
    assert_eq!(polite_outcome("slowed_down").await, 2.0);
    assert_eq!(polite_outcome("dead_lettered").await, 0.0, "a 429 never dead-letters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_slow_downs_on_embedded() {
    limits_on("embedded", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_slow_downs_on_nats() {
    let server = NatsServer::start();
    limits_on("nats", &nats_bus(&server)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_slow_downs_on_kafka() {
    let broker = KafkaBroker::start();
    limits_on("kafka", &kafka_bus(&broker)).await;
}
