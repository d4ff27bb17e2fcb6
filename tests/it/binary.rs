//! The `hookbridge` binary's guarantees as a process: graceful shutdown,
//! `kill -9` losing nothing acknowledged, traces and logs.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use hookbridge_bus::embedded::{EmbeddedBus, EmbeddedOptions};
use hookbridge_testkit::keys;
use hookbridge_testkit::recorder::{Recorder, Reply};

use crate::support::{BIN, Running, send, sigterm, subscriber_toml, write_config, write_config_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_publishing_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let running = Running::start(&config);
    let url = running.url("mailpipe");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (client, url, acked, stop, seq) =
                (client.clone(), url.clone(), acked.clone(), stop.clone(), seq.clone());
            tokio::spawn(async move {
                let signer = keys::signer("mailpipe");
                let mut failures = 0;
                while !stop.load(Ordering::Relaxed) && failures < 3 {
                    let (body, (name, sig)) =
                        keys::signed(&signer, "email.sent", seq.fetch_add(1, Ordering::Relaxed), Utc::now());
                    match client.post(&url).header(name, sig).body(body).send().await {
                        Ok(r) if r.status().as_u16() == 200 => {
                            let answer: serde_json::Value = r.json().await.unwrap();
                            acked.lock().unwrap().push(answer["id"].as_str().unwrap().to_owned());
                        }
                        _ => failures += 1,
                    }
                }
            })
        })
        .collect();
    // Kill once a good number of publishes has been acknowledged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 500 {
        assert!(tokio::time::Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut running = running;
    running.child.kill().unwrap(); // SIGKILL
    running.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    let sent = seq.load(Ordering::Relaxed) as usize;

    let bus = EmbeddedBus::open(EmbeddedOptions::new(dir.path().join("bus"))).unwrap();
    let stored: HashSet<String> = bus.read_all().unwrap().into_iter().map(|e| e.id).collect();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged events lost: {lost:?}", lost.len(), acked.len());
    assert!(stored.len() <= sent);
    drop(bus);

    // The log reopens under the binary, and an acknowledged event is still a duplicate.
    let running = Running::start(&config);
    let any = acked.iter().next().unwrap().clone();
    let n: u64 = u64::from_str_radix(any.trim_start_matches("evt_"), 16).unwrap();
    let (body, (name, sig)) = keys::signed(&keys::signer("mailpipe"), "email.sent", n, Utc::now());
    let answer: serde_json::Value =
        client.post(running.url("mailpipe")).header(name, sig).body(body).send().await.unwrap().json().await.unwrap();
    assert_eq!((answer["status"].as_str(), answer["id"].as_str()), (Some("duplicate"), Some(any.as_str())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_relay_during_delivery_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    relay_kill_9(dir.path(), "embedded", "", 8).await;
}

/// On Kafka the killed process's group member lingers until its session
/// times out (6 s here), then the restarted one takes over its partitions
/// from the last committed offsets. On tansu: noida-db's engine expires a
/// member only when that member itself calls again, so a killed one would
/// hold its group forever there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_relay_on_kafka_loses_nothing() {
    let broker = hookbridge_brokers::Tansu::start();
    let dir = tempfile::tempdir().unwrap();
    let bus = format!(
        "[bus.kafka]\nbrokers = [\"{}\"]\npartitions = 1\nreplication_factor = 1\nmetadata_refresh = \"500ms\"\n\
         [bus.kafka.properties]\n\"session.timeout.ms\" = 6000\n",
        broker.address()
    );
    relay_kill_9(dir.path(), "kafka", &bus, 8).await;
}

/// Killed at its first delivery, before it ever committed: the restarted
/// relay joins while the dead member still holds the group (nothing needs
/// the group empty), takes the partitions once the session times out, and
/// reads them from where the group was born.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_relay_before_its_first_commit_on_kafka_loses_nothing() {
    let broker = hookbridge_brokers::Tansu::start();
    let dir = tempfile::tempdir().unwrap();
    let bus = format!(
        "[bus.kafka]\nbrokers = [\"{}\"]\npartitions = 2\nreplication_factor = 1\nmetadata_refresh = \"500ms\"\n\
         [bus.kafka.properties]\n\"session.timeout.ms\" = 6000\n",
        broker.address()
    );
    let recovery = relay_kill_9(dir.path(), "kafka", &bus, 1).await;
    eprintln!("kafka (tansu, session.timeout.ms 6000): everything delivered {recovery:?} after the restart");
}

