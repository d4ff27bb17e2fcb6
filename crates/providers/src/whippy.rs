//! Whippy: `X-Whippy-Signature` is an HMAC-SHA256 keyed with the developer
//! application's API key. Its exact encoding is unconfirmed, so each source
//! chooses a [`Scheme`]:
//!
//! - `hmac-sha256-hex`: hex of HMAC(body) (an optional `sha256=` prefix is accepted);
//! - `hmac-sha256-base64`: base64 of HMAC(body), padded or not;
//! - `timestamped`: `t=<unix seconds>,v1=<base64 HMAC("<t>.<body>")>`, one
//!   or more `v1=`; a timestamp outside the tolerance is rejected.
//!
//! The body is `{"data": {…}, "event": "message.created", "request_id": "…"}`;
//! `request_id` is the event id. Event names are passed through unchanged.

use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use chrono::{DateTime, Utc};
use hookbridge_event::Event;
use hookbridge_event::data::{MessagingData, Normalized, ResourceData, address_list};
use http::HeaderMap;
use serde_json::Value;

use crate::hmac_sig::{HmacSecret, header_str, verify_any};
use crate::normalize::{self, Fields, SourceMeta};
use crate::{PayloadError, Provider, VerifyError};

pub const SIGNATURE_HEADER: &str = "x-whippy-signature";
const HEADER_NAME: &str = "X-Whippy-Signature";

/// Events Whippy documents or is reported to send; it publishes no complete list.
pub const EVENTS: &[&str] = hookbridge_event::taxonomy::PASSTHROUGH_KNOWN;

/// Default tolerance of the timestamped scheme.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    HmacSha256Hex,
    HmacSha256Base64,
    Timestamped,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256Hex => "hmac-sha256-hex",
            Self::HmacSha256Base64 => "hmac-sha256-base64",
            Self::Timestamped => "timestamped",
        }
    }
}

impl FromStr for Scheme {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::HmacSha256Hex, Self::HmacSha256Base64, Self::Timestamped]
            .into_iter()
            .find(|scheme| scheme.as_str() == s)
            .ok_or_else(|| {
                format!("unknown signature scheme `{s}` (expected hmac-sha256-hex, hmac-sha256-base64 or timestamped)")
            })
    }
}

#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<HmacSecret>,
    scheme: Scheme,
    tolerance: Duration,
}

fn malformed(detail: &'static str) -> VerifyError {
    VerifyError::MalformedSignature { header: HEADER_NAME.into(), detail: detail.into() }
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    STANDARD_NO_PAD.decode(s.trim_end_matches('=')).ok().or_else(|| STANDARD.decode(s).ok())
}

impl Verifier {
    pub fn new(secrets: Vec<HmacSecret>, scheme: Scheme, tolerance: Duration) -> Self {
        Self { secrets, scheme, tolerance }
    }

