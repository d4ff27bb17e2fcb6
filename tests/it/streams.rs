//! The streams listener of the `hookbridge` binary: SSE and WebSocket
//! streams resume exactly after `kill -9` on every backend; tokens,
//! patterns, cursors and CORS are enforced; a slow client is cut off while
//! a fast one keeps pace.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt as _;
use hookbridge_brokers::{KafkaBroker, NatsServer};
use serde_json::Value;
use tokio::io::AsyncReadExt as _;

use crate::support::{Running, kafka_bus, metric, nats_bus, send_event, write_config_on};

pub(crate) const TOKEN: &str = "stream-token-email-0123456789";
const MESSAGES_TOKEN: &str = "stream-token-messages-0123456789";

/// The `[streams]` table: one token for `email.*`, one for `message.*`.
pub(crate) fn streams_toml(listen: &str, extra: &str) -> String {
    format!(
        "[streams]\nlisten = \"{listen}\"\nheartbeat = \"1s\"\ncors_origins = [\"http://127.0.0.1:1\"]\n{extra}\n\
         [[streams.tokens]]\nname = \"email-dashboard\"\ntoken = \"{TOKEN}\"\nevents = [\"email.*\"]\n\
         [[streams.tokens]]\nname = \"messages\"\ntoken = \"{MESSAGES_TOKEN}\"\nevents = [\"message.*\"]\n"
    )
}

fn config(dir: &std::path::Path, backend: &str, bus: &str, streams: &str) -> std::path::PathBuf {
    write_config_on(dir, backend, bus, streams)
}

/// One SSE frame.
#[derive(Debug, Clone, Default)]
pub(crate) struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl Frame {
    /// The CloudEvent's id in `data`.
    pub fn event_id(&self) -> String {
        serde_json::from_str::<Value>(&self.data).unwrap()["id"].as_str().unwrap().to_owned()
    }
}

/// A Server-Sent Events reader over a streaming response.
pub(crate) struct Sse {
    response: reqwest::Response,
    buffer: String,
    pub heartbeats: usize,
}

impl Sse {
    pub async fn open(streams: SocketAddr, query: &str, token: Option<&str>, last_event_id: Option<&str>) -> Self {
        let response = request(streams, query, token, last_event_id).await;
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        Self::from(response)
    }

    pub fn from(response: reqwest::Response) -> Self {
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self { response, buffer: String::new(), heartbeats: 0 }
    }

    /// The next event frame (heart-beats and comments are counted and
    /// skipped); `None` when the stream ended.
    pub async fn next(&mut self, within: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut frame = Frame::default();
                let mut fields = false;
                for line in block.lines() {
                    if line == ": heartbeat" {
                        self.heartbeats += 1;
                    }
                    if let Some(v) = line.strip_prefix("id: ") {
                        frame.id = Some(v.to_owned());
                        fields = true;
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        frame.event = Some(v.to_owned());
                        fields = true;
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        frame.data.push_str(v);
                        fields = true;
                    }
                }
                if fields && frame.event.is_some() {
                    return Some(frame);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no SSE frame within {within:?}"))
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => return None,
            }
        }
    }

    /// Events until `n` are read (in order).
    pub async fn events(&mut self, n: usize) -> Vec<Frame> {
        let mut out = Vec::new();
        while out.len() < n {
            let frame = self.next(Duration::from_secs(20)).await.expect("the stream goes on");
            assert!(frame.id.is_some(), "an event frame has an id: {frame:?}");
            out.push(frame);
        }
        out
    }

    /// Asserts no event comes for `quiet` (heart-beats may).
    pub async fn assert_quiet(&mut self, quiet: Duration) {
        if let Ok(frame) = tokio::time::timeout(quiet, self.next(quiet * 2)).await {
            panic!("expected no event, got {frame:?}");
        }
    }
}

async fn request(
    streams: SocketAddr,
    query: &str,
    token: Option<&str>,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("http://{streams}/streams/events?{query}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.unwrap()
}

/// Reads WebSocket frames until `n` events came; their event ids and the
/// last cursor.
async fn ws_events(streams: SocketAddr, query: &str, n: usize) -> (Vec<String>, String) {
    let url = format!("ws://{streams}/streams/ws?{query}&access_token={TOKEN}");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("the WebSocket opens");
    let mut ids = Vec::new();
    let mut cursor = String::new();
    while ids.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a frame within 20s")
            .expect("the socket is open")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(frame["type"], "event", "{frame}");
            ids.push(frame["event"]["id"].as_str().unwrap().to_owned());
            cursor = frame["cursor"].as_str().unwrap().to_owned();
        }
    }
    let _ = socket.close(None).await;
    (ids, cursor)
}

