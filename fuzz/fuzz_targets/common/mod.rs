//! What every provider target checks, whatever the bytes:
//! - verifying a request with an arbitrary signature header never panics;
//! - the body signed with the source's real key always verifies;
//! - normalizing never panics, and an event it makes survives its own
//!   JSON round trip (what the bus stores is what the relay reads).

use chrono::{DateTime, TimeZone, Utc};
use hookbridge_event::Event;
use hookbridge_providers::samples::Signer;
use hookbridge_providers::{Redactor, Request, SourceMeta, Verifier, normalize};
use http::{HeaderMap, HeaderName, HeaderValue};

/// A fixed "now", so a run is reproducible.
pub fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(1_760_000_000, 0).single().expect("a valid time")
}

/// `data`: one byte of header length, the signature header's value, then
/// the body.
pub fn check(data: &[u8], verifier: &Verifier, signer: &Signer, redact: &[&str]) {
    let Some((&len, rest)) = data.split_first() else { return };
    let len = usize::from(len).min(rest.len());
    let (header, body) = rest.split_at(len);
    let name = HeaderName::from_static(signer.header(b"", now()).0);
    if let Ok(value) = HeaderValue::from_bytes(header) {
        let mut headers = HeaderMap::new();
        headers.insert(name.clone(), value);
        let _ = verifier.verify(&Request::new(&headers, body), now());
    }
    let (_, signature) = signer.header(body, now());
    let mut headers = HeaderMap::new();
    headers.insert(name, HeaderValue::from_str(&signature).expect("our signatures are header values"));
    assert!(verifier.verify(&Request::new(&headers, body), now()).is_ok(), "a body signed with the real key verifies");

    let meta = SourceMeta { event_source: "urn:hookbridge:source:fuzz".into(), redactor: Redactor::new(redact) };
    if let Ok(event) = normalize(&verifier.provider(), body, &meta, now()) {
        let json = event.to_json();
        let back = Event::from_json(&json).expect("an event we made parses back");
        assert_eq!(back.to_json(), json, "the event survives its JSON round trip");
    }
}
