use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use chrono::Utc;
use hookbridge_bus::PublishOutcome;
use hookbridge_event::trace::{self, SpanKind, TraceContext};
use serde::Serialize;

use crate::{Ingress, IngressError};

#[derive(Debug, Serialize)]
pub(crate) struct Accepted {
    status: &'static str,
    id: String,
}

/// `POST /webhooks/{source}`: verify on the raw bytes, normalize, publish,
/// then answer; every answer is counted.
pub(crate) async fn receive(
    State(ingress): State<Arc<Ingress>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, IngressError> {
    let started = Instant::now();
    // Continue the caller's trace when it sent one, or start a new one.
    let parent = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceContext::parse);
    let mut span = trace::start("webhook receive", SpanKind::Server, parent);
    let result = handle(&ingress, &name, &headers, body, span.context()).await;
    let source = if ingress.sources.contains_key(&name) { name.as_str() } else { crate::metrics::UNKNOWN_SOURCE };
    let (outcome, reason) = match &result {
        Ok(accepted) => (accepted.status, "none"),
        Err(error) => (error.outcome(), error.code()),
    };
    ingress.metrics.request(source, outcome, reason, started.elapsed());
    span.set_attribute("hookbridge.source", source.to_owned());
    span.set_attribute("hookbridge.outcome", outcome.to_owned());
    match &result {
        Ok(accepted) => {
            span.set_attribute("hookbridge.event_id", accepted.id.clone());
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

async fn handle(
    ingress: &Ingress,
    name: &str,
    headers: &HeaderMap,
    body: Body,
    trace: TraceContext,
) -> Result<Accepted, IngressError> {
    let source = ingress.sources.get(name).ok_or(IngressError::UnknownSource)?;
    // Held until the answer: reading, verifying and publishing count.
    let _permit = ingress.in_flight.try_acquire().map_err(|_| IngressError::Overloaded)?;
    let body = read_body(ingress, headers, body).await?;
    let now = Utc::now();
    if let Err(error) = source.verifier.verify_concurrent(headers, &body, now).await {
        tracing::warn!(source = %name, reason = error.code(), "webhook rejected: signature");
        return Err(error.into());
    }
    let mut event = hookbridge_providers::normalize(source.provider, &body, &source.meta, now).map_err(|error| {
        tracing::warn!(source = %name, reason = error.code(), %error, "webhook rejected: payload");
        IngressError::from(error)
    })?;
    event.traceparent = Some(trace.to_string());
    let backend = ingress.publisher.backend();
    let publishing = Instant::now();
    let published = tokio::time::timeout(ingress.publish_timeout, ingress.publisher.publish(&event)).await;
    let outcome = match published {
        Ok(Ok(outcome)) => {
            ingress.bus_metrics.published(backend, publishing.elapsed());
            outcome
        }
        Ok(Err(error)) => {
            ingress.bus_metrics.failed(backend, Some(&error));
            tracing::error!(source = %name, event_id = %event.id, %error, "publish failed; answered 503");
            return Err(IngressError::Unavailable);
        }
        Err(_) => {
            ingress.bus_metrics.failed(backend, None);
            tracing::error!(source = %name, event_id = %event.id, timeout = ?ingress.publish_timeout, "publish not acknowledged in time; answered 503");
            return Err(IngressError::Unavailable);
        }
    };
    if outcome == PublishOutcome::Published {
        ingress.metrics.published(&event.provider, &event.ty);
    }
    let status = match outcome {
        PublishOutcome::Published => "accepted",
        PublishOutcome::Duplicate => "duplicate",
    };
    tracing::debug!(source = %name, event_id = %event.id, event_type = %event.ty, status, "webhook accepted");
    Ok(Accepted { status, id: event.id })
}
