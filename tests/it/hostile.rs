//! Hostile traffic at the webhook listener of the real binary: connections
//! that stall in their head or body, oversized headers, more connections and
//! requests than the limits, while a well-formed webhook is still answered.

use std::path::Path;
use std::time::{Duration, Instant};

use hookbridge_testkit::config_toml;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Running, send};

/// The test config with `limits` in `[ingress]` and `extra` at the end.
fn write_limited_config(dir: &Path, limits: &str, extra: &str) -> std::path::PathBuf {
    let base = config_toml(&dir.join("bus"));
    let base = base.replacen("publish_timeout = \"2s\"\n", &format!("publish_timeout = \"2s\"\n{limits}\n"), 1);
    assert!(base.contains(limits), "the limits went into [ingress]");
    let path = dir.join("hookbridge.toml");
    std::fs::write(&path, format!("{base}token = \"{}\"\n{extra}", hookbridge_testkit::ADMIN_TOKEN)).unwrap();
    path
}

/// Whether the server closed `stream` (end of stream or reset), without
/// waiting.
fn closed_by_server(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 512];
    match stream.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// Waits until every stream in `streams` is closed by the server.
async fn all_closed_within(streams: &[TcpStream], deadline: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let open = streams.iter().filter(|s| !closed_by_server(s)).count();
        if open == 0 {
            return start.elapsed();
        }
        assert!(start.elapsed() < deadline, "{open} of {} connections still open after {deadline:?}", streams.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn open_many(addr: std::net::SocketAddr, n: usize, first_bytes: &[u8]) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(addr).await.expect("connects");
        if !first_bytes.is_empty() {
            stream.write_all(first_bytes).await.unwrap();
        }
        streams.push(stream);
    }
    streams
}

/// A signed webhook, answered within `within`.
async fn webhook_answered(client: &reqwest::Client, running: &Running, seq: u64, within: Duration) {
    let started = Instant::now();
    tokio::time::timeout(within, send(client, running, seq)).await.expect("a well-formed webhook is answered in time");
    assert!(started.elapsed() < within);
}

/// Everything the server writes on `stream` until it closes, within `within`.
async fn read_answer(stream: &mut TcpStream, within: Duration, what: &str) -> String {
    let mut answer = String::new();
    tokio::time::timeout(within, stream.read_to_string(&mut answer)).await.expect(what).unwrap();
    answer
}

