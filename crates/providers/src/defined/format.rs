//! The provider definition file as written (TOML): see
//! `docs/provider-definitions.md`. [`super::compile`] checks it and turns it
//! into a [`super::Definition`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefinition {
    pub name: String,
    pub title: Option<String>,
    /// The provider's documentation of its webhooks.
    pub docs: Option<String>,
    /// The steps in the provider's dashboard, for `providers show` and the docs.
    #[serde(default)]
    pub setup: Vec<String>,
    /// Facts this definition relies on that are not confirmed by the
    /// provider's documentation or public verifier code.
    #[serde(default)]
    pub unconfirmed: Vec<String>,
    /// Ways a request may prove where it comes from; a source enables those
    /// it has credentials for, and a request passes when one of them does.
    #[serde(default)]
    pub auth: Vec<RawAuth>,
    #[serde(default)]
    pub body: RawBody,
    pub event: RawEvent,
    #[serde(default)]
    pub events: Vec<RawRule>,
    /// One body element (JSON) for samples; the values at the event's
    /// pointers are replaced per sample.
    pub sample: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AuthKind {
    Hmac,
    Ed25519,
    EcdsaP256,
    Basic,
    Token,
    /// An Amazon SNS message signature (the body is the SNS envelope).
    Sns,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Encoding {
    Hex,
    Base64,
    Base64url,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SignatureFormat {
    /// ASN.1 DER `SEQUENCE { r, s }`.
    Der,
    /// `r ‖ s`, 64 bytes.
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SecretFormat {
    /// The secret's bytes as written.
    #[default]
    Raw,
    /// Standard Webhooks: `whsec_` then base64 (the prefix is optional).
    Whsec,
    Base64,
    Hex,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    #[serde(rename = "type")]
    pub kind: AuthKind,
    pub algorithm: Option<Algorithm>,
    pub encoding: Option<Encoding>,
    pub signature: Option<RawLocation>,
    /// Text before each signature value (`sha256=`, `v1,`), removed before decoding.
    pub signature_prefix: Option<String>,
    /// Several signatures in one value, split on this (Standard Webhooks: a space).
    pub signature_separator: Option<String>,
    /// ECDSA only.
    pub signature_format: Option<SignatureFormat>,
    pub timestamp: Option<RawLocation>,
    #[serde(default, with = "humantime_serde")]
    pub tolerance: Option<Duration>,
    pub id: Option<RawLocation>,
    /// `token` auth: where the token is; `hmac`: a signed token (`{token}`).
    pub token: Option<RawLocation>,
    /// `token` auth: text before the token (`Bearer `).
    pub token_prefix: Option<String>,
    /// The signed content, e.g. `{timestamp}{body}`.
    pub signed: Option<String>,
    #[serde(default)]
    pub secret_format: SecretFormat,
    /// Refuse a `{token}` already accepted (Mailgun).
    #[serde(default)]
    pub refuse_replayed_token: bool,
}

/// Where a value is in a request: exactly one of these.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLocation {
    /// A header, or several names of which the first present is read.
    pub header: Option<OneOrMany>,
    /// With `header`: the value of `key=` in a header of comma-separated
    /// `key=value` pairs (`Stripe-Signature: t=…,v1=…`); a key given several
    /// times gives several values.
    pub key: Option<String>,
    /// A JSON pointer into the body.
    pub json: Option<String>,
    /// A field of a form body.
    pub form: Option<String>,
    /// A query parameter.
    pub query: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Shape {
    /// One JSON object: one event.
    #[default]
    Json,
    /// A JSON array: one event per element.
    JsonArray,
    /// Either of the two.
    JsonOrArray,
    /// A form whose `field` holds a JSON array (or object).
    FormJson,
    /// An Amazon SNS envelope whose `Message` is the JSON event; the
    /// envelope's fields are readable at `/$envelope/...`.
    Sns,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBody {
    #[serde(default)]
    pub shape: Shape,
    pub field: Option<String>,
    /// Skip elements without an event name instead of refusing the request
    /// (a provider's empty test batch).
    #[serde(default)]
    pub ignore_unnamed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TimeFormat {
    /// A number or digits: Unix seconds (fractions allowed); otherwise
    /// RFC 3339, or `YYYY-MM-DD hh:mm:ss` in UTC.
    #[default]
    Auto,
    Unix,
    UnixMs,
    Rfc3339,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEvent {
    /// The event id: pointer(s) into the element, or `{ header = … }`.
    pub id: Option<RawField>,
    /// Without an id: the pointers whose values make a stable one; `{event}`
    /// stands for the event name (by default it comes first).
    #[serde(default)]
    pub id_from: Vec<String>,
    /// The derived id's prefix; default `<name>-`.
    pub id_prefix: Option<String>,
    /// The provider's event name.
    #[serde(rename = "type")]
    pub ty: OneOrMany,
    pub time: Option<OneOrMany>,
    #[serde(default)]
    pub time_format: TimeFormat,
    /// The provider's message id.
    pub subject: Option<OneOrMany>,
    #[serde(default)]
    pub data: BTreeMap<String, OneOrMany>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawField {
    Pointers(OneOrMany),
    Located(RawLocation),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    /// The provider's event name.
    pub name: String,
    /// Only when the element has these values (pointer = text).
    #[serde(default)]
    pub when: BTreeMap<String, String>,
    /// The normalized type.
    #[serde(rename = "type")]
    pub ty: String,
    /// A fixed bounce kind (`hard`, `soft`).
    pub bounce: Option<String>,
    /// The bounce kind by the value at `data.bounce_kind`.
    #[serde(default)]
    pub bounce_kinds: BTreeMap<String, String>,
    /// `email.rejected`: the reason, when the payload says none.
    pub reason: Option<String>,
}
