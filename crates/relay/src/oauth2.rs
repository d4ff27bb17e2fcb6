//! OAuth 2.0 client credentials (RFC 6749 §4.4) for subscribers whose
//! endpoint wants a bearer token: fetched from the token endpoint, cached
//! until shortly before it expires, fetched again once when the subscriber
//! answers 401. One fetch at a time per subscriber; the deliveries waiting
//! for it share its token.

use std::time::Duration;

use http::HeaderValue;
use http::header::{ACCEPT, AUTHORIZATION};
use prometheus::IntCounterVec;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;

/// How the client authenticates to the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// HTTP Basic with the form-encoded id and secret (`client_secret_basic`).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    Post,
}

/// A subscriber's `auth = { type = "oauth2", … }`.
#[derive(Debug, Clone)]
pub struct OAuth2Settings {
    pub token_url: reqwest::Url,
    pub client_id: String,
    pub client_secret: SecretString,
    pub scopes: Vec<String>,
    pub client_auth: ClientAuth,
    /// Extra form fields some servers want (e.g. `audience`).
    pub audience: Option<String>,
}

/// Used when the token endpoint gives no `expires_in`: fetched again after
/// this (or sooner, on a 401).
const UNKNOWN_LIFETIME: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
struct Token {
    /// `Bearer …`, marked sensitive.
    header: HeaderValue,
    refresh_at: Instant,
}

/// The token of one subscriber.
#[derive(Debug)]
pub(crate) struct TokenSource {
    settings: OAuth2Settings,
    subscriber: String,
    cached: tokio::sync::Mutex<Option<Token>>,
    requests: Option<IntCounterVec>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    error_description: Option<String>,
}

/// When to fetch again a token that lives `lifetime`: a tenth of it (at
/// most a minute, at least a second) before it expires.
fn refresh_after(lifetime: Duration) -> Duration {
    let margin = (lifetime / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    lifetime.saturating_sub(margin)
}

impl TokenSource {
    pub(crate) fn new(settings: OAuth2Settings, subscriber: &str, requests: Option<IntCounterVec>) -> Self {
        Self { settings, subscriber: subscriber.to_owned(), cached: tokio::sync::Mutex::new(None), requests }
    }

    /// The `Authorization` value to send. `rejected`: the value the
    /// subscriber just answered 401 to; unless another delivery already
    /// replaced it, a new token is fetched.
    ///
    /// # Errors
    /// Why no token could be had (never the secret).
    pub(crate) async fn header(
        &self,
        http: &reqwest::Client,
        rejected: Option<&HeaderValue>,
    ) -> Result<HeaderValue, String> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref() {
            let fresh = Instant::now() < token.refresh_at;
            if fresh && rejected.is_none_or(|r| *r != token.header) {
                return Ok(token.header.clone());
            }
        }
        let fetched = self.fetch(http).await;
        if let Some(requests) = &self.requests {
            let outcome = if fetched.is_ok() { "issued" } else { "failed" };
            requests.with_label_values(&[&self.subscriber, outcome]).inc();
        }
        match fetched {
            Ok(token) => {
                let header = token.header.clone();
                *cached = Some(token);
                Ok(header)
            }
            Err(error) => {
                // A token that still works is kept for the next attempt;
                // one the subscriber refused is not.
                if rejected.is_some() {
                    *cached = None;
                }
                tracing::warn!(subscriber = %self.subscriber, token_url = %redact(&self.settings.token_url), %error, "cannot get an OAuth2 token");
                Err(error)
            }
        }
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<Token, String> {
        let s = &self.settings;
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        let scope = s.scopes.join(" ");
        if !scope.is_empty() {
            form.push(("scope", &scope));
        }
        if let Some(audience) = &s.audience {
            form.push(("audience", audience));
        }
        let mut request = http.post(s.token_url.clone()).header(ACCEPT, "application/json");
        match s.client_auth {
            ClientAuth::Basic => {
                let encode = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
                request = request.basic_auth(encode(&s.client_id), Some(encode(s.client_secret.expose_secret())));
            }
            ClientAuth::Post => {
                form.push(("client_id", &s.client_id));
                form.push(("client_secret", s.client_secret.expose_secret()));
            }
        }
        let started = Instant::now();
        let response = request.form(&form).send().await.map_err(|e| {
            let e = e.without_url();
            if e.is_timeout() { "the token endpoint timed out".to_owned() } else { format!("the token endpoint: {e}") }
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| format!("the token endpoint: {}", e.without_url()))?;
        if !status.is_success() {
            let reason = serde_json::from_slice::<ErrorResponse>(&body)
                .map(|e| match e.error_description {
                    Some(description) => format!(": {} ({description})", e.error),
                    None => format!(": {}", e.error),
                })
                .unwrap_or_default();
            return Err(format!("the token endpoint answered {}{reason}", status.as_u16()));
        }
        let token: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| format!("the token endpoint's answer is not a token response: {e}"))?;
        if let Some(kind) = &token.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(format!("the token endpoint issued a `{kind}` token; only bearer tokens are supported"));
        }
        let mut header = HeaderValue::from_str(&format!("Bearer {}", token.access_token))
            .map_err(|_| "the token endpoint issued a token that is not a valid header value".to_owned())?;
        header.set_sensitive(true);
        let lifetime = token.expires_in.map_or(UNKNOWN_LIFETIME, Duration::from_secs);
        Ok(Token { header, refresh_at: started + refresh_after(lifetime) })
    }
}

/// Sets the `Authorization` header of a delivery.
pub(crate) fn authorize(request: &mut reqwest::Request, header: HeaderValue) {
    request.headers_mut().insert(AUTHORIZATION, header);
}

fn redact(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fetched_again_shortly_before_they_expire() {
        assert_eq!(refresh_after(Duration::from_secs(3600)), Duration::from_secs(3540));
        assert_eq!(refresh_after(Duration::from_secs(300)), Duration::from_secs(270));
        assert_eq!(refresh_after(Duration::from_secs(5)), Duration::from_secs(4));
        assert_eq!(refresh_after(Duration::ZERO), Duration::ZERO);
    }
}