/// Waits until the listener holds `n` open connections (its gauge).
async fn connections_open(client: &reqwest::Client, running: &Running, n: f64) {
    let start = Instant::now();
    while metric(client, running, "hookbridge_ingress_connections ").await < n {
        assert!(start.elapsed() < Duration::from_secs(5), "{n} connections were not accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metric(client: &reqwest::Client, running: &Running, line_start: &str) -> f64 {
    let text = client.get(format!("http://{}/metrics", running.admin)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric line starting {line_start}"))
}

#[tokio::test]
async fn stalled_heads_are_cut_idle_connections_last_longer_and_webhooks_still_pass() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_limited_config(dir.path(), "header_read_timeout = \"1s\"\nidle_timeout = \"4s\"", "");
    let running = Running::start(&config);
    // A connection per request: the first webhook's keep-alive connection
    // reaches the idle timeout about when the second is sent, and a POST on
    // a connection the server is closing is reset, which is not what this
    // test is about.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();

    // Half a request line, then nothing: the slow-loris of the report.
    let stalled = open_many(running.webhooks, 500, b"POST /webhooks/mailpipe HT").await;
    let idle = open_many(running.webhooks, 20, b"").await;
    webhook_answered(&client, &running, 1, Duration::from_secs(1)).await;

    let took = all_closed_within(&stalled, Duration::from_secs(4)).await;
    assert!(idle.iter().all(|s| !closed_by_server(s)), "idle connections outlive the header timeout");
    let took_idle = all_closed_within(&idle, Duration::from_secs(6)).await;
    assert!(took + took_idle >= Duration::from_secs(2), "the idle timeout, not the header one, closed them");
    webhook_answered(&client, &running, 2, Duration::from_secs(1)).await;
    assert!(
        metric(&client, &running, "hookbridge_ingress_connections_closed_total{reason=\"header_timeout\"}").await
            >= 500.0
    );
    assert!(metric(&client, &running, "hookbridge_ingress_connections_closed_total{reason=\"idle\"}").await >= 20.0);
}

#[tokio::test]
async fn a_header_over_the_limit_is_answered_431_and_nothing_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_limited_config(dir.path(), "max_header_bytes = 16384", "");
    let running = Running::start(&config);
    let client = reqwest::Client::new();
    let (body, (name, sig)) = hookbridge_testkit::keys::signed(
        &hookbridge_testkit::keys::signer("mailpipe"),
        "email.sent",
        1,
        chrono::Utc::now(),
    );
    let response = client
        .post(running.url("mailpipe"))
        .header(name, sig)
        .header("x-padding", "a".repeat(200 * 1024))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 431);
    let accepted = "hookbridge_ingress_requests_total{outcome=\"accepted\",reason=\"none\",source=\"mailpipe\"}";
    assert_eq!(metric(&client, &running, accepted).await, 0.0);
    webhook_answered(&client, &running, 2, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_503_until_the_stalled_ones_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_limited_config(dir.path(), "max_connections = 50\nheader_read_timeout = \"1s\"", "");
    let running = Running::start(&config);

    let held = open_many(running.webhooks, 50, b"POST /webhooks/mailpipe HTTP/1.1\r\n").await;
    let client = reqwest::Client::new();
    connections_open(&client, &running, 50.0).await;
    let mut over = TcpStream::connect(running.webhooks).await.unwrap();
    let answer = read_answer(&mut over, Duration::from_secs(2), "refused at once").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");

    all_closed_within(&held, Duration::from_secs(4)).await;
    webhook_answered(&client, &running, 1, Duration::from_secs(1)).await;
    assert!(
        metric(&client, &running, "hookbridge_ingress_connections_refused_total{reason=\"max_connections\"}").await
            >= 1.0
    );
}

#[tokio::test]
async fn webhooks_beyond_max_in_flight_are_shed_503_and_slow_bodies_get_408() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_limited_config(dir.path(), "max_in_flight = 4\nbody_read_timeout = \"2s\"", "");
    let running = Running::start(&config);
    let client = reqwest::Client::new();

    // Four requests whose bodies never finish hold every slot.
    let head = format!(
        "POST /webhooks/mailpipe HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"a\"",
        running.webhooks
    );
    let mut slow = open_many(running.webhooks, 4, head.as_bytes()).await;
    // The four are in flight once the fifth connection (the metrics
    // scrape's) sees their permits taken: wait for the slots to fill.
    let started = Instant::now();
    while metric(&client, &running, "hookbridge_ingress_connections ").await < 4.0 {
        assert!(started.elapsed() < Duration::from_secs(5), "the slow requests were not accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (body, (name, sig)) = hookbridge_testkit::keys::signed(
        &hookbridge_testkit::keys::signer("mailpipe"),
        "email.sent",
        1,
        chrono::Utc::now(),
    );
    let started = Instant::now();
    let response = client.post(running.url("mailpipe")).header(name, sig).body(body).send().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "shed at once, not queued");
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "overloaded");

    for stream in &mut slow {
        let answer = read_answer(stream, Duration::from_secs(4), "the slow body is answered").await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("slow_body"), "{answer}");
    }
    webhook_answered(&client, &running, 2, Duration::from_secs(1)).await;
    assert_eq!(
        metric(
            &client,
            &running,
            "hookbridge_ingress_requests_total{outcome=\"overloaded\",reason=\"overloaded\",source=\"mailpipe\"}"
        )
        .await,
        1.0
    );
}
