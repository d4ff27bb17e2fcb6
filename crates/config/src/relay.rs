//! `[relay]` and `[[relay.subscribers]]` into the relay's settings.

use hookbridge_ingress::Source;
use hookbridge_providers::Provider;
use hookbridge_relay::circuit::CircuitSettings;
use hookbridge_relay::policy::{DEFAULT_RETRY_ON, RetryPolicy};
use hookbridge_relay::sign::SigningSecret;
use hookbridge_relay::{SubscriberSettings, Url};

use crate::{Problems, raw};

/// An `http://` or `https://` URL, or what is wrong with it.
pub(crate) fn http_url(text: &str) -> Result<Url, String> {
    match Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(url),
        Ok(_) => Err("must be an http:// or https:// URL".into()),
        Err(e) => Err(format!("is not a URL: {e}")),
    }
}

pub(crate) fn build_subscriber(
    raw: &raw::SubscriberConfig,
    relay: &raw::RelayConfig,
    at: &str,
    catalogue: &hookbridge_providers::Catalogue,
) -> Result<SubscriberSettings, Problems> {
    let mut problems: Problems = Vec::new();
    let mut problem = |path: String, message: String| problems.push((path, message));
    if !Source::valid_name(&raw.name) {
        problem(format!("{at}.name"), format!("`{}` must be 1-64 characters of a-z, 0-9, - and _", raw.name));
    }
    let url = http_url(&raw.url).map_err(|e| problem(format!("{at}.url"), e)).ok();
    if raw.events.is_empty() {
        problem(format!("{at}.events"), "list the event types to deliver (exact, family.*, or *)".into());
    }
    let events: Vec<_> = raw
        .events
        .iter()
        .enumerate()
        .filter_map(|(j, e)| {
            hookbridge_event::EventPattern::parse(e)
                .map_err(|err| problem(format!("{at}.events[{j}]"), err.to_string()))
                .ok()
        })
        .collect();
    let secrets: Vec<_> = raw
        .secret
        .as_slice()
        .iter()
        .enumerate()
        .filter_map(|(j, s)| {
            let path = if matches!(raw.secret, raw::OneOrMany::One(_)) {
                format!("{at}.secret")
            } else {
                format!("{at}.secret[{j}]")
            };
            s.resolve()
                .map_err(|e| e.to_string())
                .and_then(|v| SigningSecret::parse(&v).map_err(|e| e.to_string()))
                .map_err(|e| problem(path, e))
                .ok()
        })
        .collect();
    if raw.timeout.is_zero() {
        problem(format!("{at}.timeout"), "must be greater than 0".into());
    }
    if raw.max_in_flight == 0 {
        problem(format!("{at}.max_in_flight"), "must be at least 1".into());
    }
    if raw.circuit_failure_threshold == 0 {
        problem(format!("{at}.circuit_failure_threshold"), "must be at least 1".into());
    }
    let retry_on_status = raw.retry_on_status.clone().unwrap_or_else(|| DEFAULT_RETRY_ON.to_vec());
    for (j, status) in retry_on_status.iter().enumerate() {
        if !(400..500).contains(status) {
            problem(
                format!("{at}.retry_on_status[{j}]"),
                format!("{status} is not a 4xx status (5xx are always retried)"),
            );
        }
    }
    for (j, provider) in raw.providers.iter().enumerate() {
        if Provider::lookup(provider, catalogue).is_none() {
            problem(format!("{at}.providers[{j}]"), format!("unknown provider `{provider}`"));
        }
    }
    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        let path = format!("{at}.headers.{name}");
        let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
            problem(path, "is not a valid header name".into());
            continue;
        };
        match value.resolve().map(|v| http::HeaderValue::from_str(&v)) {
            Ok(Ok(mut v)) => {
                v.set_sensitive(true);
                headers.push((header, v));
            }
            Ok(Err(_)) => problem(path, "the value is not a valid header value".into()),
            Err(e) => problem(path, e.to_string()),
        }
    }
    let read_ca =
        |key: String, path: &std::path::Path, problem: &mut dyn FnMut(String, String)| match std::fs::read(path) {
            Ok(pem) => match hookbridge_relay::deliver::check_ca_pem(&pem) {
                Ok(()) => Some(pem),
                Err(e) => {
                    problem(key, format!("{} {e}", path.display()));
                    None
                }
            },
            Err(e) => {
                problem(key, format!("cannot read {}: {e}", path.display()));
                None
            }
        };
    let tls = raw.tls.as_ref();
    let ca_pem = match (&raw.ca_file, tls.and_then(|t| t.ca.as_ref())) {
        (Some(_), Some(_)) => {
            problem(format!("{at}.tls.ca"), "set either ca_file or tls.ca, not both".into());
            None
        }
        (Some(path), None) => read_ca(format!("{at}.ca_file"), path, &mut problem),
        (None, Some(path)) => read_ca(format!("{at}.tls.ca"), path, &mut problem),
        (None, None) => None,
    };
    let client_identity = match tls.map(|t| (&t.cert, &t.key)) {
        None | Some((None, None)) => None,
        Some((Some(_), None)) => {
            problem(format!("{at}.tls.key"), "a client certificate needs its key".into());
            None
        }
        Some((None, Some(_))) => {
            problem(format!("{at}.tls.cert"), "a client key needs its certificate".into());
            None
        }
        Some((Some(cert), Some(key))) => {
            let cert = std::fs::read(cert)
                .map_err(|e| problem(format!("{at}.tls.cert"), format!("cannot read {}: {e}", cert.display())))
                .ok();
            let key = crate::secret::read_key_pem(key).map_err(|e| problem(format!("{at}.tls.key"), e)).ok();
            match (cert, key) {
                (Some(cert), Some(key)) => match hookbridge_relay::deliver::check_identity_pem(&cert, &key) {
                    Ok(identity) => Some(identity),
                    Err(e) => {
                        problem(format!("{at}.tls"), e);
                        None
                    }
                },
                _ => None,
            }
        }
    };
    let proxy = raw.proxy.as_ref().and_then(|proxy| match proxy.resolve() {
        Ok(url) => match hookbridge_relay::deliver::check_proxy(&url) {
            Ok(()) => Some(secrecy::SecretString::from(url)),
            Err(e) => {
                problem(format!("{at}.proxy"), e);
                None
            }
        },
        Err(e) => {
            problem(format!("{at}.proxy"), e.to_string());
            None
        }
    });
    let auth = match &raw.auth {
        None => None,
        Some(raw::AuthConfig::Oauth2 { token_url, client_id, client_secret, scopes, client_auth, audience }) => {
            if raw.headers.keys().any(|h| h.eq_ignore_ascii_case("authorization")) {
                problem(
                    format!("{at}.headers.Authorization"),
                    "set either auth or an Authorization header, not both".into(),
                );
            }
            let token_url = http_url(token_url).map_err(|e| problem(format!("{at}.auth.token_url"), e)).ok();
            if client_id.is_empty() {
                problem(format!("{at}.auth.client_id"), "must not be empty".into());
            }
            let secret = client_secret
                .resolve()
                .map_err(|e| problem(format!("{at}.auth.client_secret"), e.to_string()))
                .ok()
                .filter(|s| {
                    let empty = s.is_empty();
                    if empty {
                        problem(format!("{at}.auth.client_secret"), "must not be empty".into());
                    }
                    !empty
                });
            match (token_url, secret) {
                (Some(token_url), Some(secret)) => Some(hookbridge_relay::oauth2::OAuth2Settings {
                    token_url,
                    client_id: client_id.clone(),
                    client_secret: secrecy::SecretString::from(secret),
                    scopes: scopes.clone(),
                    client_auth: *client_auth,
                    audience: audience.clone(),
                }),
                _ => None,
            }
        }
    };
    let filter =
        raw.filter.as_deref().and_then(|source| match hookbridge_relay::filter::EventFilter::compile(source) {
            Ok(filter) => Some(std::sync::Arc::new(filter)),
            Err(e) => {
                problem(format!("{at}.filter"), format!("is not a valid CEL expression: {e}"));
                None
            }
        });
    let rate_limit = match (&raw.rate_limit, raw.rate_limit_burst) {
        (None, None) => None,
        (None, Some(_)) => {
            problem(format!("{at}.rate_limit_burst"), "needs rate_limit".into());
            None
        }
        (Some(rate), burst) => match hookbridge_relay::settings::RateLimit::parse(rate, burst) {
            Ok(limit) => Some(limit),
            Err(e) => {
                problem(format!("{at}.rate_limit"), e);
                None
            }
        },
    };
    match url {
        Some(url) if problems.is_empty() => Ok(SubscriberSettings {
            name: raw.name.clone(),
            url,
            events,
            secrets,
            timeout: raw.timeout,
            retry: RetryPolicy {
                schedule: raw.retry_schedule.iter().map(|d| **d).collect(),
                retry_on_status,
                max_retry_after: relay.max_retry_after,
            },
            max_in_flight: raw.max_in_flight,
            headers,
            ca_pem,
            client_identity,
            proxy,
            auth,
            providers: raw.providers.clone(),
            sources: raw.sources.clone(),
            filter,
            rate_limit,
            ordering: raw.ordering,
            enabled: raw.enabled,
            circuit: CircuitSettings {
                failure_threshold: raw.circuit_failure_threshold,
                probe_interval: raw.circuit_probe_interval,
                disable_after: raw.disable_after,
            },
        }),
        _ => Err(problems),
    }
}
