//! Mailpipe: `X-Mailpipe-Signature` is the lowercase hex HMAC-SHA256 of the
//! raw body, keyed with the endpoint secret. Several secrets may be
//! configured for a rotation.
//!
//! The body is `{"id": "evt_…", "type": "…", "created_at": "…", "data": {…}}`;
//! `id` is the event id.

use chrono::{DateTime, Utc};
use hookbridge_event::Event;
use hookbridge_event::data::{Bounce, BounceKind, DomainData, EmailData, Normalized, ResourceData, address_list};
use hookbridge_event::taxonomy;
use http::HeaderMap;
use serde_json::Value;

use crate::hmac_sig::{HmacSecret, header_str, verify_any};
use crate::normalize::{self, Fields, SourceMeta};
use crate::{PayloadError, Provider, VerifyError};

pub const SIGNATURE_HEADER: &str = "x-mailpipe-signature";
const HEADER_NAME: &str = "X-Mailpipe-Signature";

/// Mailpipe's documented events.
pub const EVENTS: &[&str] = &["email.received", "email.sent", "email.bounced", "email.opened", "domain.verified"];

#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<HmacSecret>,
}

impl Verifier {
    pub fn new(secrets: Vec<HmacSecret>) -> Self {
        Self { secrets }
    }

    pub(crate) fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
        let malformed = |detail: &'static str| VerifyError::MalformedSignature {
            header: HEADER_NAME.into(),
            detail: detail.into(),
        };
        let value = header_str(headers, SIGNATURE_HEADER)
            .ok_or(VerifyError::MissingSignature(HEADER_NAME.into()))?
            .map_err(|()| malformed("not visible ASCII"))?;
        let tag = hex::decode(value).map_err(|_| malformed("not hex"))?;
        if tag.len() != 32 {
            return Err(malformed("not a 32-byte HMAC-SHA256 digest"));
        }
        if verify_any(&self.secrets, &[body], &tag) { Ok(()) } else { Err(VerifyError::InvalidSignature) }
    }
}

/// The `X-Mailpipe-Signature` value for `body`.
pub fn sign(secret: &HmacSecret, body: &[u8]) -> String {
    hex::encode(secret.sign(&[body]))
}

pub fn normalized_type(event: &str) -> &str {
    match event {
        "email.sent" => taxonomy::EMAIL_DELIVERED,
        other => other,
    }
}

fn bounce_kind(value: Option<&Value>) -> BounceKind {
    match value.and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
        Some("hard") => BounceKind::Hard,
        Some("soft") => BounceKind::Soft,
        _ => BounceKind::Unknown,
    }
}

pub(crate) fn normalize(body: &[u8], source: &SourceMeta, now: DateTime<Utc>) -> Result<Event, PayloadError> {
    let shape = |detail: &str| PayloadError::shape("mailpipe", detail);
    let parsed = normalize::parse(body)?;
    let root = &parsed.value;
    let id = normalize::text(root.get("id")).ok_or_else(|| shape("`id` must be a non-empty string"))?;
    let event = root
        .get("type")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| shape("`type` must be a non-empty string"))?;
    let data = root.get("data").filter(|d| d.is_object()).ok_or_else(|| shape("`data` must be an object"))?;
    let ty = normalized_type(event);
    let message_id = normalize::text(data.get("message_id"));
    let (normalized, subject) = if ty.starts_with("email.") {
        let mut to = address_list(data.get("to"));
        if to.is_empty() {
            to = address_list(data.get("recipient"));
        }
        let mut email = EmailData {
            message_id: message_id.clone(),
            from: normalize::text(data.get("from")),
            to,
            cc: address_list(data.get("cc")),
            bcc: address_list(data.get("bcc")),
            reply_to: normalize::text(data.get("reply_to")),
            subject: normalize::text(data.get("subject")),
            tags: normalize::string_list(data.get("tags")),
            ..EmailData::default()
        };
        if ty == taxonomy::EMAIL_BOUNCED {
            email.bounce = Some(Bounce {
                kind: bounce_kind(data.get("bounce_type")),
                code: normalize::text(data.get("bounce_code")),
                message: normalize::text(data.get("bounce_message")),
            });
        }
        (Normalized::Email(email), message_id)
    } else if ty.starts_with("domain.") {
        let domain = DomainData {
            domain: normalize::text(data.get("domain")).or_else(|| normalize::text(data.get("name"))),
            domain_id: normalize::text(data.get("domain_id")).or_else(|| normalize::text(data.get("id"))),
        };
        let subject = domain.domain.clone().or_else(|| domain.domain_id.clone());
        (Normalized::Domain(domain), subject)
    } else {
        let resource_id = normalize::text(data.get("id")).or(message_id);
        (Normalized::Resource(ResourceData { resource_id: resource_id.clone() }), resource_id)
    };
    let fields = Fields {
        id,
        ty: ty.to_owned(),
        provider_event: event.to_owned(),
        subject,
        time: normalize::time(root.get("created_at")),
        normalized,
    };
    Ok(normalize::assemble(Provider::Mailpipe, fields, &parsed, source, now))
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

    #[test]
    fn verifies_hex_hmac_with_rotation() {
        let old = HmacSecret::new(b"old".to_vec());
        let new = HmacSecret::new(b"new".to_vec());
        let v = Verifier::new(vec![old, new.clone()]);
        let body = b"{}";
        assert_eq!(v.verify(&headers(&sign(&new, body)), body), Ok(()));
        assert_eq!(v.verify(&headers(&sign(&new, body).to_uppercase()), body), Ok(()));
        let stranger = HmacSecret::new(b"x".to_vec());
        assert_eq!(v.verify(&headers(&sign(&stranger, body)), body), Err(VerifyError::InvalidSignature));
        assert_eq!(v.verify(&headers("zz"), body).unwrap_err().code(), "malformed_signature");
        assert_eq!(v.verify(&headers("abcd"), body).unwrap_err().code(), "malformed_signature");
    }
}