/// A relay with a static group membership (`instance_id`), killed and
/// started again under the same id, takes its own place back at once: no
/// wait for the dead member's session (60 s here), no rebalance. On
/// noida-db, whose engine never expires a dead member, the same relay
/// without an `instance_id` delivers nothing more (56 of 60 events missing
/// after 45 s when tried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_static_member_relay_on_kafka_is_taken_over_at_once() {
    let broker = hookbridge_brokers::KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let bus = format!(
        "[bus.kafka]\nbrokers = [\"{}\"]\npartitions = 2\nreplication_factor = 1\nmetadata_refresh = \"500ms\"\n\
         instance_id = \"relay-0\"\n[bus.kafka.properties]\n\"session.timeout.ms\" = 60000\n",
        broker.address()
    );
    let recovery = relay_kill_9(dir.path(), "kafka", &bus, 4).await;
    assert!(recovery < Duration::from_secs(20), "the restarted static member waited: {recovery:?}");
    eprintln!("kafka (noida-db, static member, session 60 s): everything delivered {recovery:?} after the restart");
}

/// A relay stopped with SIGTERM (a rollout) leaves its groups before it
/// exits, so the relay that stays takes its partitions over at once, not
/// after the session timeout (30 s here; never on noida-db, which does not
/// expire a member that went away without leaving).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_a_kafka_relay_hands_its_partitions_over_at_once() {
    let broker = hookbridge_brokers::KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::spawn().await;
    let bus = format!(
        "[bus.kafka]\nbrokers = [\"{}\"]\npartitions = 4\nreplication_factor = 1\nmetadata_refresh = \"500ms\"\n\
         [bus.kafka.properties]\n\"session.timeout.ms\" = 30000\n",
        broker.address()
    );
    let extra = format!("{bus}{}", subscriber_toml("s", &recorder.url(), ""));
    let config = write_config_with(dir.path(), &extra);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("backend = \"embedded\"", "backend = \"kafka\"")).unwrap();
    let client = reqwest::Client::new();
    let leaving = Running::start(&config);
    let staying = Running::start(&config);
    let mut sent = HashSet::new();
    for seq in 0..20 {
        sent.insert(send(&client, &leaving, seq).await);
    }
    recorder.wait_for(20, Duration::from_secs(30)).await;

    sigterm(&leaving.child);
    let stopping = tokio::time::Instant::now();
    let (status, _leaving) = tokio::task::spawn_blocking(move || {
        let mut leaving = leaving;
        (leaving.child.wait().unwrap(), leaving)
    })
    .await
    .unwrap();
    assert!(status.success(), "{status}");
    let stopped_in = stopping.elapsed();
    for seq in 20..40 {
        sent.insert(send(&client, &staying, seq).await);
    }
    let handed_over = tokio::time::Instant::now();
    recorder.wait_for_ids(&sent, Duration::from_secs(25), "events (the relay that stayed)").await;
    eprintln!(
        "kafka: the leaving relay exited in {stopped_in:?}; the other delivered everything {:?} later",
        handed_over.elapsed()
    );
}

/// The same on NATS: what the killed relay had fetched comes again after
/// `ack_wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_relay_before_its_first_ack_on_nats_loses_nothing() {
    let server = hookbridge_brokers::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let bus = format!("[bus.nats]\nurl = \"{}\"\nack_wait = \"3s\"\n", server.url());
    let recovery = relay_kill_9(dir.path(), "nats", &bus, 1).await;
    assert!(recovery >= Duration::from_secs(2), "in-flight deliveries came back before ack_wait: {recovery:?}");
    eprintln!("nats (ack_wait 3s): everything delivered {recovery:?} after the restart");
}

