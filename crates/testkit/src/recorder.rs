//! A recording HTTP subscriber on `127.0.0.1:0`: it keeps every request and
//! answers with statuses the test scripts.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;
use tokio::time::Instant;

/// One answer of the recorder.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// The response body.
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self { status, retry_after: None, delay: Duration::ZERO, body: String::new() }
    }

    /// `status` with `body`.
    pub fn with_body(status: u16, body: &str) -> Self {
        Self { body: body.to_owned(), ..Self::status(status) }
    }
}

/// A request the recorder received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("delivery body is JSON")
    }

    /// The delivered event's id.
    pub fn event_id(&self) -> String {
        self.json()["id"].as_str().unwrap_or_default().to_owned()
    }
}

#[derive(Debug, Default)]
struct Inner {
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Reply>>,
    /// Scripts of single events, by `webhook-id`: used before `script`.
    by_event: Mutex<std::collections::HashMap<String, VecDeque<Reply>>>,
    default: Mutex<Option<Reply>>,
    arrived: Notify,
    /// Requests not yet answered, and the most there were at once.
    open: AtomicUsize,
    peak: AtomicUsize,
}

#[derive(Debug, Clone)]
pub struct Recorder {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Recorder {
    /// Starts a recorder answering 200 unless scripted otherwise.
    pub async fn spawn() -> Self {
        let inner = Arc::new(Inner::default());
        let app = axum::Router::new().fallback(record).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind recorder");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// The next requests get these answers, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.script.lock().unwrap().extend(replies);
    }

    /// The next requests delivering event `id` (its `webhook-id`) get these
    /// answers, in order, whatever else arrives meanwhile.
    pub fn script_event(&self, id: &str, replies: impl IntoIterator<Item = Reply>) {
        self.inner.by_event.lock().unwrap().entry(id.to_owned()).or_default().extend(replies);
    }

    /// Answer once the script is used up (200 when never set).
    pub fn answer(&self, reply: Reply) {
        *self.inner.default.lock().unwrap() = Some(reply);
    }

    /// The most requests that were being answered at once.
    pub fn peak_in_flight(&self) -> usize {
        self.inner.peak.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived, then returns them all.
    ///
    /// # Panics
    /// When they do not arrive within `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + within;
        loop {
            let arrived = self.inner.arrived.notified();
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("expected {n} requests within {within:?}, got {}", self.requests().len());
            }
        }
    }

    /// Waits until `done` holds for the requests received, then returns them.
    ///
    /// # Panics
    /// When it does not within `within`, saying `what` was awaited.
    pub async fn wait_until(&self, done: impl Fn(&[Recorded]) -> bool, within: Duration, what: &str) -> Vec<Recorded> {
        let deadline = Instant::now() + within;
        loop {
            let arrived = self.inner.arrived.notified();
            let requests = self.requests();
            if done(&requests) {
                return requests;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let ids: Vec<_> = self.requests().iter().map(Recorded::event_id).collect();
                panic!("{what}: not within {within:?}; requests so far: {ids:?}");
            }
        }
    }

    /// Waits until every event in `ids` was delivered at least once.
    ///
    /// # Panics
    /// When some are still missing after `within`, saying how many of
    /// `what` (e.g. "events accepted while the relay was away").
    pub async fn wait_for_ids(&self, ids: &std::collections::HashSet<String>, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        loop {
            let arrived = self.inner.arrived.notified();
            let received: std::collections::HashSet<String> = self.requests().iter().map(Recorded::event_id).collect();
            let missing = ids.difference(&received).count();
            if missing == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("{missing} of {} {what} never delivered within {within:?}", ids.len());
            }
        }
    }
}

async fn record(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let reply = {
        let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let for_event = inner.by_event.lock().unwrap().get_mut(id).and_then(VecDeque::pop_front);
        let scripted = for_event.or_else(|| inner.script.lock().unwrap().pop_front());
        scripted.or_else(|| inner.default.lock().unwrap().clone()).unwrap_or(Reply::status(200))
    };
    let open = inner.open.fetch_add(1, Ordering::SeqCst) + 1;
    inner.peak.fetch_max(open, Ordering::SeqCst);
    inner.requests.lock().unwrap().push(Recorded { headers, body, at: Instant::now() });
    inner.arrived.notify_waiters();
    tokio::time::sleep(reply.delay).await;
    inner.open.fetch_sub(1, Ordering::SeqCst);
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    if let Some(after) = reply.retry_after {
        response.headers_mut().insert("retry-after", HeaderValue::from_str(&after).unwrap());
    }
    response
}
