use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use chrono::Utc;
use hookbridge_bus::PublishOutcome;
use hookbridge_event::trace::{self, SpanKind, TraceContext};
use serde::Serialize;

use crate::serve::Peer;
use crate::{Ingress, IngressError};

/// The answer to an accepted webhook: one event's id, or (providers that
/// batch) every event's.
#[derive(Debug, Serialize)]
pub(crate) struct Accepted {
    status: &'static str,
    /// The metric's outcome and reason: the status and `none`, or
    /// `accepted` and the status of an SNS handshake (nothing published).
    #[serde(skip)]
    counted_as: (&'static str, &'static str),
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<BatchItem>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct BatchItem {
    id: String,
    status: &'static str,
}

/// Publishes at once per batched request, at most.
const BATCH_PUBLISH_CONCURRENCY: usize = 32;

/// `POST /webhooks/{source}`: verify on the raw bytes, normalize, publish,
/// then answer; every answer is counted.
pub(crate) async fn receive(
    State(ingress): State<Arc<Ingress>>,
    Path(name): Path<String>,
    peer: Option<Extension<Peer>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, IngressError> {
    let started = Instant::now();
    // Continue the caller's trace when it sent one, or start a new one.
    let parent = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceContext::parse);
    let mut span = trace::start("webhook receive", SpanKind::Server, parent);
    let request = Incoming { peer: peer.map(|Extension(Peer(p))| p.ip()), query: uri.query(), headers: &headers };
    let result = handle(&ingress, &name, request, body, span.context()).await;
    let source = if ingress.sources.contains_key(&name) { name.as_str() } else { crate::metrics::UNKNOWN_SOURCE };
    let (outcome, reason) = match &result {
        Ok(accepted) => accepted.counted_as,
        Err(error) => (error.outcome(), error.code()),
    };
    ingress.metrics.request(source, outcome, reason, started.elapsed());
    span.set_attribute("hookbridge.source", source.to_owned());
    span.set_attribute("hookbridge.outcome", outcome.to_owned());
    match &result {
        Ok(accepted) => {
            if let Some(id) = &accepted.id {
                span.set_attribute("hookbridge.event_id", id.clone());
            }
            span.end(None);
        }
        Err(error) => span.end(Some(error.code().to_owned())),
    }
    result.map(Json)
}

/// Reads the body within the limits: its size (a too-large
/// `Content-Length` is refused before reading) and its time.
async fn read_body(ingress: &Ingress, headers: &HeaderMap, body: Body) -> Result<Bytes, IngressError> {
    let limit = ingress.max_body_bytes;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(IngressError::TooLarge(limit));
    }
    match tokio::time::timeout(ingress.body_read_timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(IngressError::SlowBody(ingress.body_read_timeout)),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) => {
            let too_large =
                std::error::Error::source(&error).is_some_and(|cause| cause.is::<http_body_util::LengthLimitError>());
            Err(if too_large { IngressError::TooLarge(limit) } else { IngressError::UnreadableBody })
        }
    }
}

/// What the handler reads of a request besides its body.
struct Incoming<'a> {
    peer: Option<std::net::IpAddr>,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
}

/// `HEAD /webhooks/{source}`: 200 for a configured source (providers
/// check the URL this way before they send), 404 otherwise.
pub(crate) async fn probe(State(ingress): State<Arc<Ingress>>, Path(name): Path<String>) -> axum::http::StatusCode {
    if ingress.sources.contains_key(&name) { axum::http::StatusCode::OK } else { axum::http::StatusCode::NOT_FOUND }
}