/// Kills hookbridge (SIGKILL) with deliveries in flight once `kill_after`
/// have reached the subscriber, restarts it, and waits for every published
/// event to reach the subscriber; how long that took after the restart.
async fn relay_kill_9(dir: &Path, backend: &str, bus_toml: &str, kill_after: usize) -> Duration {
    let recorder = Recorder::spawn().await;
    recorder.answer(Reply { delay: Duration::from_millis(100), ..Reply::status(200) });
    let extra = format!("{bus_toml}{}", subscriber_toml("slow", &recorder.url(), "max_in_flight = 4"));
    let config = write_config_with(dir, &extra);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("backend = \"embedded\"", &format!("backend = \"{backend}\""))).unwrap();
    let client = reqwest::Client::new();
    let mut running = Running::start(&config);
    let mut sent = HashSet::new();
    for seq in 0..60 {
        sent.insert(send(&client, &running, seq).await);
    }
    recorder.wait_for(kill_after, Duration::from_secs(20)).await;
    running.child.kill().unwrap(); // SIGKILL, deliveries in flight
    running.child.wait().unwrap();
    assert!(recorder.requests().len() < sent.len(), "killed before the end");

    let _restarted = Running::start(&config);
    let restarted = tokio::time::Instant::now();
    recorder.wait_for_ids(&sent, Duration::from_secs(45), "events accepted before the kill").await;
    restarted.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_deliveries_in_flight_finish_and_settle() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::spawn().await;
    recorder.answer(Reply { delay: Duration::from_millis(1500), ..Reply::status(200) });
    let config = write_config_with(dir.path(), &subscriber_toml("slow", &recorder.url(), ""));
    let mut running = Running::start(&config);
    let id = send(&reqwest::Client::new(), &running, 1).await;
    recorder.wait_for(1, Duration::from_secs(10)).await;
    sigterm(&running.child);
    let status = tokio::task::spawn_blocking(move || {
        let status = running.child.wait().unwrap();
        (status, running)
    })
    .await
    .unwrap()
    .0;
    assert!(status.success(), "{status}");
    // The delivery was acknowledged before exit: a restart does not send it again.
    recorder.answer(Reply::status(200));
    let _restarted = Running::start(&config);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let ids: Vec<String> = recorder.requests().iter().map(|r| r.event_id()).collect();
    assert_eq!(ids, [id]);
}

