//! The streams listener: the bus's events as resumable streams a browser,
//! a script or a service opens over HTTP.
//!
//! - `GET /streams/events` answers `text/event-stream` (Server-Sent Events):
//!   `id:` is the event's cursor, `event:` its CloudEvent type, `data:` the
//!   structured CloudEvent on one line.
//! - `GET /streams/ws` is the same over WebSocket: one JSON text frame per
//!   event, carrying its cursor.
//! - `Last-Event-ID` (SSE), or `?after=CURSOR`, resumes exactly after that
//!   event, on any replica on the same bus; `?since=RFC3339` starts at a
//!   time; neither starts now. A cursor older than the bus retains gets one
//!   `resync` naming the oldest cursor there is, and reading goes on from it.
//! - Every client reads its own [`Bus::tail`](hookbridge_bus::Bus::tail)
//!   into a bounded buffer ([`pump`]): a client that leaves its buffer full
//!   for `slow_client_timeout` is cut off with a final `disconnect` event.
//!   A slow client only ever holds back its own reader, never the bus, the
//!   relay or another client.
//! - [`access`]: bearer tokens (`Authorization` or `?access_token=`), each
//!   allowed some event types.

pub mod access;
mod metrics;
mod pump;
mod sse;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hookbridge_bus::{Bus, TailFrom};
use hookbridge_event::EventPattern;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use access::StreamToken;
pub use metrics::StreamMetrics;

/// The `[streams]` settings.
#[derive(Debug, Clone)]
pub struct StreamsSettings {
    pub listen: SocketAddr,
    pub tokens: Vec<StreamToken>,
    /// Browser origins allowed to read streams (`*`: any).
    pub cors_origins: Vec<String>,
    /// How often an idle stream gets a heart-beat.
    pub heartbeat: Duration,
    /// Events read for a client and not yet written to it, at most.
    pub client_buffer: usize,
    /// A client whose buffer stays full this long (it takes nothing) is
    /// cut off as too slow.
    pub slow_client_timeout: Duration,
    /// Clients served at once; more get a 503.
    pub max_clients: usize,
}

impl StreamsSettings {
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
    pub const DEFAULT_CLIENT_BUFFER: usize = 1024;
    pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
    pub const DEFAULT_SLOW_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
}

#[derive(Debug)]
struct Shared {
    bus: Arc<dyn Bus>,
    settings: StreamsSettings,
    metrics: StreamMetrics,
    shutdown: CancellationToken,
    connected: AtomicUsize,
}

/// The streams routes, with CORS for the configured origins. Streams end
/// (with a `disconnect` saying `shutdown`) when `shutdown` fires.
pub fn router(
    bus: Arc<dyn Bus>,
    settings: StreamsSettings,
    metrics: StreamMetrics,
    shutdown: CancellationToken,
) -> Router {
    let cors = cors(&settings.cors_origins);
    let shared = Arc::new(Shared { bus, settings, metrics, shutdown, connected: AtomicUsize::new(0) });
    let router = Router::new()
        .route("/streams/events", axum::routing::get(sse::handle))
        .route("/streams/ws", axum::routing::get(ws::handle))
        .with_state(shared);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET])
            .allow_headers([header::AUTHORIZATION, header::HeaderName::from_static("last-event-id")])
            .max_age(Duration::from_secs(3600)),
    )
}

/// Closes one connection from inside a handler: a stream cut off as slow
/// whose client reads nothing cannot be ended by its body (the server
/// writes no more to a full socket), so its connection is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Kill(CancellationToken);

/// How long a killed connection may still take to write its final event.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown`, then waits for the
/// streams to end (each ends on `shutdown` by itself).
///
/// # Errors
/// Never; accept errors are logged and accepting goes on.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "the streams listener could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(stream, router.clone(), shutdown.clone()));
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn connection(stream: tokio::net::TcpStream, router: Router, shutdown: CancellationToken) {
    use tower::ServiceExt as _;
    let kill = CancellationToken::new();
    let service = {
        let kill = kill.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(Kill(kill.clone()));
            router.clone().oneshot(request)
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "a streams connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = kill.cancelled() => {
                // The final event goes out if the client reads within the grace.
                let _ = tokio::time::timeout(KILL_GRACE, conn.as_mut()).await;
                return;
            }
        }
    }
}

/// The query parameters both endpoints take.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamQuery {
    /// Comma-separated event patterns; default: all the token may read.
    types: Option<String>,
    after: Option<String>,
    since: Option<String>,
    access_token: Option<String>,
}

