//! Recording subscribers: HTTP servers on loopback that verify every
//! delivery's Standard Webhooks signature, record it, and answer as their
//! current mode says.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hookbridge_event::EventPattern;

/// How a subscriber behaves for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers 200.
    Ok,
    /// Answers this 5xx.
    Fails(u16),
    /// Answers 410 Gone (the relay disables the subscriber).
    Gone,
    /// Never answers within the relay's timeout.
    Hangs,
    /// Answers 200 after up to 800 ms.
    Slow,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok => f.write_str("answers 200"),
            Self::Fails(status) => write!(f, "answers {status}"),
            Self::Gone => f.write_str("answers 410"),
            Self::Hangs => f.write_str("times out"),
            Self::Slow => f.write_str("is slow"),
        }
    }
}

/// One request a subscriber received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: DateTime<Utc>,
    /// The CloudEvent's `id` (empty if the body was not one).
    pub event_id: String,
    pub webhook_id: String,
    /// The body, parsed (`Null` if it was not JSON).
    pub body: serde_json::Value,
    pub signature_ok: bool,
    /// Answered 2xx: the subscriber has it.
    pub taken: bool,
}

#[derive(Debug)]
pub struct Subscriber {
    pub name: &'static str,
    /// `events` as configured.
    pub events: Vec<&'static str>,
    /// `providers` as configured (empty: every provider).
    pub providers: Vec<&'static str>,
    pub secret: String,
    pub url: String,
    /// `ordering = "subject"`.
    pub ordered: bool,
    mode: Mutex<Mode>,
    log: Mutex<Vec<Received>>,
}

impl Subscriber {
    /// Starts one on a free loopback port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn spawn(name: &'static str, events: Vec<&'static str>, providers: Vec<&'static str>) -> Arc<Self> {
        Self::spawn_with(name, events, providers, false).await
    }

    /// One with `ordering = "subject"`.
    pub async fn spawn_ordered(name: &'static str, events: Vec<&'static str>) -> Arc<Self> {
        Self::spawn_with(name, events, Vec::new(), true).await
    }

    async fn spawn_with(
        name: &'static str,
        events: Vec<&'static str>,
        providers: Vec<&'static str>,
        ordered: bool,
    ) -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let url = format!("http://{}/hook", listener.local_addr().expect("bound"));
        // A fixed secret per name: runs of one seed sign alike.
        let mut key = [0u8; 32];
        for (i, b) in format!("hookbridge-chaos-{name}").bytes().cycle().take(32).enumerate() {
            key[i] = b;
        }
        let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key));
        let subscriber = Arc::new(Self {
            name,
            events,
            providers,
            secret,
            url,
            ordered,
            mode: Mutex::new(Mode::Ok),
            log: Mutex::default(),
        });
        let app = axum::Router::new().fallback(receive).with_state(subscriber.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        subscriber
    }

    /// Records a delivery as if received, for the checker's own tests.
    #[cfg(test)]
    pub fn record(&self, received: Received) {
        self.log.lock().expect("log lock").push(received);
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().expect("mode lock") = mode;
    }

    pub fn mode(&self) -> Mode {
        *self.mode.lock().expect("mode lock")
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().expect("log lock").clone()
    }

    /// Whether an event of `ty` from `provider` is this subscriber's.
    pub fn matches(&self, ty: &str, provider: &str) -> bool {
        let typed = self.events.iter().any(|p| EventPattern::parse(p).is_ok_and(|p| p.matches(ty)));
        typed && (self.providers.is_empty() || self.providers.contains(&provider))
    }

    /// The `[[relay.subscribers]]` entry for this subscriber.
    pub fn toml(&self) -> String {
        let list = |items: &[&str]| items.iter().map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(", ");
        let mut entry = format!(
            "[[relay.subscribers]]\nname = \"{}\"\nurl = \"{}\"\nevents = [{}]\nsecret = \"{}\"\ntimeout = \"1s\"\n\
             retry_schedule = [\"200ms\", \"500ms\", \"1s\", \"2s\", \"3s\"]\ncircuit_probe_interval = \"1s\"\n",
            self.name,
            self.url,
            list(&self.events),
            self.secret
        );
        if !self.providers.is_empty() {
            entry.push_str(&format!("providers = [{}]\n", list(&self.providers)));
        }
        if self.ordered {
            entry.push_str("ordering = \"subject\"\n");
        }
        entry
    }
}

async fn receive(State(subscriber): State<Arc<Subscriber>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signature_ok = standardwebhooks::Webhook::new(&subscriber.secret)
        .ok()
        .is_some_and(|webhook| webhook.verify(&body, &headers).is_ok());
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let record = |taken: bool| Received {
        at: Utc::now(),
        event_id: value["id"].as_str().unwrap_or_default().to_owned(),
        webhook_id: header("webhook-id"),
        body: value.clone(),
        signature_ok,
        taken,
    };
    let mode = subscriber.mode();
    let (status, taken) = match mode {
        Mode::Ok => (StatusCode::OK, true),
        Mode::Fails(status) => (StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), false),
        Mode::Gone => (StatusCode::GONE, false),
        Mode::Hangs => {
            // Recorded as refused: the relay gives up before any answer.
            subscriber.log.lock().expect("log lock").push(record(false));
            tokio::time::sleep(Duration::from_secs(3)).await;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        Mode::Slow => {
            let wait = u64::from(body.len() as u32 % 800);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            (StatusCode::OK, true)
        }
    };
    subscriber.log.lock().expect("log lock").push(record(taken && signature_ok));
    if signature_ok { status } else { StatusCode::UNAUTHORIZED }
}