/// Receives OTLP/HTTP JSON like a collector and keeps the spans.
async fn otlp_collector() -> (String, Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    let spans = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let export: serde_json::Value = serde_json::from_slice(&body).expect("OTLP JSON");
                for resource in export["resourceSpans"].as_array().into_iter().flatten() {
                    for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                        for span in scope["spans"].as_array().into_iter().flatten() {
                            let mut span = span.clone();
                            span["service"] = resource["resource"]["attributes"].clone();
                            kept.lock().unwrap().push(span);
                        }
                    }
                }
                axum::Json(serde_json::json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_in_the_propagated_trace() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::spawn().await;
    let (collector, spans) = otlp_collector().await;
    let extra = format!(
        "[tracing]\notlp_endpoint = \"{collector}\"\notlp_protocol = \"http/json\"\nservice_name = \"hookbridge-test\"\n{}",
        subscriber_toml("traced", &recorder.url(), "")
    );
    let config = write_config_with(dir.path(), &extra);
    let mut running = Running::start(&config);
    let incoming_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (body, (name, sig)) = keys::signed(&keys::signer("mailpipe"), "email.sent", 1, Utc::now());
    let response = reqwest::Client::new()
        .post(running.url("mailpipe"))
        .header(name, sig)
        .header("traceparent", format!("00-{incoming_trace}-00f067aa0ba902b7-01"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let delivery = recorder.wait_for(1, Duration::from_secs(10)).await.remove(0);
    // SIGTERM flushes the exporter.
    sigterm(&running.child);
    let status = tokio::task::spawn_blocking(move || running.child.wait().unwrap()).await.unwrap();
    assert!(status.success());

    let spans = spans.lock().unwrap().clone();
    let find = |name: &str| {
        spans.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no `{name}` span in {spans:#?}")).clone()
    };
    let receive = find("webhook receive");
    let deliver = find("webhook deliver");
    for span in [&receive, &deliver] {
        assert_eq!(span["traceId"].as_str().unwrap().to_lowercase(), incoming_trace, "{span}");
        assert!(span["service"].to_string().contains("hookbridge-test"));
    }
    assert_eq!(receive["parentSpanId"].as_str().unwrap().to_lowercase(), "00f067aa0ba902b7");
    assert_eq!(deliver["parentSpanId"], receive["spanId"], "the delivery is a child of the ingress span");
    assert_eq!(receive["kind"], 2, "server");
    assert_eq!(deliver["kind"], 3, "client");
    let delivered_span = delivery.header("traceparent").split('-').nth(2).unwrap().to_owned();
    assert_eq!(
        deliver["spanId"].as_str().unwrap().to_lowercase(),
        delivered_span,
        "the subscriber sees the exported span's id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_fields_and_never_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::spawn().await;
    let extra = format!(
        "[log]\nformat = \"json\"\nlevel = \"debug\"\n{}",
        subscriber_toml("logged", &recorder.url(), "secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"")
    );
    let config = write_config_with(dir.path(), &extra);
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first: serde_json::Value =
        serde_json::from_str(&rx.recv_timeout(Duration::from_secs(30)).unwrap()).expect("JSON lines");
    let mut lines = vec![first];
    let webhooks = loop {
        if let Some(addr) = lines.iter().find_map(|l| l["webhooks"].as_str()) {
            break addr.to_owned();
        }
        lines.push(serde_json::from_str(&rx.recv_timeout(Duration::from_secs(30)).unwrap()).expect("JSON lines"));
    };
    let client = reqwest::Client::new();
    let (body, (name, sig)) = keys::signed(&keys::signer("mailpipe"), "email.sent", 1, Utc::now());
    let url = format!("http://{webhooks}/webhooks/mailpipe");
    client.post(&url).header(name, &sig).body(body.clone()).send().await.unwrap();
    client.post(&url).header(name, "00".repeat(32)).body(body).send().await.unwrap();
    recorder.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&child);
    child.wait().unwrap();
    let mut text = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        text.push_str(&line);
        text.push('\n');
        lines.push(serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}")));
    }
    let rejected =
        lines.iter().find(|l| l["message"] == "webhook rejected: signature").expect("the rejection is logged");
    assert_eq!(
        (rejected["source"].as_str(), rejected["reason"].as_str()),
        (Some("mailpipe"), Some("invalid_signature"))
    );
    assert!(
        lines.iter().any(|l| l["message"] == "delivered" && l["subscriber"] == "logged" && l["event_id"].is_string()),
        "{text}"
    );
    let all = lines.iter().map(ToString::to_string).collect::<String>();
    for secret in
        [keys::MAILPIPE_SECRET, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", hookbridge_testkit::ADMIN_TOKEN, &sig, "Invoice #1"]
    {
        assert!(!all.contains(secret), "`{secret}` reached the logs");
    }
}

/// A replay whose consumer group is slow to get its first event — a Kafka
/// broker makes a new group's first member wait
/// `group.initial.rebalance.delay.ms`, 3 s by default — still delivers its
/// whole window, instead of ending as caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_on_kafka_whose_group_starts_slowly_delivers_its_window() {
    let broker = hookbridge_brokers::KafkaBroker::start_holding_fetches_with_first_join_delay(Duration::from_secs(3));
    let bus = crate::support::kafka_bus(&broker);
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::spawn().await;
    let config =
        crate::support::write_config_on(dir.path(), "kafka", &bus, &subscriber_toml("all", &recorder.url(), ""));
    let running = Running::start(&config);
    let client = reqwest::Client::new();
    let since = Utc::now() - chrono::Duration::seconds(1);
    let mut sent = HashSet::new();
    for seq in 0..10 {
        sent.insert(crate::support::send_event(&client, &running, "email.bounced", seq).await);
    }
    recorder.wait_for_ids(&sent, Duration::from_secs(30), "the live deliveries").await;

    let started = running
        .admin_json(
            &client,
            reqwest::Method::POST,
            "/admin/subscribers/all/replay",
            Some(serde_json::json!({ "since": since })),
        )
        .await;
    assert_eq!(started["total"], 10, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let progress = loop {
        let progress = running.admin_json(&client, reqwest::Method::GET, &format!("/admin/replays/{id}"), None).await;
        if progress["done"] == true {
            break progress;
        }
        assert!(tokio::time::Instant::now() < deadline, "the replay did not finish: {progress}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(progress["delivered"], 10, "{progress}");
    assert_eq!(recorder.requests().len(), 20, "each event once live and once replayed");
}
