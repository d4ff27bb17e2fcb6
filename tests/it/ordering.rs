//! `ordering = "subject"` through the binary on every backend: a failing
//! event holds back only the later events of its subject, which then come
//! in publish order; other subjects go on meanwhile; and a relay killed
//! while it retries an event delivers that subject in order once back.

use std::time::Duration;

use chrono::Utc;
use hookbridge_brokers::{KafkaBroker, NatsServer};
use hookbridge_testkit::keys;
use hookbridge_testkit::recorder::{Recorded, Recorder, Reply};

use crate::support::{Running, kafka_bus, metric, nats_bus, subscriber_toml, write_config_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_is_delivered_in_order_on_embedded() {
    ordering_on("embedded", "", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_is_delivered_in_order_on_nats() {
    let server = NatsServer::start();
    // What a killed relay held comes back after ack_wait.
    ordering_on("nats", &format!("{}ack_wait = \"2s\"\n", nats_bus(&server)), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_is_delivered_in_order_on_kafka() {
    let broker = KafkaBroker::start();
    // A topic per type: a subject is ordered within each type (docs/relay.md).
    // Static membership, as docs/kafka.md deploys relays: the relay killed
    // and started again takes its own partitions back at once.
    ordering_on("kafka", &format!("{}instance_id = \"relay-0\"\n", kafka_bus(&broker)), true).await;
}

/// Sends a signed Mailpipe event of `message` (its subject); the event id.
async fn send(client: &reqwest::Client, running: &Running, ty: &str, message: &str, n: u64) -> String {
    let id = format!("evt_{message}_{n}");
    let body = serde_json::to_vec(&serde_json::json!({
        "id": id,
        "type": ty,
        "created_at": Utc::now().to_rfc3339(),
        "data": {"message_id": message, "from": "billing@acme.example", "to": ["ada@example.com"]},
    }))
    .unwrap();
    let (name, signature) = keys::signer("mailpipe").header(&body, Utc::now());
    let response = client.post(running.url("mailpipe")).header(name, signature).body(body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

/// The event ids delivered for `subject`, in the order requested.
fn of_subject(requests: &[Recorded], subject: &str) -> Vec<String> {
    requests.iter().filter(|r| r.json()["subject"] == subject).map(Recorded::event_id).collect()
}

/// Every attempt at an event comes before any attempt at a later event of
/// its subject: `seen` is `sent` with each element repeated one or more times.
fn assert_in_order(seen: &[String], sent: &[String]) {
    let mut collapsed = seen.to_vec();
    collapsed.dedup();
    assert_eq!(collapsed, sent, "attempts in publish order, each event settled before the next: {seen:?}");
}

/// `one_type`: every event of a subject of one type (Kafka orders within a type).
async fn ordering_on(backend: &str, bus: &str, one_type: bool) {
    let ty = |ty: &'static str| if one_type { "email.sent" } else { ty };
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::spawn().await;
    let extra = "ordering = \"subject\"\nmax_in_flight = 8\nretry_schedule = [\"1s\", \"1s\", \"30s\", \"30s\"]";
    let config = write_config_on(dir.path(), backend, bus, &subscriber_toml("ordered", &recorder.url(), extra));
    let client = reqwest::Client::new();
    let mut running = Running::start(&config);

    // The first event of `a` fails twice (retried in place, 1 s apart).
    recorder.script_event("evt_a_1", [Reply::status(500), Reply::status(500)]);
    let a1 = send(&client, &running, ty("email.sent"), "a", 1).await;
    assert_eq!(a1, "evt_a_1");
    recorder.wait_for(1, Duration::from_secs(20)).await;
    let mut a = vec![a1];
    let mut b = Vec::new();
    for (n, t) in [(2, "email.delivered"), (3, "email.opened")] {
        a.push(send(&client, &running, ty(t), "a", n).await);
        b.push(send(&client, &running, ty(t), "b", n).await);
    }
    let requests = recorder
        .wait_until(
            |r| of_subject(r, "a").last() == a.last() && of_subject(r, "b").len() >= 2,
            Duration::from_secs(30),
            "a and b delivered",
        )
        .await;
    let (seen_a, seen_b) = (of_subject(&requests, "a"), of_subject(&requests, "b"));
    assert_eq!(seen_a.len(), 5, "a: two failures, a success, then the two later events: {seen_a:?}");
    assert_in_order(&seen_a, &a);
    assert_eq!(seen_a[..3], [a[0].clone(), a[0].clone(), a[0].clone()]);
    // `b` went on while `a`'s first event waited for its retries.
    let last_a1 = requests.iter().rposition(|r| r.event_id() == a[0]).unwrap();
    let first_b = requests.iter().position(|r| r.json()["subject"] == "b").unwrap();
    assert!(first_b < last_a1, "another subject is not held back by a retry");
    assert_eq!(seen_b, b);

    // Killed while an event of `c` is retried: the later events of `c`
    // wait in the relay, unsettled; once back, `c` comes in order.
    // Three failures: two or three before the kill, at most one after.
    recorder.script_event("evt_c_1", vec![Reply::status(503); 3]);
    let mut c = vec![send(&client, &running, ty("email.sent"), "c", 1).await];
    recorder.wait_until(|r| of_subject(r, "c").len() >= 2, Duration::from_secs(20), "c's first event retried").await;
    for (n, t) in [(2, "email.delivered"), (3, "email.clicked")] {
        c.push(send(&client, &running, ty(t), "c", n).await);
    }
    // All three are held: c's first retrying, the other two behind it.
    let held = "hookbridge_relay_ordering_held_events{subscriber=\"ordered\"}";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while metric(running.admin, held).await < 3.0 {
        assert!(tokio::time::Instant::now() < deadline, "c's events never all reached the relay");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.child.kill().unwrap();
    running.child.wait().unwrap();
    let before_kill = of_subject(&recorder.requests(), "c");
    assert!(before_kill.iter().all(|id| *id == c[0]), "c's later events waited: {before_kill:?}");
    let running = Running::start(&config);
    recorder
        .wait_until(|r| of_subject(r, "c").last() == c.last(), Duration::from_secs(60), "c after the restart")
        .await;
    assert_in_order(&of_subject(&recorder.requests(), "c"), &c);
    drop(running);
}
