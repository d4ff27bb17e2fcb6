//! The relay away while events of a new type arrive: `hookbridge run`
//! started once and stopped (its subscriber's group exists), `hookbridge
//! ingress` alone accepts the first events of a type (their topic is made
//! then), and the relay started again delivers every one of them, on every
//! backend.

use std::collections::HashSet;
use std::time::Duration;

use hookbridge_brokers::{KafkaBroker, NatsServer};
use hookbridge_testkit::recorder::Recorder;

use crate::support::{Running, kafka_bus, nats_bus, send_event, sigterm, subscriber_toml, write_config_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_type_accepted_while_the_relay_is_away_is_delivered_on_embedded() {
    away("embedded", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_type_accepted_while_the_relay_is_away_is_delivered_on_nats() {
    let server = NatsServer::start();
    away("nats", &nats_bus(&server)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_type_accepted_while_the_relay_is_away_is_delivered_on_kafka() {
    let broker = KafkaBroker::start();
    away("kafka", &kafka_bus(&broker)).await;
}

async fn stop(running: Running) {
    sigterm(&running.child);
    let mut running = running;
    let status = tokio::task::spawn_blocking(move || running.child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
}

async fn away(backend: &str, bus_toml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::spawn().await;
    let config = write_config_on(dir.path(), backend, bus_toml, &subscriber_toml("all", &recorder.url(), ""));
    let client = reqwest::Client::new();

    // The subscriber's group is born, with no event yet.
    stop(Running::start(&config)).await;
    // The first events of a type, accepted while no relay runs.
    let ingress = Running::start_as("ingress", &config);
    let mut sent = HashSet::new();
    for seq in 0..20 {
        sent.insert(send_event(&client, &ingress, "email.bounced", seq).await);
    }
    stop(ingress).await;
    assert!(recorder.requests().is_empty());

    let _relay = Running::start(&config);
    recorder.wait_for_ids(&sent, Duration::from_secs(30), "events accepted while the relay was away").await;
}