/// A refused stream request.
#[derive(Debug)]
pub(crate) struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.1 }).to_string();
        let mut response = (self.0, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Checks the request, opens its tail and starts pumping it, each item
/// written with `frame`: the client's frames, and the client.
async fn open(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    query: StreamQuery,
    protocol: &'static str,
    kill: Option<Kill>,
    frame: fn(&hookbridge_bus::Tailed) -> bytes::Bytes,
) -> Result<(pump::Pump, Connected), Refusal> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .or(query.access_token.as_deref());
    let Some(given) = given else {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "a stream token is required: Authorization: Bearer <token>, or ?access_token=<token>".into(),
        ));
    };
    let Some(token) = access::find(&shared.settings.tokens, given) else {
        return Err(Refusal(StatusCode::UNAUTHORIZED, "the stream token is not valid".into()));
    };
    let patterns = match query.types.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        None => token.events.clone(),
        Some(types) => {
            let mut patterns = Vec::new();
            for part in types.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let pattern = EventPattern::parse(part).map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))?;
                if !access::covers(&token.events, &pattern) {
                    return Err(Refusal(
                        StatusCode::FORBIDDEN,
                        format!("token `{}` may not read `{pattern}`", token.name),
                    ));
                }
                patterns.push(pattern);
            }
            patterns
        }
    };
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
    let from = if let Some(cursor) = last_event_id.map(str::to_owned).or(query.after.filter(|a| !a.is_empty())) {
        TailFrom::After(cursor)
    } else if let Some(since) = query.since.filter(|s| !s.is_empty()) {
        let time = chrono::DateTime::parse_from_rfc3339(&since).map_err(|e| {
            Refusal(StatusCode::BAD_REQUEST, format!("`since` is not an RFC 3339 time (2026-12-04T10:00:00Z): {e}"))
        })?;
        TailFrom::Time(time.to_utc())
    } else {
        TailFrom::Now
    };
    let start = match &from {
        TailFrom::Now => "now".to_owned(),
        TailFrom::After(cursor) => format!("after {}", cursor.chars().take(40).collect::<String>()),
        TailFrom::Time(time) => format!("since {time}"),
    };
    tracing::debug!(token = %token.name, protocol, %start, "stream opening");
    let client = Connected::new(shared, &token.name, protocol, kill)?;
    let tail = match shared.bus.tail(patterns, from).await {
        Ok(tail) => tail,
        Err(hookbridge_bus::Error::Invalid(message)) => return Err(Refusal(StatusCode::BAD_REQUEST, message)),
        Err(error) => {
            tracing::warn!(%error, "a stream could not be opened");
            return Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, format!("the bus cannot be read now: {error}")));
        }
    };
    tracing::debug!(token = %token.name, protocol, "stream opened");
    let pump = pump::spawn(
        tail,
        frame,
        shared.settings.client_buffer,
        shared.settings.slow_client_timeout,
        shared.shutdown.clone(),
        client.on_end(),
    );
    Ok((pump, client))
}

/// One connected client, counted while it lives; dropping it records why
/// its stream ended.
#[derive(Debug)]
pub(crate) struct Connected {
    shared: Arc<Shared>,
    token: String,
    protocol: &'static str,
    /// Set when the server ends the stream; `client` otherwise.
    reason: Arc<std::sync::OnceLock<&'static str>>,
    kill: Option<Kill>,
}

impl Connected {
    fn new(shared: &Arc<Shared>, token: &str, protocol: &'static str, kill: Option<Kill>) -> Result<Self, Refusal> {
        let before = shared.connected.fetch_add(1, Ordering::AcqRel);
        if before >= shared.settings.max_clients {
            shared.connected.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("this replica serves {} stream clients already", shared.settings.max_clients),
            ));
        }
        shared.metrics.clients.with_label_values(&[token, protocol]).inc();
        Ok(Self { shared: shared.clone(), token: token.to_owned(), protocol, reason: Arc::default(), kill })
    }

    /// What the stream's reader calls when the server ends the stream:
    /// counts the reason now (a stalled client's stream may never be polled
    /// again) and, for `slow`, closes the connection after a grace.
    pub(crate) fn on_end(&self) -> impl FnOnce(pump::End) + Send + 'static {
        let reason = self.reason.clone();
        let metrics = self.shared.metrics.clone();
        let kill = self.kill.clone();
        move |end| {
            if reason.set(end.reason()).is_ok() {
                metrics.disconnects.with_label_values(&[end.reason()]).inc();
            }
            if end == pump::End::Slow
                && let Some(kill) = kill
            {
                kill.0.cancel();
            }
        }
    }

    fn sent(&self, published_at: chrono::DateTime<chrono::Utc>) {
        let metrics = &self.shared.metrics;
        metrics.events.with_label_values(&[&self.token, self.protocol]).inc();
        let lag = (chrono::Utc::now() - published_at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
        metrics.lag.with_label_values(&[self.protocol]).observe(lag);
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.shared.connected.fetch_sub(1, Ordering::AcqRel);
        let metrics = &self.shared.metrics;
        metrics.clients.with_label_values(&[&self.token, self.protocol]).dec();
        if self.reason.get().is_none() {
            metrics.disconnects.with_label_values(&["client"]).inc();
        }
    }
}
