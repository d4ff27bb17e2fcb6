//! One delivery attempt: POST the structured CloudEvent with Standard
//! Webhooks headers and classify what came back.

use std::time::Duration;

use chrono::Utc;
use hookbridge_event::Event;
use hookbridge_event::trace::{self, SpanKind, TraceContext};
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};

use secrecy::ExposeSecret;

use hookbridge_bus::attempts::RESPONSE_EXCERPT_BYTES;

use crate::oauth2::{self, TokenSource};
use crate::policy::{Attempt, parse_retry_after};
use crate::settings::SubscriberSettings;
use crate::sign::signature_header;

/// `Content-Type` of deliveries: CloudEvents HTTP binding, structured mode.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
/// Most of a response body read (to reuse the connection); the rest is dropped.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The HTTP client of one subscriber: pooled keep-alive connections, rustls,
/// HTTP/2 where the subscriber offers it over TLS; its extra CA, its client
/// certificate (mTLS) and its proxy when configured.
///
/// # Errors
/// When the TLS configuration or the proxy cannot be used.
pub fn client(settings: &SubscriberSettings) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    if let Some(pem) = &settings.ca_pem {
        for certificate in reqwest::Certificate::from_pem_bundle(pem)? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let Some(pem) = &settings.client_identity {
        builder = builder.identity(reqwest::Identity::from_pem(pem.expose_secret())?);
    }
    if let Some(proxy) = &settings.proxy {
        builder = builder.proxy(reqwest::Proxy::all(proxy.expose_secret())?);
    }
    builder
        .user_agent(concat!("hookbridge/", env!("CARGO_PKG_VERSION")))
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
        .pool_max_idle_per_host(settings.max_in_flight)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Where one subscriber's deliveries go: its HTTP client and, with
/// `auth = { type = "oauth2" }`, the token it sends.
#[derive(Debug)]
pub struct Endpoint {
    client: reqwest::Client,
    token: Option<TokenSource>,
}

impl Endpoint {
    /// # Errors
    /// When the subscriber's HTTP client cannot be built.
    pub fn new(settings: &SubscriberSettings) -> reqwest::Result<Self> {
        Self::with_metrics(settings, None)
    }

    /// `token_requests`: counts the token fetches by subscriber and outcome.
    pub(crate) fn with_metrics(
        settings: &SubscriberSettings,
        token_requests: Option<prometheus::IntCounterVec>,
    ) -> reqwest::Result<Self> {
        let token = settings.auth.clone().map(|auth| TokenSource::new(auth, &settings.name, token_requests));
        Ok(Self { client: client(settings)?, token })
    }

    /// POSTs `event` once and says what happened. The request continues the
    /// event's trace: its `traceparent` is a new span in the same trace.
    pub async fn attempt(&self, settings: &SubscriberSettings, event: &Event) -> Attempt {
        let parent = event.traceparent.as_deref().and_then(TraceContext::parse);
        let mut span = trace::start("webhook deliver", SpanKind::Client, parent);
        span.set_attribute("hookbridge.subscriber", settings.name.clone());
        span.set_attribute("hookbridge.event_id", event.id.clone());
        let result = self.send(settings, event, span.context()).await;
        match &result {
            Attempt::Status { status, .. } => {
                span.set_attribute("http.response.status_code", status.to_string());
                span.end((!(200..300).contains(status)).then(|| format!("HTTP {status}")));
            }
            Attempt::Failed { error } => span.end(Some(error.clone())),
        }
        result
    }

    async fn send(&self, settings: &SubscriberSettings, event: &Event, trace: TraceContext) -> Attempt {
        let timestamp = Utc::now().timestamp();
        let mut bearer = match &self.token {
            Some(token) => match token.header(&self.client, None).await {
                Ok(header) => Some(header),
                Err(error) => return Attempt::Failed { error: format!("no OAuth2 token: {error}") },
            },
            None => None,
        };
        let mut refreshed = false;
        loop {
            let mut request = build_request(settings, event, timestamp, &trace);
            if let Some(header) = &bearer {
                oauth2::authorize(&mut request, header.clone());
            }
            let attempt = execute(&self.client, request).await;
            // A 401 to a token: fetched again once, and the request sent again.
            if let (Attempt::Status { status: 401, .. }, Some(token), Some(used), false) =
                (&attempt, &self.token, &bearer, refreshed)
            {
                refreshed = true;
                match token.header(&self.client, Some(used)).await {
                    Ok(header) => bearer = Some(header),
                    Err(error) => {
                        return Attempt::Failed { error: format!("answered 401 and no new OAuth2 token: {error}") };
                    }
                }
                continue;
            }
            return attempt;
        }
    }
}

/// The delivery request of `event` at `timestamp` (Unix seconds), in the
/// trace `trace`: the structured CloudEvent, the Standard Webhooks headers
/// (`webhook-id`, `webhook-timestamp`, `webhook-signature` when the
/// subscriber has secrets) and the subscriber's own headers. Pure: no I/O,
/// no clock. Built on the subscriber's parsed URL, so no delivery parses it
/// again.
pub fn build_request(
    settings: &SubscriberSettings,
    event: &Event,
    timestamp: i64,
    trace: &TraceContext,
) -> reqwest::Request {
    let body = event.to_json();
    let mut request = reqwest::Request::new(http::Method::POST, settings.url.clone());
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(CLOUDEVENTS_JSON));
    headers.insert(WEBHOOK_ID, header_value(&event.id));
    headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
    headers.insert(TRACEPARENT, header_value(&trace.to_string()));
    if !settings.secrets.is_empty() {
        headers
            .insert(WEBHOOK_SIGNATURE, header_value(&signature_header(&settings.secrets, &event.id, timestamp, &body)));
    }
    for (name, value) in &settings.headers {
        headers.append(name.clone(), value.clone());
    }
    *request.body_mut() = Some(body.into());
    request
}

