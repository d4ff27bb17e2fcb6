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
pub mod defined;
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
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hookbridge_event::Event;
use http::HeaderMap;

pub use defined::{Catalogue, Definition, DefinitionProblem, Request, Verified};
pub use error::{PayloadError, PayloadErrorKind, VerifyError, VerifyErrorKind};
pub use hmac_sig::HmacSecret;
pub use normalize::SourceMeta;
pub use redact::Redactor;
pub use settings::{SettingProblem, VerifierSettings};

/// The providers hookbridge understands: three in code, the others from
/// their definitions ([`defined`]).
#[derive(Debug, Clone)]
pub enum Provider {
    MailPace,
    Mailpipe,
    Whippy,
    Defined(Arc<Definition>),
}

impl PartialEq for Provider {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Provider {}

impl Hash for Provider {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

/// A name that lives as long as the process: a definition's, interned once
/// when it is read (metric labels and error texts want `&'static str`).
pub(crate) fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(found) = names.iter().find(|n| **n == name) {
        return found;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.push(leaked);
    leaked
}

/// The built-in catalogue, compiled once.
pub fn builtin_catalogue() -> &'static Catalogue {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE.get_or_init(Catalogue::builtin)
}

impl Provider {
    /// The providers written in code.
    pub const ALL: [Self; 3] = [Self::MailPace, Self::Mailpipe, Self::Whippy];

    /// Every built-in provider: the three in code, then the catalogue.
    pub fn builtin() -> Vec<Self> {
        Self::ALL.into_iter().chain(builtin_catalogue().iter().map(|d| Self::Defined(d.clone()))).collect()
    }

    /// The provider named `name` in `catalogue` (or in code).
    pub fn lookup(name: &str, catalogue: &Catalogue) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .or_else(|| catalogue.get(name).map(|d| Self::Defined(d.clone())))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::MailPace => "mailpace",
            Self::Mailpipe => "mailpipe",
            Self::Whippy => "whippy",
            Self::Defined(d) => &d.name,
        }
    }

    /// The name for the life of the process (a metric label).
    pub fn static_name(&self) -> &'static str {
        match self {
            Self::MailPace => "mailpace",
            Self::Mailpipe => "mailpipe",
            Self::Whippy => "whippy",
            Self::Defined(d) => d.label,
        }
    }

    /// The provider's documented event names.
    pub fn events(&self) -> Vec<&str> {
        match self {
            Self::MailPace => mailpace::EVENTS.to_vec(),
            Self::Mailpipe => mailpipe::EVENTS.to_vec(),
            Self::Whippy => whippy::EVENTS.to_vec(),
            Self::Defined(d) => d.events(),
        }
    }

    /// The normalized types its documented events are published under, in
    /// the order of [`Provider::events`], each once. A name the provider
    /// adds later is published under its own name (not listed here).
    pub fn event_types(&self) -> Vec<&str> {
        if let Self::Defined(d) = self {
            return d.event_types();
        }
        let mut types: Vec<&str> = Vec::new();
        for event in self.events() {
            let ty = match self {
                Self::MailPace => mailpace::normalized_type(event),
                Self::Mailpipe => mailpipe::normalized_type(event),
                _ => event,
            };
            if !types.contains(&ty) {
                types.push(ty);
            }
        }
        types
    }

    /// This provider's verifier for a source's `settings`, or every problem
    /// with them: its definition's rules, or a code provider's
    /// (`settings.rs`).
    ///
    /// # Errors
    /// Each key that is missing, refused by this provider, or malformed.
    pub fn verifier(&self, settings: &VerifierSettings) -> Result<Verifier, Vec<SettingProblem>> {
        match self {
            Self::Defined(definition) => defined::Verifier::new(definition.clone(), settings).map(Verifier::Defined),
            code => code.code_verifier(settings),
        }
    }

    /// Whether one request may carry several events.
    pub fn batches(&self) -> bool {
        matches!(self, Self::Defined(d) if d.batches())
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = String;

    /// A built-in provider (user definitions: [`Provider::lookup`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::lookup(s, builtin_catalogue()).ok_or_else(|| {
            let names: Vec<String> = Self::builtin().iter().map(|p| p.as_str().to_owned()).collect();
            format!("unknown provider `{s}` (expected one of: {})", names.join(", "))
        })
    }
}

