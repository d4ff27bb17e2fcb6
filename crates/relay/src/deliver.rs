//! One delivery attempt: POST the structured CloudEvent with Standard
//! Webhooks headers and classify what came back.

use std::time::Duration;

use chrono::Utc;
use hookbridge_event::Event;
use hookbridge_event::trace::{self, SpanKind, TraceContext};
use http::header::{CONTENT_TYPE, RETRY_AFTER};

use crate::policy::{Attempt, parse_retry_after};
use crate::settings::SubscriberSettings;
use crate::sign::signature_header;

/// `Content-Type` of deliveries: CloudEvents HTTP binding, structured mode.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
/// Most of a response body read (to reuse the connection); the rest is dropped.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The HTTP client of one subscriber: pooled keep-alive connections, rustls,
/// HTTP/2 where the subscriber offers it over TLS.
///
/// # Errors
/// When the TLS configuration cannot be built.
pub fn client(settings: &SubscriberSettings) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    if let Some(pem) = &settings.ca_pem {
        for certificate in reqwest::Certificate::from_pem_bundle(pem)? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .user_agent(concat!("hookbridge/", env!("CARGO_PKG_VERSION")))
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
        .pool_max_idle_per_host(settings.max_in_flight)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// POSTs `event` once and says what happened. The request continues the
/// event's trace: its `traceparent` is a new span in the same trace.
pub async fn attempt(client: &reqwest::Client, settings: &SubscriberSettings, event: &Event) -> Attempt {
    let parent = event.traceparent.as_deref().and_then(TraceContext::parse);
    let mut span = trace::start("webhook deliver", SpanKind::Client, parent);
    span.set_attribute("hookbridge.subscriber", settings.name.clone());
    span.set_attribute("hookbridge.event_id", event.id.clone());
    let result = send(client, settings, event, span.context()).await;
    match &result {
        Attempt::Status { status, .. } => {
            span.set_attribute("http.response.status_code", status.to_string());
            span.end((!(200..300).contains(status)).then(|| format!("HTTP {status}")));
        }
        Attempt::Failed { error } => span.end(Some(error.clone())),
    }
    result
}

async fn send(client: &reqwest::Client, settings: &SubscriberSettings, event: &Event, trace: TraceContext) -> Attempt {
    let body = event.to_json();
    let timestamp = Utc::now().timestamp();
    let mut request = client
        .post(settings.url.clone())
        .header(CONTENT_TYPE, CLOUDEVENTS_JSON)
        .header("webhook-id", &event.id)
        .header("webhook-timestamp", timestamp)
        .header("traceparent", trace.to_string());
    if !settings.secrets.is_empty() {
        request = request.header("webhook-signature", signature_header(&settings.secrets, &event.id, timestamp, &body));
    }
    for (name, value) in &settings.headers {
        request = request.header(name, value);
    }
    match request.body(body).send().await {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, Utc::now()));
            let mut read = 0;
            while let Ok(Some(chunk)) = response.chunk().await {
                read += chunk.len();
                if read > MAX_RESPONSE_BYTES {
                    break;
                }
            }
            Attempt::Status { status, retry_after }
        }
        // `without_url`: a URL may carry credentials in its query.
        Err(error) => Attempt::Failed { error: describe(&error.without_url()) },
    }
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_owned();
    }
    // The innermost cause says what happened ("Connection refused").
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let kind = if error.is_connect() { "connection failed" } else { "request failed" };
    format!("{kind}: {cause}")
}

/// Checks a PEM bundle of CA certificates.
///
/// # Errors
/// When it holds no certificate or cannot be parsed.
pub fn check_ca_pem(pem: &[u8]) -> Result<(), String> {
    match reqwest::Certificate::from_pem_bundle(pem) {
        Ok(certificates) if !certificates.is_empty() => Ok(()),
        Ok(_) => Err("holds no PEM certificate".to_owned()),
        Err(e) => Err(format!("is not a PEM certificate bundle: {e}")),
    }
}