const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// `text` as a header value; a control character in it (an event id a
/// provider sent with one) is escaped (`\n`), so the delivery goes out
/// instead of failing on every attempt.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| {
        HeaderValue::from_str(&text.escape_default().to_string()).expect("escaped text is printable ASCII")
    })
}

async fn execute(client: &reqwest::Client, request: reqwest::Request) -> Attempt {
    match client.execute(request).await {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, Utc::now()));
            // Read on (to reuse the connection), keeping the excerpt.
            let mut read = 0;
            let mut excerpt = Vec::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                read += chunk.len();
                let room = RESPONSE_EXCERPT_BYTES.saturating_sub(excerpt.len());
                excerpt.extend_from_slice(&chunk[..room.min(chunk.len())]);
                if read > MAX_RESPONSE_BYTES {
                    break;
                }
            }
            Attempt::Status { status, retry_after, body: excerpt_text(&excerpt) }
        }
        // `without_url`: a URL may carry credentials in its query.
        Err(error) => Attempt::Failed { error: describe(&error.without_url()) },
    }
}

/// A response excerpt as text: lossy UTF-8, without a character cut in two
/// at the end.
fn excerpt_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(e) if e.error_len().is_none() => String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
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

/// Checks a client certificate and its key (PEM) and joins them into the
/// identity a subscriber's client presents.
///
/// # Errors
/// What is wrong with them (never the key).
pub fn check_identity_pem(cert: &[u8], key: &[u8]) -> Result<secrecy::SecretSlice<u8>, String> {
    if !String::from_utf8_lossy(cert).contains("-----BEGIN CERTIFICATE-----") {
        return Err("tls.cert holds no PEM certificate".into());
    }
    if !String::from_utf8_lossy(key).contains("PRIVATE KEY-----") {
        return Err("tls.key holds no PEM private key".into());
    }
    let mut pem = cert.to_vec();
    if !pem.ends_with(b"\n") {
        pem.push(b'\n');
    }
    pem.extend_from_slice(key);
    match reqwest::Identity::from_pem(&pem) {
        Ok(_) => Ok(pem.into()),
        Err(_) => Err("tls.cert and tls.key are not a usable certificate and key".into()),
    }
}

/// Checks a proxy URL.
///
/// # Errors
/// What is wrong with it (never its credentials).
pub fn check_proxy(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("`{}` proxies are not supported: use http:// or https://", parsed.scheme()));
    }
    reqwest::Proxy::all(url).map(|_| ()).map_err(|_| "is not a usable proxy URL".into())
}

