//! MailPace: `X-MailPace-Signature` is the strict base64 of an Ed25519
//! signature over the raw body, checked with the sending domain's public key
//! (strict base64, 32 bytes). A source may hold several keys: one per
//! domain, two during a rotation.
//!
//! The body is `{"event": "email.delivered", "payload": {...}}`. MailPace
//! sends no event id, so the id is derived from `payload.id`, `event` and
//! `payload.updated_at`.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hookbridge_event::Event;
use hookbridge_event::data::{Bounce, BounceKind, EmailData, Normalized, Rejection, address_list};
use hookbridge_event::taxonomy;
use http::HeaderMap;

use crate::batch::KeySet;
use crate::normalize::{self, Fields, SourceMeta};
use crate::{PayloadError, Provider, VerifyError};

pub const SIGNATURE_HEADER: &str = "x-mailpace-signature";
const HEADER_NAME: &str = "X-MailPace-Signature";

/// MailPace's documented events.
pub const EVENTS: &[&str] = &["email.queued", "email.delivered", "email.deferred", "email.bounced", "email.spam"];

/// Checks MailPace signatures against a set of domain public keys.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Arc<KeySet>,
}

/// Why a configured public key was refused (never showing the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("is not strict base64")]
    NotBase64,
    #[error("decodes to {0} bytes, an Ed25519 public key has 32")]
    WrongLength(usize),
    #[error("is not a valid Ed25519 public key")]
    NotAKey,
    #[error("is a weak (small-order) Ed25519 key")]
    Weak,
}

/// Parses a public key as MailPace shows it: strict base64 of 32 bytes.
///
/// # Errors
/// What is wrong with the key (never the key itself).
pub fn parse_public_key(b64: &str) -> Result<VerifyingKey, KeyError> {
    let bytes = STANDARD.decode(b64.trim()).map_err(|_| KeyError::NotBase64)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| KeyError::WrongLength(b.len()))?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::NotAKey)?;
    // A small-order key would accept forged signatures; with weak keys
    // refused here, RFC 8032 verification per request is as strict as
    // `verify_strict` for our purpose and skips its per-request point
    // decompression (about a tenth of the ingress's CPU under load).
    if key.is_weak() {
        return Err(KeyError::Weak);
    }
    Ok(key)
}

impl Verifier {
    /// A verifier over `keys`; weak (small-order) keys are dropped, so
    /// build keys with [`parse_public_key`] to have them reported.
    pub fn new(keys: Vec<VerifyingKey>) -> Self {
        Self { keys: Arc::new(KeySet::new(keys.into_iter().filter(|k| !k.is_weak()).collect())) }
    }

    fn signature(headers: &HeaderMap) -> Result<Signature, VerifyError> {
        let malformed = |detail: &'static str| VerifyError::MalformedSignature {
            header: HEADER_NAME.into(),
            detail: detail.into(),
        };
        let value = crate::hmac_sig::header_str(headers, SIGNATURE_HEADER)
            .ok_or(VerifyError::MissingSignature(HEADER_NAME.into()))?
            .map_err(|()| malformed("not visible ASCII"))?;
        let bytes = STANDARD.decode(value).map_err(|_| malformed("not strict base64"))?;
        Signature::from_slice(&bytes).map_err(|_| malformed("not a 64-byte Ed25519 signature"))
    }

    pub(crate) fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
        let signature = Self::signature(headers)?;
        if self.keys.verify_one(body, &signature) { Ok(()) } else { Err(VerifyError::InvalidSignature) }
    }

    pub(crate) async fn verify_batched(&self, headers: &HeaderMap, body: Bytes) -> Result<(), VerifyError> {
        let signature = Self::signature(headers)?;
        if crate::batch::verify(self.keys.clone(), body, signature).await {
            Ok(())
        } else {
            Err(VerifyError::InvalidSignature)
        }
    }
}

/// The `X-MailPace-Signature` value for `body`, as MailPace computes it.
pub fn sign(key: &SigningKey, body: &[u8]) -> String {
    STANDARD.encode(key.sign(body).to_bytes())
}

/// MailPace's name → the normalized type. Unknown names pass through.
pub fn normalized_type(event: &str) -> &str {
    match event {
        "email.spam" => taxonomy::EMAIL_REJECTED,
        other => other,
    }
}