async fn handle(
    ingress: &Ingress,
    name: &str,
    request: Incoming<'_>,
    body: Body,
    trace: TraceContext,
) -> Result<Accepted, IngressError> {
    let source = ingress.sources.get(name).ok_or(IngressError::UnknownSource)?;
    if !source.allowed_ips.is_empty() {
        let allowed = request.peer.is_some_and(|ip| {
            let ip = match ip {
                std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
                v4 => v4,
            };
            source.allowed_ips.iter().any(|net| net.contains(&ip))
        });
        if !allowed {
            tracing::warn!(source = %name, peer = ?request.peer, "webhook rejected: address not allowed");
            return Err(IngressError::Forbidden);
        }
    }
    let headers = request.headers;
    // Held until the answer: reading, verifying and publishing count.
    let _permit = ingress.in_flight.try_acquire().map_err(|_| IngressError::Overloaded)?;
    let body = read_body(ingress, headers, body).await?;
    let now = Utc::now();
    let verified = match source.verifier.verify_concurrent(headers, &body, request.query, now).await {
        Ok(verified) => verified,
        Err(hookbridge_providers::VerifyError::CertificateUnavailable) => {
            tracing::warn!(source = %name, "webhook not verified: the signing certificate cannot be fetched; answered 503");
            return Err(IngressError::CannotVerify);
        }
        Err(error) => {
            tracing::warn!(source = %name, reason = error.code(), "webhook rejected: signature");
            return Err(error.into());
        }
    };
    let handshake = match verified.sns {
        Some(hookbridge_providers::defined::sns::SnsOutcome::Confirmed) => Some("subscription_confirmed"),
        Some(hookbridge_providers::defined::sns::SnsOutcome::Ignored) => Some("ignored"),
        _ => None,
    };
    let parts = hookbridge_providers::Request { headers, body: &body, query: request.query };
    let mut events =
        hookbridge_providers::normalize_all(&source.provider, &parts, &source.meta, now).map_err(|error| {
            tracing::warn!(source = %name, reason = error.code(), %error, "webhook rejected: payload");
            IngressError::from(error)
        })?;
    let traceparent = trace.to_string();
    for event in &mut events {
        event.traceparent = Some(traceparent.clone());
    }
    let batch = source.provider.batches();
    // Every element is published (each deduplicated by its own id); the
    // provider's retry of a partly stored batch publishes what is missing.
    let mut outcomes: Vec<Result<PublishOutcome, IngressError>> = Vec::with_capacity(events.len());
    for chunk in events.chunks(BATCH_PUBLISH_CONCURRENCY) {
        let mut pending = Vec::with_capacity(chunk.len());
        for event in chunk {
            pending.push(publish(ingress, name, event));
        }
        outcomes.extend(futures_util::future::join_all(pending).await);
    }
    let mut items = Vec::with_capacity(events.len());
    let mut any_new = false;
    for (event, outcome) in events.iter().zip(outcomes) {
        let outcome = outcome?;
        let status = match outcome {
            PublishOutcome::Published => {
                any_new = true;
                ingress.metrics.published(&event.provider, &event.ty);
                "accepted"
            }
            PublishOutcome::Duplicate => "duplicate",
        };
        tracing::debug!(source = %name, event_id = %event.id, event_type = %event.ty, status, "webhook accepted");
        items.push(BatchItem { id: event.id.clone(), status });
    }
    source.verifier.accepted(verified);
    if let Some(status) = handshake {
        return Ok(Accepted { status, counted_as: ("accepted", status), id: None, events: None });
    }
    let status = if any_new || items.is_empty() { "accepted" } else { "duplicate" };
    if batch {
        Ok(Accepted { status, counted_as: (status, "none"), id: None, events: Some(items) })
    } else {
        Ok(Accepted { status, counted_as: (status, "none"), id: items.pop().map(|i| i.id), events: None })
    }
}

/// Publishes one event, answering 503 when the bus does not acknowledge.
async fn publish(
    ingress: &Ingress,
    name: &str,
    event: &hookbridge_event::Event,
) -> Result<PublishOutcome, IngressError> {
    let backend = ingress.publisher.backend();
    let publishing = Instant::now();
    match tokio::time::timeout(ingress.publish_timeout, ingress.publisher.publish(event)).await {
        Ok(Ok(outcome)) => {
            ingress.bus_metrics.published(backend, publishing.elapsed());
            Ok(outcome)
        }
        Ok(Err(error)) => {
            ingress.bus_metrics.failed(backend, Some(&error));
            tracing::error!(source = %name, event_id = %event.id, %error, "publish failed; answered 503");
            Err(IngressError::Unavailable)
        }
        Err(_) => {
            ingress.bus_metrics.failed(backend, None);
            tracing::error!(source = %name, event_id = %event.id, timeout = ?ingress.publish_timeout, "publish not acknowledged in time; answered 503");
            Err(IngressError::Unavailable)
        }
    }
}