    pub(crate) fn verify(&self, headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Result<(), VerifyError> {
        let value = header_str(headers, SIGNATURE_HEADER)
            .ok_or(VerifyError::MissingSignature(HEADER_NAME.into()))?
            .map_err(|()| malformed("not visible ASCII"))?;
        let ok = match self.scheme {
            Scheme::HmacSha256Hex => {
                let hex_tag = value.strip_prefix("sha256=").unwrap_or(value);
                let tag = hex::decode(hex_tag).map_err(|_| malformed("not hex"))?;
                check_len(&tag)?;
                verify_any(&self.secrets, &[body], &tag)
            }
            Scheme::HmacSha256Base64 => {
                let tag = decode_base64(value).ok_or_else(|| malformed("not base64"))?;
                check_len(&tag)?;
                verify_any(&self.secrets, &[body], &tag)
            }
            Scheme::Timestamped => self.verify_timestamped(value, body, now)?,
        };
        if ok { Ok(()) } else { Err(VerifyError::InvalidSignature) }
    }

    fn verify_timestamped(&self, value: &str, body: &[u8], now: DateTime<Utc>) -> Result<bool, VerifyError> {
        let mut timestamp = None;
        let mut tags = Vec::new();
        for part in value.split(',') {
            match part.trim().split_once('=') {
                Some(("t", t)) => timestamp = Some(t),
                Some(("v1", sig)) => {
                    let tag = decode_base64(sig).ok_or_else(|| malformed("v1 is not base64"))?;
                    check_len(&tag)?;
                    tags.push(tag);
                }
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or_else(|| malformed("no t= timestamp"))?;
        let seconds: i64 = timestamp.parse().map_err(|_| malformed("t= is not unix seconds"))?;
        if tags.is_empty() {
            return Err(malformed("no v1= signature"));
        }
        // Check the signature first: a stale timestamp is only worth
        // reporting when the request is otherwise authentic.
        let ok =
            tags.iter().fold(false, |ok, tag| verify_any(&self.secrets, &[timestamp.as_bytes(), b".", body], tag) | ok);
        if ok && now.timestamp().abs_diff(seconds) > self.tolerance.as_secs() {
            return Err(VerifyError::StaleTimestamp);
        }
        Ok(ok)
    }
}

fn check_len(tag: &[u8]) -> Result<(), VerifyError> {
    if tag.len() == 32 { Ok(()) } else { Err(malformed("not a 32-byte HMAC-SHA256 digest")) }
}

/// The `X-Whippy-Signature` value for `body` in `scheme`, signed at `now`.
pub fn sign(secret: &HmacSecret, scheme: Scheme, body: &[u8], now: DateTime<Utc>) -> String {
    match scheme {
        Scheme::HmacSha256Hex => hex::encode(secret.sign(&[body])),
        Scheme::HmacSha256Base64 => STANDARD.encode(secret.sign(&[body])),
        Scheme::Timestamped => {
            let t = now.timestamp().to_string();
            let tag = secret.sign(&[t.as_bytes(), b".", body]);
            format!("t={t},v1={}", STANDARD_NO_PAD.encode(tag))
        }
    }
}

pub(crate) fn normalize(body: &[u8], source: &SourceMeta, now: DateTime<Utc>) -> Result<Event, PayloadError> {
    let shape = |detail: &str| PayloadError::shape("whippy", detail);
    let parsed = normalize::parse(body)?;
    let root = &parsed.value;
    let event = root
        .get("event")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| shape("`event` must be a non-empty string"))?;
    let data = root.get("data").filter(|d| d.is_object()).ok_or_else(|| shape("`data` must be an object"))?;
    let id = normalize::text(root.get("request_id")).unwrap_or_else(|| normalize::derived_id("wh-", &[body]));
    let resource_id = normalize::text(data.get("id"));
    let normalized = if event.starts_with("message.") {
        Normalized::Messaging(MessagingData {
            message_id: resource_id.clone(),
            from: normalize::text(data.get("from")),
            to: address_list(data.get("to")),
            direction: normalize::text(data.get("direction")),
            channel: normalize::text(data.get("type")),
            channel_id: normalize::text(data.get("channel_id")),
            contact_id: normalize::text(data.get("contact_id")),
            campaign_id: normalize::text(data.get("campaign_id")),
            delivery_status: normalize::text(data.get("delivery_status")),
        })
    } else {
        Normalized::Resource(ResourceData { resource_id: resource_id.clone() })
    };
    let fields = Fields {
        id,
        ty: event.to_owned(),
        provider_event: event.to_owned(),
        subject: resource_id,
        time: normalize::time(data.get("updated_at")).or_else(|| normalize::time(data.get("created_at"))),
        normalized,
    };
    Ok(normalize::assemble(Provider::Whippy, fields, &parsed, source, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(sig).unwrap());
        h
    }

    fn verifier(scheme: Scheme) -> Verifier {
        Verifier::new(vec![HmacSecret::new(b"key".to_vec())], scheme, DEFAULT_TOLERANCE)
    }

    #[test]
    fn every_scheme_round_trips() {
        let secret = HmacSecret::new(b"key".to_vec());
        let now = Utc::now();
        for scheme in [Scheme::HmacSha256Hex, Scheme::HmacSha256Base64, Scheme::Timestamped] {
            let sig = sign(&secret, scheme, b"body", now);
            assert_eq!(verifier(scheme).verify(&headers(&sig), b"body", now), Ok(()), "{scheme:?}");
            assert_eq!(
                verifier(scheme).verify(&headers(&sig), b"bodY", now),
                Err(VerifyError::InvalidSignature),
                "{scheme:?}"
            );
        }
    }

    #[test]
    fn timestamped_rejects_stale_and_future_timestamps() {
        let secret = HmacSecret::new(b"key".to_vec());
        let then = Utc::now() - chrono::Duration::seconds(301);
        let sig = sign(&secret, Scheme::Timestamped, b"b", then);
        assert_eq!(
            verifier(Scheme::Timestamped).verify(&headers(&sig), b"b", Utc::now()),
            Err(VerifyError::StaleTimestamp)
        );
        let future = Utc::now() + chrono::Duration::seconds(301);
        let sig = sign(&secret, Scheme::Timestamped, b"b", future);
        assert_eq!(
            verifier(Scheme::Timestamped).verify(&headers(&sig), b"b", Utc::now()),
            Err(VerifyError::StaleTimestamp)
        );
    }

    #[test]
    fn timestamped_signature_binds_the_timestamp() {
        let secret = HmacSecret::new(b"key".to_vec());
        let now = Utc::now();
        let sig = sign(&secret, Scheme::Timestamped, b"b", now);
        let moved = sig.replacen(&format!("t={}", now.timestamp()), &format!("t={}", now.timestamp() - 1), 1);
        assert_eq!(
            verifier(Scheme::Timestamped).verify(&headers(&moved), b"b", now),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn malformed_headers_are_named() {
        let v = verifier(Scheme::Timestamped);
        for bad in ["v1=abc", "t=1", "t=x,v1=AAAA", "t=1,v1=***", "t=1,v1=AAAA"] {
            assert_eq!(v.verify(&headers(bad), b"b", Utc::now()).unwrap_err().code(), "malformed_signature", "{bad}");
        }
    }
}