/// How one configured source checks its webhooks' signatures.
#[derive(Debug)]
pub enum Verifier {
    MailPace(mailpace::Verifier),
    Mailpipe(mailpipe::Verifier),
    Whippy(whippy::Verifier),
    Defined(defined::Verifier),
}

impl Verifier {
    pub fn provider(&self) -> Provider {
        match self {
            Self::MailPace(_) => Provider::MailPace,
            Self::Mailpipe(_) => Provider::Mailpipe,
            Self::Whippy(_) => Provider::Whippy,
            Self::Defined(v) => Provider::Defined(v.definition().clone()),
        }
    }

    /// Checks the request's signature (or credentials) over the raw body.
    ///
    /// # Errors
    /// [`VerifyError`] says whether the signature is missing, malformed,
    /// wrong, or (timestamped schemes) outside the tolerance.
    pub fn verify(&self, request: &Request<'_>, now: DateTime<Utc>) -> Result<Verified, VerifyError> {
        let (headers, body) = (request.headers, request.body);
        match self {
            Self::MailPace(v) => v.verify(headers, body).map(|()| Verified::default()),
            Self::Mailpipe(v) => v.verify(headers, body).map(|()| Verified::default()),
            Self::Whippy(v) => v.verify(headers, body, now).map(|()| Verified::default()),
            Self::Defined(v) => v.verify(request, now),
        }
    }

    /// [`verify`](Self::verify) for a server: Ed25519 signatures are
    /// verified in batches with the others in flight ([`batch`]); the rest
    /// are cheap enough to check in place.
    ///
    /// # Errors
    /// As [`verify`](Self::verify).
    pub async fn verify_concurrent(
        &self,
        headers: &HeaderMap,
        body: &Bytes,
        query: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Verified, VerifyError> {
        match self {
            Self::MailPace(v) => v.verify_batched(headers, body.clone()).await.map(|()| Verified::default()),
            Self::Defined(v) => v.verify_async(&Request { headers, body, query }, now).await,
            other => other.verify(&Request { headers, body, query }, now),
        }
    }

    /// Remembers what must not be accepted twice (a replayed token), once
    /// the request's events are stored.
    pub fn accepted(&self, verified: Verified) {
        if let Self::Defined(v) = self {
            v.accepted(verified);
        }
    }
}

/// Normalizes a verified webhook from `provider` into its events: one, or
/// one per element of a batch (none for an empty batch).
///
/// # Errors
/// [`PayloadError`] when the body is not JSON or not this provider's shape.
pub fn normalize_all(
    provider: &Provider,
    request: &Request<'_>,
    source: &SourceMeta,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, PayloadError> {
    match provider {
        Provider::Defined(d) => defined::normalize(d, request, source, now),
        other => normalize(other, request.body, source, now).map(|e| vec![e]),
    }
}

/// Normalizes a verified webhook body from `provider` into one event (the
/// first of a batch).
///
/// # Errors
/// [`PayloadError`] when the body is not JSON or not this provider's shape,
/// or holds no event.
pub fn normalize(
    provider: &Provider,
    body: &[u8],
    source: &SourceMeta,
    now: DateTime<Utc>,
) -> Result<Event, PayloadError> {
    match provider {
        Provider::MailPace => mailpace::normalize(body, source, now),
        Provider::Mailpipe => mailpipe::normalize(body, source, now),
        Provider::Whippy => whippy::normalize(body, source, now),
        Provider::Defined(d) => {
            let headers = HeaderMap::new();
            defined::normalize(d, &Request { headers: &headers, body, query: None }, source, now)?
                .into_iter()
                .next()
                .ok_or_else(|| PayloadError::shape(d.label, "the body holds no event"))
        }
    }
}
