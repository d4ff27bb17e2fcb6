//! Content filters (CEL) on subscribers, through the binary on every
//! backend: only what the expression passes is delivered, the rest is
//! settled without a request and counted by reason, a failing expression is
//! a counted non-match, and replay applies the filter too.

use std::collections::HashSet;
use std::time::Duration;

use hookbridge_brokers::{KafkaBroker, NatsServer};
use hookbridge_testkit::recorder::Recorder;

use crate::support::{Running, cli, kafka_bus, metric, nats_bus, send_event, write_config_on, write_config_with};

fn subscriber(name: &str, url: &str, filter: &str) -> String {
    format!("[[relay.subscribers]]\nname = \"{name}\"\nurl = \"{url}\"\nevents = [\"email.*\"]\nfilter = '{filter}'\n")
}

async fn filters_on(backend: &str, bus: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (hard, data) = (Recorder::spawn().await, Recorder::spawn().await);
    let subscribers = format!(
        "{}{}",
        subscriber("hard", &hard.url(), r#"type == "email.bounced" && data.bounce.kind == "hard""#),
        subscriber("data", &data.url(), r#"data.bounce.kind == "hard""#),
    );
    let config = write_config_on(dir.path(), backend, bus, &subscribers);
    let running = Running::start(&config);
    let since = chrono::Utc::now().to_rfc3339();
    let client = reqwest::Client::new();
    let mut bounced = HashSet::new();
    for seq in 0..5 {
        send_event(&client, &running, "email.sent", seq).await;
        bounced.insert(send_event(&client, &running, "email.bounced", 100 + seq).await);
    }
    hard.wait_for_ids(&bounced, Duration::from_secs(30), "hard bounces").await;
    data.wait_for_ids(&bounced, Duration::from_secs(30), "hard bounces").await;
    // Every email.sent was settled without a request, and counted.
    let counted = |subscriber: &'static str, reason: &'static str| {
        let admin = running.admin;
        async move {
            metric(
                admin,
                &format!("hookbridge_relay_filtered_total{{reason=\"{reason}\",subscriber=\"{subscriber}\"}}"),
            )
            .await
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while counted("hard", "filtered").await < 5.0 || counted("data", "filter_error").await < 5.0 {
        assert!(tokio::time::Instant::now() < deadline, "the filtered events were not counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hard.requests().len(), 5, "nothing but the hard bounces");
    assert_eq!(data.requests().len(), 5, "a filter error is a non-match");

    // Replay applies the filter: only the bounces again.
    let (ok, out) = cli(&config, running.admin, &["replay", "--subscriber", "hard", "--since", &since]);
    assert!(ok && out.contains("5 delivered, 0 failed"), "{out}");
    let again: HashSet<String> =
        hard.wait_for(10, Duration::from_secs(20)).await[5..].iter().map(|r| r.event_id()).collect();
    assert_eq!(again, bounced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_deliver_only_what_they_pass_on_embedded() {
    filters_on("embedded", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_deliver_only_what_they_pass_on_nats() {
    let server = NatsServer::start();
    filters_on("nats", &nats_bus(&server)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_deliver_only_what_they_pass_on_kafka() {
    let broker = KafkaBroker::start();
    filters_on("kafka", &kafka_bus(&broker)).await;
}

#[test]
fn check_reports_a_bad_expression_with_its_path_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), &subscriber("bad", "http://127.0.0.1:1/", r#"data.bounce.kind =="#));
    let out =
        std::process::Command::new(crate::support::BIN).args(["check", "--config"]).arg(&config).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("relay.subscribers[0].filter: is not a valid CEL expression"), "{text}");
    assert!(text.contains("1:19") || text.contains("1:20"), "{text}");
}