pub(crate) fn normalize(body: &[u8], source: &SourceMeta, now: DateTime<Utc>) -> Result<Event, PayloadError> {
    let shape = |detail: &str| PayloadError::shape("mailpace", detail);
    let parsed = normalize::parse(body)?;
    let event = parsed
        .value
        .get("event")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| shape("`event` must be a non-empty string"))?;
    let payload =
        parsed.value.get("payload").filter(|p| p.is_object()).ok_or_else(|| shape("`payload` must be an object"))?;
    let payload_id = normalize::text(payload.get("id")).ok_or_else(|| shape("`payload.id` is missing"))?;
    let updated_at = payload.get("updated_at").and_then(|v| v.as_str());
    let id = match updated_at {
        Some(updated_at) => {
            normalize::derived_id("mp-", &[payload_id.as_bytes(), event.as_bytes(), updated_at.as_bytes()])
        }
        // Without updated_at two status changes could collide; the whole body
        // is still the same on a redelivery.
        None => normalize::derived_id("mp-", &[body]),
    };
    let ty = normalized_type(event);
    let mut data = EmailData {
        message_id: normalize::text(payload.get("message_id")),
        from: normalize::text(payload.get("from")),
        to: address_list(payload.get("to")),
        cc: address_list(payload.get("cc")),
        bcc: address_list(payload.get("bcc")),
        reply_to: normalize::text(payload.get("replyto")),
        subject: normalize::text(payload.get("subject")),
        tags: normalize::string_list(payload.get("tags")),
        ..EmailData::default()
    };
    match ty {
        taxonomy::EMAIL_BOUNCED => data.bounce = Some(Bounce { kind: BounceKind::Hard, code: None, message: None }),
        taxonomy::EMAIL_DEFERRED => data.bounce = Some(Bounce { kind: BounceKind::Soft, code: None, message: None }),
        taxonomy::EMAIL_REJECTED => data.rejection = Some(Rejection { reason: "spam".to_owned() }),
        _ => {}
    }
    let fields = Fields {
        id,
        ty: ty.to_owned(),
        provider_event: event.to_owned(),
        subject: data.message_id.clone().or(Some(payload_id)),
        time: normalize::time(payload.get("updated_at")).or_else(|| normalize::time(payload.get("created_at"))),
        normalized: Normalized::Email(data),
    };
    Ok(normalize::assemble(Provider::MailPace, fields, &parsed, source, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn headers(sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(sig).unwrap());
        h
    }

    #[test]
    fn verifies_with_any_configured_key() {
        let other = SigningKey::from_bytes(&[9; 32]);
        let v = Verifier::new(vec![other.verifying_key(), key().verifying_key()]);
        let body = br#"{"event":"email.queued"}"#;
        assert_eq!(v.verify(&headers(&sign(&key(), body)), body), Ok(()));
        assert_eq!(v.verify(&headers(&sign(&key(), b"other")), body), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn rejects_missing_and_malformed_signatures() {
        let v = Verifier::new(vec![key().verifying_key()]);
        assert_eq!(v.verify(&HeaderMap::new(), b"{}").unwrap_err().code(), "missing_signature");
        assert_eq!(v.verify(&headers("not base64!"), b"{}").unwrap_err().code(), "malformed_signature");
        assert_eq!(v.verify(&headers("AAAA"), b"{}").unwrap_err().code(), "malformed_signature");
    }

    #[test]
    fn public_keys_must_be_32_bytes_of_strict_base64() {
        let good = STANDARD.encode(key().verifying_key().to_bytes());
        assert!(parse_public_key(&good).is_ok());
        assert_eq!(parse_public_key("AAAA").unwrap_err(), KeyError::WrongLength(3));
        assert!(parse_public_key("%%%").is_err());
        // The identity point: small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(parse_public_key(&STANDARD.encode(identity)).unwrap_err(), KeyError::Weak);
    }

    #[test]
    fn non_canonical_signatures_are_rejected() {
        let v = Verifier::new(vec![key().verifying_key()]);
        let body = b"{}";
        let mut sig = STANDARD.decode(sign(&key(), body)).unwrap();
        // s + l: the same signature with a non-canonical scalar.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
            sig[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        assert_ne!(v.verify(&headers(&STANDARD.encode(&sig)), body), Ok(()));
    }
}
