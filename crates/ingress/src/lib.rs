//! The webhook ingress: `POST /webhooks/{source}` verifies the signature on
//! the raw bytes, normalizes the body into a CloudEvent, publishes it and
//! answers only after the bus acknowledged it.
//!
//! | outcome | status |
//! |---|---|
//! | published, or a duplicate of a held event | 200 `{"status": "accepted" \| "duplicate", "id": …}` |
//! | missing, malformed or wrong signature; stale timestamp | 401 |
//! | correctly signed but not a valid provider payload | 400 |
//! | unknown source | 404 |
//! | body over `max_body_bytes` | 413 |
//! | the bus cannot acknowledge in time | 503 (nothing was acknowledged) |
//!
//! `/healthz` and `/readyz` are served by [`admin_router`] on a separate
//! listener. [`run`] serves both until the shutdown token fires, then stops
//! accepting, lets requests in flight finish and returns.

mod error;
mod metrics;
pub mod serve;
mod settings;
mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use hookbridge_bus::Publisher;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::IngressError;
pub use settings::{IngressSettings, Source};

/// What the webhook handler needs.
#[derive(Debug)]
pub struct Ingress {
    sources: HashMap<String, Source>,
    publisher: Arc<dyn Publisher>,
    publish_timeout: Duration,
    max_body_bytes: usize,
    body_read_timeout: Duration,
    in_flight: tokio::sync::Semaphore,
    listener: serve::ListenerSettings,
    metrics: metrics::IngressMetrics,
    listener_metrics: serve::ListenerMetrics,
    bus_metrics: hookbridge_bus::metrics::BusMetrics,
}

impl Ingress {
    /// The ingress of `settings` publishing to `publisher`, with its metrics
    /// (and the bus's) registered on `registry`.
    ///
    /// # Errors
    /// When the metrics are already registered there.
    pub fn new(
        settings: &IngressSettings,
        publisher: Arc<dyn Publisher>,
        registry: &Registry,
    ) -> prometheus::Result<Self> {
        let sources: Vec<(&str, &str)> =
            settings.sources.iter().map(|s| (s.name.as_str(), s.provider.static_name())).collect();
        Ok(Self {
            sources: settings.sources.iter().map(|s| (s.name.clone(), s.clone())).collect(),
            metrics: metrics::IngressMetrics::register(registry, &sources)?,
            listener_metrics: serve::ListenerMetrics::register(registry, "ingress")?,
            bus_metrics: hookbridge_bus::metrics::BusMetrics::register(registry, publisher.backend())?,
            publisher,
            publish_timeout: settings.publish_timeout,
            max_body_bytes: settings.max_body_bytes,
            body_read_timeout: settings.body_read_timeout,
            in_flight: tokio::sync::Semaphore::new(settings.max_in_flight),
            listener: settings.listener.clone(),
        })
    }

    /// The webhook router (the body's limits are applied by the handler).
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/webhooks/{source}", post(webhook::receive).head(webhook::probe))
            .layer(DefaultBodyLimit::disable())
            .with_state(self)
    }
}

/// Health and readiness, for the admin listener.
#[derive(Debug)]
pub struct Health {
    publisher: Arc<dyn Publisher>,
    draining: AtomicBool,
}

impl Health {
    pub fn new(publisher: Arc<dyn Publisher>) -> Arc<Self> {
        Arc::new(Self { publisher, draining: AtomicBool::new(false) })
    }

    /// Readiness drops first on shutdown, so load balancers stop sending.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}

/// `GET /healthz` (the process is alive), `GET /readyz` (the bus can take
/// events and the process is not shutting down) and `GET /metrics`
/// (Prometheus text format of `registry`).
pub fn admin_router(health: Arc<Health>, registry: Registry) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(health)
        .route("/metrics", get(move || async move { render(&registry) }))
}

fn render(registry: &Registry) -> axum::response::Response {
    let mut body = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut body) {
        Ok(()) => ([(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn ready(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if health.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".to_owned());
    }
    match health.publisher.check_ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(error) => {
            tracing::warn!(%error, backend = health.publisher.backend(), "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "bus unavailable\n".to_owned())
        }
    }
}

/// Serves the webhook router until `shutdown` fires; then readiness drops,
/// new connections are refused, and requests in flight finish (they are
/// answered after their publish settles).
///
/// # Errors
/// When the listener fails.
pub async fn serve_webhooks(
    ingress: Arc<Ingress>,
    health: Arc<Health>,
    listener: TcpListener,
    tls: Option<Arc<serve::TlsReloader>>,
    shutdown: CancellationToken,
) {
    let stop = CancellationToken::new();
    let draining = stop.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        health.start_draining();
        draining.cancel();
    });
    let (settings, metrics) = (ingress.listener.clone(), ingress.listener_metrics.clone());
    serve::serve(listener, ingress.router(), settings, tls, Some(metrics), stop).await;
}

/// Serves the webhook router and `admin` (health, readiness and whatever
/// else the caller merged in) until `shutdown` fires and the webhooks have
/// drained. The admin listener outlives the webhook one: probes keep
/// answering (not ready) while requests drain.
///
/// # Errors
/// When a listener fails.
pub async fn run(
    ingress: Arc<Ingress>,
    health: Arc<Health>,
    listener: TcpListener,
    admin_listener: TcpListener,
    admin: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let admin_stop = CancellationToken::new();
    let admin_task =
        tokio::spawn(serve_admin(admin_listener, admin, serve::ListenerSettings::admin(), None, admin_stop.clone()));
    serve_webhooks(ingress, health, listener, None, shutdown).await;
    admin_stop.cancel();
    admin_task.await.map_err(std::io::Error::other)?;
    Ok(())
}

/// Serves the admin listener (health, readiness, metrics and the admin API
/// the caller merged in) until `shutdown` fires.
pub async fn serve_admin(
    listener: TcpListener,
    admin: Router,
    settings: serve::ListenerSettings,
    tls: Option<Arc<serve::TlsReloader>>,
    shutdown: CancellationToken,
) {
    serve::serve(listener, admin, settings, tls, None, shutdown).await;
}
