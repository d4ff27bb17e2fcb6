#![no_main]
//! The definition engine under hostile input. The first byte picks:
//! - a definition file's text: compiling it never panics;
//! - otherwise a catalogue provider (by the byte), then one byte of header
//!   length, a header value set on every header the definitions read, then
//!   the body: verifying never panics, normalizing never panics, and every
//!   event it makes survives its JSON round trip.

#[path = "common/mod.rs"]
#[allow(dead_code, reason = "only its clock is used here")]
mod common;

use std::sync::LazyLock;

use hookbridge_event::Event;
use hookbridge_providers::{Provider, Redactor, Request, SourceMeta, Verifier, VerifierSettings, builtin_catalogue};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

/// Every header a built-in definition reads.
const HEADERS: &[&str] = &[
    "x-twilio-email-event-webhook-signature",
    "x-twilio-email-event-webhook-timestamp",
    "svix-signature",
    "svix-id",
    "svix-timestamp",
    "webhook-signature",
    "webhook-id",
    "webhook-timestamp",
    "authorization",
    "x-mandrill-signature",
    "x-cio-signature",
    "x-cio-timestamp",
];

static SOURCES: LazyLock<Vec<(Provider, Verifier)>> = LazyLock::new(|| {
    builtin_catalogue()
        .iter()
        .filter(|d| !d.credentials().contains(&"topic_arns"))
        .map(|d| {
            let provider = Provider::Defined(d.clone());
            let settings = match d.credentials()[0] {
                "public_keys" => VerifierSettings {
                    public_keys: vec!["MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAELiYIsXyuKA8b4XIM2ey/t4qM6RItfpXP6Y7nmxMk+qxo+bSdmfbfXPcXf4ny8pq9VllSU8CZ/wwqWs1MzQMdBQ==".into()],
                    listed_public_keys: 1,
                    ..VerifierSettings::default()
                },
                "username + password" => VerifierSettings {
                    username: Some("u".into()),
                    password: Some("p".into()),
                    ..VerifierSettings::default()
                },
                _ => VerifierSettings {
                    secrets: vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()],
                    listed_secrets: 1,
                    webhook_url: d.signs_url().then(|| "https://hooks.example/webhooks/x".into()),
                    ..VerifierSettings::default()
                },
            };
            let verifier = provider.verifier(&settings).expect("the fuzz settings are valid");
            (provider, verifier)
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    if pick == 0 {
        if let Ok(text) = std::str::from_utf8(rest) {
            let _ = hookbridge_providers::defined::parse(text);
        }
        return;
    }
    let (provider, verifier) = &SOURCES[usize::from(pick) % SOURCES.len()];
    let Some((&len, rest)) = rest.split_first() else { return };
    let len = usize::from(len).min(rest.len());
    let (header, body) = rest.split_at(len);
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(header) {
        for name in HEADERS {
            headers.insert(HeaderName::from_static(name), value.clone());
        }
    }
    let request = Request { headers: &headers, body, query: Some("token=x&sig=y") };
    let _ = verifier.verify(&request, common::now());
    let meta = SourceMeta { event_source: "urn:hookbridge:source:fuzz".into(), redactor: Redactor::new(&["email"]) };
    if let Ok(events) = hookbridge_providers::normalize_all(provider, &request, &meta, common::now()) {
        for event in events {
            let json = event.to_json();
            let back = Event::from_json(&json).expect("an event we made parses back");
            assert_eq!(back.to_json(), json, "the event survives its JSON round trip");
        }
    }
});
