//! One module per provider, each with the two things hookbridge does to its
//! webhooks: verify the signature on the raw body, then normalize the body
//! into an [`Event`]. Each module also signs sample webhooks exactly the way
//! the provider does, for `hookbridge send-sample`, the tests and the
//! benchmark.
//!
//! - [`mailpace`]: Ed25519 over the body, base64 signature and keys.
//! - [`mailpipe`]: hex HMAC-SHA256 over the body.
//! - [`whippy`]: HMAC-SHA256 in a configured scheme (hex, base64, or the
//!   timestamped `t=…,v1=…` form), because the format is unconfirmed.
//! - [`redact`]: removes configured fields from the original payload.

mod batch;
mod error;
mod hmac_sig;
pub mod mailpace;
pub mod mailpipe;
mod normalize;
mod redact;
pub mod samples;
mod settings;
pub mod whippy;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use hookbridge_event::Event;
use http::HeaderMap;

pub use error::{PayloadError, PayloadErrorKind, VerifyError, VerifyErrorKind};
pub use hmac_sig::HmacSecret;
pub use normalize::SourceMeta;
pub use redact::Redactor;
pub use settings::{SettingProblem, VerifierSettings};

/// The providers hookbridge understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    MailPace,
    Mailpipe,
    Whippy,
}

impl Provider {
    pub const ALL: [Self; 3] = [Self::MailPace, Self::Mailpipe, Self::Whippy];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MailPace => "mailpace",
            Self::Mailpipe => "mailpipe",
            Self::Whippy => "whippy",
        }
    }

    /// The provider's documented event names.
    pub fn events(self) -> &'static [&'static str] {
        match self {
            Self::MailPace => mailpace::EVENTS,
            Self::Mailpipe => mailpipe::EVENTS,
            Self::Whippy => whippy::EVENTS,
        }
    }

    /// The normalized types its documented events are published under, in
    /// the order of [`Provider::events`], each once. A name the provider
    /// adds later is published under its own name (not listed here).
    pub fn event_types(self) -> Vec<&'static str> {
        let mut types: Vec<&'static str> = Vec::new();
        for event in self.events() {
            let ty = match self {
                Self::MailPace => mailpace::normalized_type(event),
                Self::Mailpipe => mailpipe::normalized_type(event),
                Self::Whippy => event,
            };
            if !types.contains(&ty) {
                types.push(ty);
            }
        }
        types
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown provider `{s}` (expected one of: mailpace, mailpipe, whippy)"))
    }
}

/// How one configured source checks its webhooks' signatures.
#[derive(Debug)]
pub enum Verifier {
    MailPace(mailpace::Verifier),
    Mailpipe(mailpipe::Verifier),
    Whippy(whippy::Verifier),
}

impl Verifier {
    pub fn provider(&self) -> Provider {
        match self {
            Self::MailPace(_) => Provider::MailPace,
            Self::Mailpipe(_) => Provider::Mailpipe,
            Self::Whippy(_) => Provider::Whippy,
        }
    }

    /// Checks the request's signature over the raw `body`.
    ///
    /// # Errors
    /// [`VerifyError`] says whether the signature is missing, malformed,
    /// wrong, or (timestamped schemes) outside the tolerance.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Result<(), VerifyError> {
        match self {
            Self::MailPace(v) => v.verify(headers, body),
            Self::Mailpipe(v) => v.verify(headers, body),
            Self::Whippy(v) => v.verify(headers, body, now),
        }
    }

    /// [`verify`](Self::verify) for a server: Ed25519 signatures are
    /// verified in batches with the others in flight ([`batch`]); HMAC is
    /// cheap enough to check in place.
    ///
    /// # Errors
    /// As [`verify`](Self::verify).
    pub async fn verify_concurrent(
        &self,
        headers: &HeaderMap,
        body: &bytes::Bytes,
        now: DateTime<Utc>,
    ) -> Result<(), VerifyError> {
        match self {
            Self::MailPace(v) => v.verify_batched(headers, body.clone()).await,
            Self::Mailpipe(v) => v.verify(headers, body),
            Self::Whippy(v) => v.verify(headers, body, now),
        }
    }
}

/// Normalizes a verified webhook body from `provider` into an event.
///
/// # Errors
/// [`PayloadError`] when the body is not JSON or not this provider's shape.
pub fn normalize(
    provider: Provider,
    body: &[u8],
    source: &SourceMeta,
    now: DateTime<Utc>,
) -> Result<Event, PayloadError> {
    match provider {
        Provider::MailPace => mailpace::normalize(body, source, now),
        Provider::Mailpipe => mailpipe::normalize(body, source, now),
        Provider::Whippy => whippy::normalize(body, source, now),
    }
}
