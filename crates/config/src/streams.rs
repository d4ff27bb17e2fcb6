//! `[streams]` and `[[streams.tokens]]` into the streams listener's settings.

use std::collections::HashSet;

use hookbridge_event::EventPattern;
use hookbridge_ingress::Source;
use hookbridge_streams::{StreamToken, StreamsSettings};
use secrecy::SecretString;

use crate::secret::SecretRef;
use crate::{Problems, raw};

pub(crate) fn build(
    raw: &raw::StreamsConfig,
    others: &[(&str, std::net::SocketAddr)],
) -> Result<StreamsSettings, Problems> {
    let mut problems: Problems = Vec::new();
    let mut problem = |path: &str, message: String| problems.push((path.to_owned(), message));
    for (key, addr) in others {
        if *addr == raw.listen && raw.listen.port() != 0 {
            problem("streams.listen", format!("must differ from {key}"));
        }
    }
    if raw.tokens.is_empty() {
        problem(
            "streams.tokens",
            "add at least one [[streams.tokens]] (name, token, events): streams are never open to anyone".into(),
        );
    }
    if raw.heartbeat.is_zero() {
        problem("streams.heartbeat", "must be greater than 0".into());
    }
    if raw.client_buffer == 0 {
        problem("streams.client_buffer", "must be greater than 0".into());
    }
    if raw.slow_client_timeout.is_zero() {
        problem("streams.slow_client_timeout", "must be greater than 0".into());
    }
    if raw.max_clients == 0 {
        problem("streams.max_clients", "must be greater than 0".into());
    }
    for (i, origin) in raw.cors_origins.iter().enumerate() {
        if !valid_origin(origin) {
            problem(
                &format!("streams.cors_origins[{i}]"),
                format!("`{origin}` is not an origin: use scheme://host[:port] (no path), or *"),
            );
        }
    }
    let mut names = HashSet::new();
    let mut values = HashSet::new();
    let mut tokens = Vec::new();
    for (i, token) in raw.tokens.iter().enumerate() {
        let at = format!("streams.tokens[{i}]");
        if !Source::valid_name(&token.name) {
            problem(&format!("{at}.name"), format!("`{}` must be 1-64 characters of a-z, 0-9, - and _", token.name));
        }
        if !names.insert(token.name.as_str()) {
            problem(&format!("{at}.name"), format!("`{}` is used by another token", token.name));
        }
        let value = match SecretRef::resolve(&token.token) {
            Ok(value) if value.len() >= 16 => Some(value),
            Ok(_) => {
                problem(&format!("{at}.token"), "must be at least 16 characters".into());
                None
            }
            Err(e) => {
                problem(&format!("{at}.token"), e.to_string());
                None
            }
        };
        if let Some(value) = &value
            && !values.insert(value.clone())
        {
            problem(&format!("{at}.token"), "is the same as another token's".into());
        }
        if token.events.is_empty() {
            problem(&format!("{at}.events"), "list the event types this token may read (exact, family.*, or *)".into());
        }
        let mut events = Vec::new();
        for (j, pattern) in token.events.iter().enumerate() {
            match EventPattern::parse(pattern) {
                Ok(p) => events.push(p),
                Err(e) => problem(&format!("{at}.events[{j}]"), e.to_string()),
            }
        }
        if let Some(value) = value {
            tokens.push(StreamToken { name: token.name.clone(), token: SecretString::from(value), events });
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(StreamsSettings {
        listen: raw.listen,
        tokens,
        cors_origins: raw.cors_origins.clone(),
        heartbeat: raw.heartbeat,
        client_buffer: raw.client_buffer,
        slow_client_timeout: raw.slow_client_timeout,
        max_clients: raw.max_clients,
    })
}

fn valid_origin(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else { return false };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains('/')
        && rest.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}
