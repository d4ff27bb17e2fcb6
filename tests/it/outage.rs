//! The binary on a broker (NATS JetStream, Kafka): the broker goes away
//! under load. While it is away the ingress answers 503 and never 200; every
//! event answered 200 is delivered once it is back.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use hookbridge_brokers::{KafkaBroker, NatsServer};
use hookbridge_testkit::keys;
use hookbridge_testkit::recorder::Recorder;

use crate::support::{Running, subscriber_toml, write_config_with};

#[derive(Default)]
struct Answers {
    ok: std::sync::Mutex<Vec<String>>,
    unavailable: AtomicU64,
    /// 200s answered while the broker was known to be down: must stay 0.
    ok_while_down: AtomicU64,
}

/// A broker a test can take away and bring back.
trait Broker {
    fn stop(&mut self);
    fn resume(&mut self);
}

impl Broker for NatsServer {
    fn stop(&mut self) {
        NatsServer::stop(self);
    }
    fn resume(&mut self) {
        NatsServer::resume(self);
    }
}

impl Broker for KafkaBroker {
    fn stop(&mut self) {
        KafkaBroker::stop(self);
    }
    fn resume(&mut self) {
        KafkaBroker::resume(self);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_is_503_and_everything_acknowledged_is_delivered() {
    let server = NatsServer::start();
    let bus = format!("[bus.nats]\nurl = \"{}\"\n", server.url());
    outage(server, "nats", &bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_outage_is_503_and_everything_acknowledged_is_delivered() {
    let broker = KafkaBroker::start();
    let bus = format!(
        "[bus.kafka]\nbrokers = [\"{}\"]\npartitions = 1\nreplication_factor = 1\nmetadata_refresh = \"500ms\"\npublish_timeout = \"5s\"\n",
        broker.address()
    );
    outage(broker, "kafka", &bus).await;
}

async fn outage(mut server: impl Broker, backend: &str, bus_toml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::spawn().await;
    let extra = format!(
        "{bus_toml}{}",
        subscriber_toml("billing", &recorder.url(), "retry_schedule = [\"200ms\", \"500ms\", \"1s\", \"2s\", \"5s\"]")
    );
    let config = write_config_with(dir.path(), &extra);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("backend = \"embedded\"", &format!("backend = \"{backend}\""))
        .replace("publish_timeout = \"2s\"", "publish_timeout = \"1s\"");
    std::fs::write(&config, text).unwrap();
    let running = Running::start(&config);

    let answers = Arc::new(Answers::default());
    let down = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let url = running.url("mailpipe");
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (client, url, answers, down, stop, seq) =
                (client.clone(), url.clone(), answers.clone(), down.clone(), stop.clone(), seq.clone());
            tokio::spawn(async move {
                let signer = keys::signer("mailpipe");
                while !stop.load(Ordering::SeqCst) {
                    let (body, (name, sig)) =
                        keys::signed(&signer, "email.sent", seq.fetch_add(1, Ordering::SeqCst), Utc::now());
                    let was_down = down.load(Ordering::SeqCst);
                    let Ok(response) = client.post(&url).header(name, sig).body(body).send().await else { continue };
                    match response.status().as_u16() {
                        200 => {
                            let id =
                                response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
                            if was_down && down.load(Ordering::SeqCst) {
                                answers.ok_while_down.fetch_add(1, Ordering::SeqCst);
                            }
                            answers.ok.lock().unwrap().push(id);
                        }
                        503 => {
                            answers.unavailable.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        other => panic!("unexpected status {other}"),
                    }
                }
            })
        })
        .collect();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while answers.ok.lock().unwrap().len() < 200 {
        assert!(tokio::time::Instant::now() < deadline, "no traffic before the outage");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop();
    down.store(true, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while answers.unavailable.load(Ordering::SeqCst) < 20 {
        assert!(tokio::time::Instant::now() < deadline, "no 503 while the broker was down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let not_ready = client.get(format!("http://{}/readyz", running.admin)).send().await.unwrap();
    server.resume();
    down.store(false, Ordering::SeqCst);
    let accepted_before = answers.ok.lock().unwrap().len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while answers.ok.lock().unwrap().len() < accepted_before + 100 {
        assert!(tokio::time::Instant::now() < deadline, "the ingress did not recover by itself");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(answers.ok_while_down.load(Ordering::SeqCst), 0, "a 200 while the broker was down");
    assert_eq!(not_ready.status().as_u16(), 503, "not ready while the broker is down");

    let acknowledged: HashSet<String> = answers.ok.lock().unwrap().iter().cloned().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: HashSet<String> = recorder.requests().iter().map(|r| r.event_id()).collect();
        let missing = acknowledged.difference(&delivered).count();
        if missing == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} of {} acknowledged events never delivered",
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