/// Why a CA bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("holds no PEM certificate")]
    Empty,
    #[error("is not a PEM certificate bundle: {0}")]
    Invalid(#[source] reqwest::Error),
}

/// Checks a PEM bundle of CA certificates.
///
/// # Errors
/// When it holds no certificate or cannot be parsed.
pub fn check_ca_pem(pem: &[u8]) -> Result<(), CaError> {
    match reqwest::Certificate::from_pem_bundle(pem) {
        Ok(certificates) if !certificates.is_empty() => Ok(()),
        Ok(_) => Err(CaError::Empty),
        Err(e) => Err(CaError::Invalid(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hookbridge_bus::conformance::event;
    use hookbridge_event::EventPattern;

    use super::*;
    use crate::circuit::CircuitSettings;
    use crate::policy::{DEFAULT_RETRY_ON, RetryPolicy};
    use crate::sign::{SigningSecret, VerifyKey, verify};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn settings(secrets: Vec<SigningSecret>) -> SubscriberSettings {
        let mut token = http::HeaderValue::from_static("Bearer s3cret");
        token.set_sensitive(true);
        SubscriberSettings {
            name: "billing".into(),
            url: "https://billing.example/hooks?k=v".parse().unwrap(),
            events: vec![EventPattern::All],
            secrets,
            timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                schedule: vec![Duration::from_secs(1)],
                retry_on_status: DEFAULT_RETRY_ON.to_vec(),
                max_retry_after: Duration::from_secs(60),
            },
            max_in_flight: 1,
            headers: vec![(http::header::AUTHORIZATION, token)],
            ca_pem: None,
            client_identity: None,
            proxy: None,
            auth: None,
            providers: Vec::new(),
            sources: Vec::new(),
            filter: None,
            rate_limit: None,
            ordering: crate::ordering::Ordering::None,
            enabled: true,
            circuit: CircuitSettings {
                failure_threshold: 5,
                probe_interval: Duration::from_secs(1),
                disable_after: None,
            },
        }
    }

    #[test]
    fn the_request_carries_the_event_and_the_standard_webhooks_headers() {
        let event = event("email.bounced");
        let trace = TraceContext::parse(TRACE).unwrap();
        let request =
            build_request(&settings(vec![SigningSecret::parse(SECRET).unwrap()]), &event, 1_700_000_000, &trace);

        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(request.url().as_str(), "https://billing.example/hooks?k=v");
        let body = request.body().and_then(reqwest::Body::as_bytes).expect("a body in memory");
        let h = request.headers();
        assert_eq!(h[CONTENT_TYPE], CLOUDEVENTS_JSON);
        assert_eq!(h["webhook-id"], event.id.as_str());
        assert_eq!(h["webhook-timestamp"], "1700000000");
        assert_eq!(h["traceparent"], trace.to_string().as_str());
        assert_eq!(h[http::header::AUTHORIZATION], "Bearer s3cret");
        assert_eq!(body, event.to_json().as_slice());
        // Signed over `id.timestamp.body` with the subscriber's secret: a
        // receiver holding it accepts, one holding another key does not.
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
        let check = |key: &str| {
            verify(
                &[VerifyKey::parse(key).unwrap()],
                get("webhook-id"),
                get("webhook-timestamp"),
                get("webhook-signature"),
                body,
                1_700_000_000,
                300,
            )
        };
        assert_eq!(check(SECRET), Ok(()));
        assert!(check("whsec_aG9va2JyaWRnZS1jaGFvcy1hbGxob29rYnJpZGdlLWM=").is_err());
    }

    #[test]
    fn an_id_with_a_control_character_is_sent_escaped() {
        let mut event = event("email.sent");
        event.id = "abc\ndef".into();
        let trace = TraceContext::parse(TRACE).unwrap();
        let request = build_request(&settings(Vec::new()), &event, 1, &trace);
        assert_eq!(request.headers()["webhook-id"], "abc\\ndef");
    }

    #[test]
    fn without_secrets_nothing_is_signed() {
        let trace = TraceContext::parse(TRACE).unwrap();
        let request = build_request(&settings(Vec::new()), &event("email.sent"), 1, &trace);
        assert!(request.headers().get("webhook-signature").is_none());
    }
}