/// Sends `n` email events and one `domain.verified` (not `email.*`): the
/// ids of the email events.
async fn send_emails(running: &Running, from: u64, n: u64) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for seq in from..from + n {
        let event = if seq % 2 == 0 { "email.sent" } else { "email.bounced" };
        ids.push(send_event(&client, running, event, seq).await);
        if seq == from {
            send_event(&client, running, "domain.verified", 10_000 + seq).await;
        }
    }
    ids
}

async fn resume_after_kill_9(backend: &str, bus: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), backend, bus, &streams_toml("127.0.0.1:0", ""));
    let running = Running::start(&config);
    let streams = running.streams.expect("the streams listener");
    let mut sse = Sse::open(streams, "types=email.*", Some(TOKEN), None).await;
    let first = send_emails(&running, 0, 6).await;
    let read = sse.events(2).await;
    let cursor = read[1].id.clone().unwrap();
    let seen: HashSet<String> = read.iter().map(Frame::event_id).collect();
    assert!(seen.iter().all(|id| first.contains(id)), "only email events");
    drop(sse);
    drop(running); // SIGKILL

    let running = Running::start(&config);
    let streams = running.streams.unwrap();
    let second = send_emails(&running, 100, 3).await;
    let expected: HashSet<String> = first.iter().chain(&second).filter(|id| !seen.contains(*id)).cloned().collect();

    let mut sse = Sse::open(streams, "types=email.*", Some(TOKEN), Some(&cursor)).await;
    let resumed = sse.events(expected.len()).await;
    let ids: Vec<String> = resumed.iter().map(Frame::event_id).collect();
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), expected, "no gap, nothing else");
    assert_eq!(ids.len(), expected.len(), "no duplicate");
    if backend != "kafka" {
        // One log: the order of publication.
        let order: Vec<&String> = first.iter().chain(&second).filter(|id| !seen.contains(*id)).collect();
        assert_eq!(ids.iter().collect::<Vec<_>>(), order);
    }
    for frame in &resumed {
        let ty = frame.event.as_deref().unwrap();
        assert!(ty == "email.delivered" || ty == "email.bounced", "{ty}");
        assert_eq!(serde_json::from_str::<Value>(&frame.data).unwrap()["type"], ty);
    }
    sse.assert_quiet(Duration::from_millis(1500)).await;
    assert!(sse.heartbeats >= 1, "an idle stream gets heart-beats");

    // The same cursor over WebSocket (`?after=`) reads the same events: in
    // the same order from one log; on Kafka each partition keeps its order
    // and the partitions interleave as their fetches come back.
    let (ws_ids, ws_cursor) = ws_events(streams, &format!("types=email.*&after={cursor}"), expected.len()).await;
    if backend == "kafka" {
        assert_eq!(ws_ids.len(), ids.len(), "no duplicate over WebSocket");
        assert_eq!(ws_ids.iter().collect::<HashSet<_>>(), ids.iter().collect::<HashSet<_>>());
    } else {
        assert_eq!(ws_ids, ids);
    }
    assert_eq!(Some(ws_cursor), resumed.last().unwrap().id.clone());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumes_exactly_after_kill_9_on_embedded() {
    resume_after_kill_9("embedded", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumes_exactly_after_kill_9_on_nats() {
    let server = NatsServer::start();
    resume_after_kill_9("nats", &nats_bus(&server)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumes_exactly_after_kill_9_on_kafka() {
    let broker = KafkaBroker::start();
    resume_after_kill_9("kafka", &kafka_bus(&broker)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_patterns_cursors_and_origins_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "embedded", "", &streams_toml("127.0.0.1:0", ""));
    let running = Running::start(&config);
    let streams = running.streams.unwrap();
    let status = |r: &reqwest::Response| r.status().as_u16();

    let none = request(streams, "types=email.*", None, None).await;
    assert_eq!((status(&none), none.headers()["www-authenticate"].to_str().unwrap()), (401, "Bearer"));
    let wrong = request(streams, "", Some("stream-token-email-012345678"), None).await;
    assert_eq!(status(&wrong), 401);
    let forbidden = request(streams, "types=email.*,message.created", Some(TOKEN), None).await;
    assert_eq!(status(&forbidden), 403);
    assert!(forbidden.text().await.unwrap().contains("message.created"));
    assert_eq!(status(&request(streams, "types=*", Some(TOKEN), None).await), 403);
    assert_eq!(status(&request(streams, "types=email.**", Some(TOKEN), None).await), 400);
    assert_eq!(status(&request(streams, "after=n12", Some(TOKEN), None).await), 400, "a NATS cursor on embedded");
    assert_eq!(status(&request(streams, "", Some(TOKEN), Some("garbage")).await), 400);
    assert_eq!(status(&request(streams, "since=yesterday", Some(TOKEN), None).await), 400);
    let ws =
        tokio_tungstenite::connect_async(format!("ws://{streams}/streams/ws?types=message.*&access_token={TOKEN}"))
            .await;
    assert!(ws.is_err(), "a WebSocket for a forbidden type is refused before the upgrade");

    // ?access_token= (EventSource cannot set headers); no `types`: what the token may read.
    let client = reqwest::Client::new();
    let by_query = client.get(format!("http://{streams}/streams/events?access_token={TOKEN}")).send().await.unwrap();
    let mut sse = Sse::from(by_query);
    let mut messages = Sse::open(streams, "", Some(MESSAGES_TOKEN), None).await;
    let sent = send_emails(&running, 0, 2).await;
    let got: Vec<String> = sse.events(2).await.iter().map(Frame::event_id).collect();
    assert_eq!(got, sent, "only the token's types, in order");
    messages.assert_quiet(Duration::from_millis(500)).await;

    // `since`: from a time, the events published after it.
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let later = send_emails(&running, 50, 1).await;
    let mut from_time = Sse::open(streams, &format!("since={}", since.replace('+', "%2B")), Some(TOKEN), None).await;
    assert_eq!(from_time.events(1).await[0].event_id(), later[0]);

    // CORS: the configured origin is allowed, another is not.
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, format!("http://{streams}/streams/events"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization,last-event-id")
            .send()
    };
    let allowed = preflight("http://127.0.0.1:1").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "http://127.0.0.1:1");
    let other = preflight("http://127.0.0.1:2").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off_while_a_fast_one_keeps_pace() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "embedded",
        "",
        &streams_toml("127.0.0.1:0", "client_buffer = 16\nslow_client_timeout = \"1s\""),
    );
    let running = Running::start(&config);
    let streams = running.streams.unwrap();

    // The slow client: a socket with a small receive buffer that reads nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(streams).await.unwrap();
    let request = format!(
        "GET /streams/events HTTP/1.1\r\nHost: {streams}\r\nAuthorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut slow, request.as_bytes()).await.unwrap();
    let mut fast = Sse::open(streams, "", Some(TOKEN), None).await;
    // Wait for both to be counted before publishing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(running.admin, "hookbridge_stream_clients{").await < 2.0 {
        assert!(tokio::time::Instant::now() < deadline, "both clients connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The fast client reads everything, as it comes.
    let (tx, mut received_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(frame) = fast.next(Duration::from_secs(120)).await {
            if tx.send(frame.event_id()).is_err() {
                break;
            }
        }
    });
    // Publish in rounds until the slow client's buffer (and the kernel's
    // socket buffers in front of it) overflowed.
    let running = std::sync::Arc::new(running);
    let mut sent = HashSet::new();
    let mut round = 0u64;
    while metric(running.admin, "hookbridge_stream_disconnects_total{reason=\"slow\"}").await < 1.0 {
        assert!(round < 40, "the slow client was never cut off ({} events)", sent.len());
        let mut senders = Vec::new();
        for worker in 0..8u64 {
            let running = running.clone();
            senders.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut ids = Vec::new();
                for i in 0..50 {
                    ids.push(send_event(&client, &running, "email.sent", round * 400 + worker * 50 + i).await);
                }
                ids
            }));
        }
        for sender in senders {
            sent.extend(sender.await.unwrap());
        }
        round += 1;
    }
    // Cut off, it starts reading again within the grace: what it finally
    // reads ends with the reason, then the connection closes.
    let slow_reader = tokio::spawn(async move {
        let mut everything = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut everything))
            .await
            .expect("the slow client's connection is closed")
            .unwrap();
        everything
    });
    let mut received = HashSet::new();
    while received.len() < sent.len() {
        let id = tokio::time::timeout(Duration::from_secs(30), received_rx.recv())
            .await
            .expect("the fast client keeps pace")
            .expect("the fast stream goes on");
        assert!(received.insert(id), "no duplicate");
    }
    assert_eq!(received, sent, "the fast client got everything");
    assert_eq!(metric(running.admin, "hookbridge_stream_disconnects_total{reason=\"slow\"}").await, 1.0);
    // The slow one's connection is dropped after a short grace; the fast one stays.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(running.admin, "hookbridge_stream_clients{").await != 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "the slow client's connection was not closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let everything = slow_reader.await.unwrap();
    let text = String::from_utf8_lossy(&everything);
    let at = text.rfind("event: disconnect\ndata: ").expect("a final disconnect event");
    assert!(text[at..].contains("\"reason\":\"slow\""), "{}", &text[at..]);
    assert!(!text[at..].contains("id: "), "nothing after it: {}", &text[at..]);
}
