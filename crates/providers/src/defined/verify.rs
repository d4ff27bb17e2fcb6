//! Verifying a request against a definition's authentication methods, with
//! the credentials a source configured.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature as EdSignature, Verifier as _, VerifyingKey};
use http::HeaderMap;
use ring::{hmac, signature};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use subtle::ConstantTimeEq;

use super::format::{Algorithm, AuthKind, Encoding, SecretFormat, SignatureFormat};
use super::{Auth, Definition, Location, Part};
use crate::VerifyError;
use crate::settings::{SettingProblem, VerifierSettings};

/// How long an accepted token is remembered, and how many at most.
const TOKEN_MEMORY: Duration = Duration::from_secs(24 * 3600);
const TOKEN_MEMORY_MAX: usize = 200_000;

/// What a verifier sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// The query string, without `?`.
    pub query: Option<&'a str>,
}

impl<'a> Request<'a> {
    pub fn new(headers: &'a HeaderMap, body: &'a [u8]) -> Self {
        Self { headers, body, query: None }
    }
}

/// A request that passed, and what to remember once its events are stored.
#[derive(Debug, Default)]
#[must_use]
pub struct Verified {
    token: Option<String>,
    /// What an SNS message was (SNS providers).
    pub sns: Option<super::sns::SnsOutcome>,
}

/// A source's verifier for a defined provider.
#[derive(Debug)]
pub struct Verifier {
    definition: Arc<Definition>,
    methods: Vec<(usize, Keys)>,
    webhook_url: Option<String>,
    tolerance: Option<Duration>,
    tokens: Option<Mutex<TokenMemory>>,
}

enum Keys {
    Hmac(Vec<hmac::Key>),
    Ed25519(Vec<VerifyingKey>),
    Ecdsa(Vec<Vec<u8>>),
    Basic(SecretString, SecretString),
    Token(Vec<SecretSlice<u8>>),
    Sns(Box<super::sns::SnsVerifier>),
    None,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, n) = match self {
            Self::Hmac(k) => ("hmac", k.len()),
            Self::Ed25519(k) => ("ed25519", k.len()),
            Self::Ecdsa(k) => ("ecdsa_p256", k.len()),
            Self::Basic(..) => ("basic", 1),
            Self::Token(k) => ("token", k.len()),
            Self::Sns(_) => ("sns", 0),
            Self::None => ("none", 0),
        };
        write!(f, "{kind}({n} keys, redacted)")
    }
}

#[derive(Debug, Default)]
struct TokenMemory {
    seen: HashSet<String>,
    order: VecDeque<(Instant, String)>,
}

impl TokenMemory {
    fn contains(&mut self, token: &str) -> bool {
        let now = Instant::now();
        while self.order.front().is_some_and(|(at, _)| now.duration_since(*at) > TOKEN_MEMORY) {
            if let Some((_, t)) = self.order.pop_front() {
                self.seen.remove(&t);
            }
        }
        self.seen.contains(token)
    }

    fn insert(&mut self, token: String) {
        if self.seen.insert(token.clone()) {
            self.order.push_back((Instant::now(), token));
            while self.order.len() > TOKEN_MEMORY_MAX {
                if let Some((_, t)) = self.order.pop_front() {
                    self.seen.remove(&t);
                }
            }
        }
    }
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> SettingProblem {
    SettingProblem { key: key.into(), message: message.into() }
}

fn decode(encoding: Encoding, text: &str) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Hex => hex::decode(text).ok(),
        Encoding::Base64 => STANDARD.decode(text).ok(),
        Encoding::Base64url => {
            URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok().or_else(|| URL_SAFE.decode(text).ok())
        }
    }
}

fn hmac_algorithm(algorithm: Algorithm) -> hmac::Algorithm {
    match algorithm {
        Algorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        Algorithm::Sha256 => hmac::HMAC_SHA256,
        Algorithm::Sha512 => hmac::HMAC_SHA512,
    }
}

/// A secret's key bytes as the definition's `secret_format` says.
pub(crate) fn secret_bytes(format: SecretFormat, secret: &str) -> Result<Vec<u8>, &'static str> {
    match format {
        SecretFormat::Raw => Ok(secret.as_bytes().to_vec()),
        SecretFormat::Whsec => STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
            .map_err(|_| "is not a whsec_ secret (whsec_ then base64)"),
        SecretFormat::Base64 => STANDARD.decode(secret).map_err(|_| "is not base64"),
        SecretFormat::Hex => hex::decode(secret).map_err(|_| "is not hex"),
    }
}

/// The DER prefix of a P-256 SubjectPublicKeyInfo before the 65-byte point.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A P-256 public key given as PEM, base64 SubjectPublicKeyInfo DER (how
/// SendGrid shows it), or base64 of the 65-byte uncompressed point.
pub(crate) fn p256_point(text: &str) -> Result<Vec<u8>, &'static str> {
    let body: String = if text.contains("-----BEGIN") {
        text.lines().filter(|l| !l.starts_with("-----")).collect::<String>()
    } else {
        text.split_whitespace().collect()
    };
    let der = STANDARD.decode(body).map_err(|_| "is not PEM or base64")?;
    let point = match der.strip_prefix(P256_SPKI_PREFIX) {
        Some(point) => point.to_vec(),
        None if der.len() == 65 => der,
        None => return Err("is not a P-256 public key (PKIX/SPKI DER or a 65-byte uncompressed point)"),
    };
    if point.len() != 65 || point[0] != 4 {
        return Err("is not an uncompressed P-256 point");
    }
    Ok(point)
}

/// The source's public keys parsed by `parse`; each bad one is a problem
/// at its index.
fn public_keys<K, E: std::fmt::Display>(
    settings: &VerifierSettings,
    problems: &mut Vec<SettingProblem>,
    parse: impl Fn(&str) -> Result<K, E>,
) -> Vec<K> {
    let mut keys = Vec::new();
    for (j, text) in settings.public_keys.iter().enumerate() {
        match parse(text) {
            Ok(key) => keys.push(key),
            Err(e) => problems.push(problem(format!("public_keys[{j}]"), format!("the key {e}"))),
        }
    }
    keys
}

/// The SubjectPublicKeyInfo DER of a 65-byte P-256 point.
pub(crate) fn p256_spki(point: &[u8]) -> Vec<u8> {
    [P256_SPKI_PREFIX, point].concat()
}

impl Verifier {
    /// The verifier of a source of `definition` with `settings`, or every
    /// problem with them.
    ///
    /// # Errors
    /// A method's credential malformed, or none of its methods configured.
    pub fn new(definition: Arc<Definition>, settings: &VerifierSettings) -> Result<Self, Vec<SettingProblem>> {
        let mut problems = Vec::new();
        let mut methods = Vec::new();
        // Whether a method takes the source's secrets (and may sign {url}).
        let mut secret_method = false;
        for (i, auth) in definition.auth.iter().enumerate() {
            let keys = match auth.kind {
                AuthKind::Hmac if settings.listed_secrets > 0 => {
                    secret_method = true;
                    let mut keys = Vec::new();
                    for (j, s) in settings.secrets.iter().enumerate() {
                        match secret_bytes(auth.secret_format, s) {
                            Ok(bytes) => keys.push(hmac::Key::new(hmac_algorithm(auth.algorithm), &bytes)),
                            Err(e) => problems.push(problem(format!("secrets[{j}]"), format!("the secret {e}"))),
                        }
                    }
                    Keys::Hmac(keys)
                }
                AuthKind::Token if settings.listed_secrets > 0 => {
                    secret_method = true;
                    Keys::Token(settings.secrets.iter().map(|s| SecretSlice::from(s.as_bytes().to_vec())).collect())
                }
                AuthKind::Ed25519 if settings.listed_public_keys > 0 => {
                    Keys::Ed25519(public_keys(settings, &mut problems, crate::mailpace::parse_public_key))
                }
                AuthKind::EcdsaP256 if settings.listed_public_keys > 0 => {
                    Keys::Ecdsa(public_keys(settings, &mut problems, p256_point))
                }
                AuthKind::Basic if settings.username.is_some() || settings.password.is_some() => {
                    match (&settings.username, &settings.password) {
                        (Some(u), Some(p)) => Keys::Basic(SecretString::from(u.clone()), SecretString::from(p.clone())),
                        (None, _) => {
                            problems
                                .push(problem("username", "basic authentication needs a username with the password"));
                            continue;
                        }
                        (_, None) => {
                            problems
                                .push(problem("password", "basic authentication needs a password with the username"));
                            continue;
                        }
                    }
                }
                AuthKind::Sns => {
                    let sns = settings.sns.clone().unwrap_or_default();
                    if sns.topic_arns.is_empty() {
                        problems.push(problem(
                            "topic_arns",
                            format!("{} accepts messages of the listed SNS topics only: list yours", definition.name),
                        ));
                    }
                    match super::sns::SnsVerifier::new(&sns) {
                        Ok(v) => Keys::Sns(Box::new(v)),
                        Err((key, message)) => {
                            problems.push(problem(key, message));
                            continue;
                        }
                    }
                }
                AuthKind::None => Keys::None,
                _ => continue,
            };
            methods.push((i, keys));
        }
        let kinds: Vec<AuthKind> = definition.auth.iter().map(|a| a.kind).collect();
        let takes_secrets = kinds.iter().any(|k| matches!(k, AuthKind::Hmac | AuthKind::Token));
        let takes_keys = kinds.iter().any(|k| matches!(k, AuthKind::Ed25519 | AuthKind::EcdsaP256));
        let takes_basic = kinds.contains(&AuthKind::Basic);
        let name = &definition.name;
        if settings.listed_secrets > 0 && !takes_secrets {
            problems
                .push(problem("secrets", format!("{name} takes no secrets ({})", definition.credentials().join(", "))));
        }
        if settings.listed_public_keys > 0 && !takes_keys {
            problems.push(problem(
                "public_keys",
                format!("{name} takes no public keys ({})", definition.credentials().join(", ")),
            ));
        }
        if (settings.username.is_some() || settings.password.is_some()) && !takes_basic {
            problems.push(problem("username", format!("{name} takes no basic authentication")));
        }
        let takes_sns = kinds.contains(&AuthKind::Sns);
        if settings.sns.is_some() && !takes_sns {
            problems.push(problem("topic_arns", format!("{name} is not an SNS provider")));
        }
        let only_none = methods.iter().all(|(_, k)| matches!(k, Keys::None));
        if only_none && !takes_sns {
            if kinds.contains(&AuthKind::None) {
                if !settings.allowed_ips && problems.is_empty() {
                    problems.push(problem(
                        "allowed_ips",
                        format!("{name} requests are not signed here: list the provider's addresses in allowed_ips"),
                    ));
                }
            } else {
                problems.push(problem(
                    definition.credentials().first().map_or("secrets", |c| c.split(' ').next().unwrap_or(c)),
                    format!("a {name} source needs {}", definition.credentials().join(" or ")),
                ));
            }
        } else {
            // A method without credentials must not open the door.
            methods.retain(|(_, k)| !matches!(k, Keys::None));
        }
        if definition.signs_url() && settings.webhook_url.is_none() && secret_method {
            problems.push(problem(
                "webhook_url",
                format!("{name} signs the URL it posts to: give it exactly as configured at the provider"),
            ));
        }
        if settings.webhook_url.is_some() && !definition.signs_url() {
            problems.push(problem("webhook_url", format!("{name} does not sign the URL")));
        }
        let has_timestamp = definition.auth.iter().any(|a| a.timestamp.is_some());
        if settings.timestamp_tolerance.is_some() && !has_timestamp {
            problems.push(problem("timestamp_tolerance", format!("{name} requests carry no timestamp")));
        }
        if settings.signature.is_some() {
            problems.push(problem("signature", "only whippy sources choose a signature scheme"));
        }
        let remembers = definition.auth.iter().any(|a| a.refuse_replayed_token);
        if problems.is_empty() {
            Ok(Self {
                tokens: remembers.then(|| Mutex::new(TokenMemory::default())),
                definition,
                methods,
                webhook_url: settings.webhook_url.clone(),
                tolerance: settings.timestamp_tolerance,
            })
        } else {
            Err(problems)
        }
    }

    pub fn definition(&self) -> &Arc<Definition> {
        &self.definition
    }

    /// Checks `request` with each configured method; one must pass.
    ///
    /// # Errors
    /// The most telling failure: a wrong signature over a missing one.
    pub fn verify(&self, request: &Request<'_>, now: DateTime<Utc>) -> Result<Verified, VerifyError> {
        let mut first_error: Option<VerifyError> = None;
        for (i, keys) in &self.methods {
            let auth = &self.definition.auth[*i];
            match self.check(auth, keys, request, now) {
                Ok(verified) => return Ok(verified),
                Err(e) => {
                    let telling = !matches!(e, VerifyError::MissingSignature(_) | VerifyError::MissingCredentials(_));
                    if first_error.is_none() || telling && first_error.as_ref().is_some_and(is_missing) {
                        first_error = Some(e);
                    }
                }
            }
        }
        Err(first_error.unwrap_or(VerifyError::InvalidSignature))
    }

    /// [`verify`](Self::verify), with what needs the network (SNS
    /// certificates, subscription confirmation).
    ///
    /// # Errors
    /// As [`verify`](Self::verify).
    pub async fn verify_async(&self, request: &Request<'_>, now: DateTime<Utc>) -> Result<Verified, VerifyError> {
        for (_, keys) in &self.methods {
            if let Keys::Sns(sns) = keys {
                let outcome = sns.verify(request.body).await?;
                return Ok(Verified { token: None, sns: Some(outcome) });
            }
        }
        self.verify(request, now)
    }

    /// Remembers what must not be accepted twice; call once the request's
    /// events are stored (so a retry after a 503 is still accepted).
    pub fn accepted(&self, verified: Verified) {
        if let (Some(memory), Some(token)) = (&self.tokens, verified.token) {
            memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(token);
        }
    }

    fn check(
        &self,
        auth: &Auth,
        keys: &Keys,
        request: &Request<'_>,
        now: DateTime<Utc>,
    ) -> Result<Verified, VerifyError> {
        match keys {
            Keys::None => Ok(Verified::default()),
            Keys::Sns(_) => Err(VerifyError::CertificateUnavailable),
            Keys::Basic(user, password) => check_basic(request.headers, user, password),
            Keys::Token(tokens) => {
                let location = auth.token.as_ref().expect("compiled: a token method has a location");
                let value = find(location, request, None)
                    .ok_or_else(|| VerifyError::MissingCredentials(location.describe().into()))?;
                let value = match &auth.token_prefix {
                    Some(prefix) => {
                        strip_prefix_ignore_case(&value, prefix).ok_or(VerifyError::InvalidCredentials)?.to_owned()
                    }
                    None => value.into_owned(),
                };
                let matched =
                    tokens.iter().fold(false, |ok, t| bool::from(t.expose_secret().ct_eq(value.as_bytes())) | ok);
                if matched { Ok(Verified::default()) } else { Err(VerifyError::InvalidCredentials) }
            }
            Keys::Hmac(_) | Keys::Ed25519(_) | Keys::Ecdsa(_) => self.check_signature(auth, keys, request, now),
        }
    }

    fn check_signature(
        &self,
        auth: &Auth,
        keys: &Keys,
        request: &Request<'_>,
        now: DateTime<Utc>,
    ) -> Result<Verified, VerifyError> {
        let location = auth.signature.as_ref().expect("compiled: a signing method has a signature");
        let what: Cow<'static, str> = location.describe().into();
        // The body is parsed once for every value a method reads from it.
        let in_body = [&auth.signature, &auth.timestamp, &auth.id, &auth.token]
            .into_iter()
            .any(|l| matches!(l, Some(Location::Json(_))));
        let json: Option<serde_json::Value> = if in_body { serde_json::from_slice(request.body).ok() } else { None };
        let find = |location: &Location| find(location, request, json.as_ref());
        let raw = find(location).ok_or_else(|| VerifyError::MissingSignature(what.clone()))?;
        let malformed =
            |detail: &'static str| VerifyError::MalformedSignature { header: what.clone(), detail: detail.into() };
        // Several values of one key (a rotation) arrive joined by commas.
        let separator = match (&auth.signature_separator, location) {
            (Some(sep), _) => Some(sep.as_str()),
            (None, Location::HeaderKey(..)) => Some(","),
            (None, _) => None,
        };
        let pieces: Vec<&str> = match separator {
            Some(sep) => raw.split(sep).map(str::trim).filter(|s| !s.is_empty()).collect(),
            None => vec![raw.trim()],
        };
        let candidates: Vec<Vec<u8>> = pieces
            .into_iter()
            .filter_map(|piece| match &auth.signature_prefix {
                Some(prefix) => piece.strip_prefix(prefix.as_str()),
                None => Some(piece),
            })
            .filter_map(|piece| decode(auth.encoding, piece))
            .collect();
        if candidates.is_empty() {
            return Err(malformed("no signature in the expected encoding"));
        }
        let timestamp = match &auth.timestamp {
            Some(loc) => {
                let value = find(loc).ok_or_else(|| VerifyError::MissingSignature(loc.describe().into()))?;
                if let Some(tolerance) = self.tolerance.or(auth.tolerance) {
                    let seconds = value.trim().parse::<f64>().map_err(|_| VerifyError::MalformedSignature {
                        header: loc.describe().into(),
                        detail: "not Unix seconds".into(),
                    })?;
                    let age = (now.timestamp() as f64 - seconds).abs();
                    if !age.is_finite() || age > tolerance.as_secs_f64() {
                        return Err(VerifyError::StaleTimestamp);
                    }
                }
                Some(value)
            }
            None => None,
        };
        let id = auth.id.as_ref().and_then(find);
        let token = auth.token.as_ref().and_then(find);
        for (part, value, loc) in [(super::Part::Id, &id, &auth.id), (super::Part::Token, &token, &auth.token)] {
            if auth.signed.contains(&part) && value.is_none() {
                let name = loc.as_ref().map_or_else(String::new, Location::describe);
                return Err(VerifyError::MissingSignature(name.into()));
            }
        }
        let message = self.signed_content(auth, request, timestamp.as_deref(), id.as_deref(), token.as_deref());
        let valid = match keys {
            Keys::Hmac(secrets) => candidates.iter().any(|sig| {
                // Every secret is tried, so the time does not tell which matched.
                secrets.iter().fold(false, |ok, key| hmac::verify(key, &message, sig).is_ok() | ok)
            }),
            Keys::Ed25519(verifying) => candidates.iter().any(|sig| {
                EdSignature::from_slice(sig).is_ok_and(|sig| verifying.iter().any(|k| k.verify(&message, &sig).is_ok()))
            }),
            Keys::Ecdsa(points) => {
                let alg: &dyn signature::VerificationAlgorithm = match auth.signature_format {
                    SignatureFormat::Der => &signature::ECDSA_P256_SHA256_ASN1,
                    SignatureFormat::Raw => &signature::ECDSA_P256_SHA256_FIXED,
                };
                candidates.iter().any(|sig| {
                    points
                        .iter()
                        .any(|point| signature::UnparsedPublicKey::new(alg, point).verify(&message, sig).is_ok())
                })
            }
            _ => false,
        };
        if !valid {
            return Err(VerifyError::InvalidSignature);
        }
        if auth.refuse_replayed_token {
            let token = token.map(Cow::into_owned);
            if let (Some(memory), Some(t)) = (&self.tokens, &token)
                && memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(t)
            {
                return Err(VerifyError::Replayed);
            }
            return Ok(Verified { token, sns: None });
        }
        Ok(Verified::default())
    }

    fn signed_content(
        &self,
        auth: &Auth,
        request: &Request<'_>,
        timestamp: Option<&str>,
        id: Option<&str>,
        token: Option<&str>,
    ) -> Vec<u8> {
        signed_content(&auth.signed, request.body, timestamp, id, token, self.webhook_url.as_deref())
    }
}

fn is_missing(e: &VerifyError) -> bool {
    matches!(e, VerifyError::MissingSignature(_) | VerifyError::MissingCredentials(_))
}

/// The signed content of a request (also used to sign samples).
pub(crate) fn signed_content(
    parts: &[Part],
    body: &[u8],
    timestamp: Option<&str>,
    id: Option<&str>,
    token: Option<&str>,
    url: Option<&str>,
) -> Vec<u8> {
    let mut message = Vec::with_capacity(body.len() + 64);
    for part in parts {
        match part {
            Part::Literal(text) => message.extend_from_slice(text.as_bytes()),
            Part::Body => message.extend_from_slice(body),
            Part::Timestamp => message.extend_from_slice(timestamp.unwrap_or_default().as_bytes()),
            Part::Id => message.extend_from_slice(id.unwrap_or_default().as_bytes()),
            Part::Token => message.extend_from_slice(token.unwrap_or_default().as_bytes()),
            Part::Url => message.extend_from_slice(url.unwrap_or_default().as_bytes()),
            Part::SortedForm => {
                let mut pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> = form_urlencoded::parse(body).collect();
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
                for (k, v) in pairs {
                    message.extend_from_slice(k.as_bytes());
                    message.extend_from_slice(v.as_bytes());
                }
            }
        }
    }
    message
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| value[prefix.len()..].trim())
}

fn check_basic(headers: &HeaderMap, user: &SecretString, password: &SecretString) -> Result<Verified, VerifyError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| VerifyError::MissingCredentials("Authorization".into()))?
        .to_str()
        .map_err(|_| VerifyError::InvalidCredentials)?;
    let encoded = strip_prefix_ignore_case(value, "Basic ").ok_or(VerifyError::InvalidCredentials)?;
    let decoded = STANDARD.decode(encoded).map_err(|_| VerifyError::InvalidCredentials)?;
    let (u, p) = match decoded.iter().position(|&b| b == b':') {
        Some(at) => (&decoded[..at], &decoded[at + 1..]),
        None => return Err(VerifyError::InvalidCredentials),
    };
    let ok = u.ct_eq(user.expose_secret().as_bytes()) & p.ct_eq(password.expose_secret().as_bytes());
    if bool::from(ok) { Ok(Verified::default()) } else { Err(VerifyError::InvalidCredentials) }
}

/// The value at `location` in the request, as text; `json` is the body
/// already parsed, when the caller has it.
pub(crate) fn find<'a>(
    location: &Location,
    request: &Request<'a>,
    json: Option<&serde_json::Value>,
) -> Option<Cow<'a, str>> {
    match location {
        Location::Header(names) => names
            .iter()
            .find_map(|n| request.headers.get(n.as_str()))
            .and_then(|v| v.to_str().ok())
            .map(|v| Cow::Borrowed(v.trim())),
        Location::HeaderKey(names, key) => {
            let header = names.iter().find_map(|n| request.headers.get(n.as_str()))?.to_str().ok()?;
            let values: Vec<&str> = header
                .split(',')
                .filter_map(|pair| pair.trim().split_once('='))
                .filter(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim())
                .collect();
            (!values.is_empty()).then(|| Cow::Owned(values.join(",")))
        }
        Location::Json(pointer) => {
            let parsed;
            let value = match json {
                Some(value) => value,
                None => {
                    parsed = serde_json::from_slice::<serde_json::Value>(request.body).ok()?;
                    &parsed
                }
            };
            pointer.find(value).and_then(super::pointer::text).map(Cow::Owned)
        }
        Location::Form(field) => {
            form_urlencoded::parse(request.body).find(|(k, _)| k == field).map(|(_, v)| Cow::Owned(v.into_owned()))
        }
        Location::Query(param) => form_urlencoded::parse(request.query?.as_bytes())
            .find(|(k, _)| k == param)
            .map(|(_, v)| Cow::Owned(v.into_owned())),
    }
}

/// One line saying how a method works, for `providers show`.
pub(crate) fn describe(auth: &Auth) -> String {
    let signed = || {
        auth.signed
            .iter()
            .map(|p| match p {
                Part::Literal(t) => t.clone(),
                Part::Body => "{body}".into(),
                Part::Timestamp => "{timestamp}".into(),
                Part::Id => "{id}".into(),
                Part::Token => "{token}".into(),
                Part::Url => "{url}".into(),
                Part::SortedForm => "{sorted_form}".into(),
            })
            .collect::<String>()
    };
    let encoding = match auth.encoding {
        Encoding::Hex => "hex",
        Encoding::Base64 => "base64",
        Encoding::Base64url => "base64url",
    };
    let located = |l: &Option<Location>| l.as_ref().map_or_else(String::new, Location::describe);
    let mut line = match auth.kind {
        AuthKind::Hmac => format!(
            "HMAC-{} ({encoding}) of `{}` in {}",
            match auth.algorithm {
                Algorithm::Sha1 => "SHA1",
                Algorithm::Sha256 => "SHA256",
                Algorithm::Sha512 => "SHA512",
            },
            signed(),
            located(&auth.signature)
        ),
        AuthKind::Ed25519 => format!("Ed25519 ({encoding}) of `{}` in {}", signed(), located(&auth.signature)),
        AuthKind::EcdsaP256 => format!(
            "ECDSA P-256 SHA-256 ({encoding} {}) of `{}` in {}",
            match auth.signature_format {
                SignatureFormat::Der => "DER",
                SignatureFormat::Raw => "raw r||s",
            },
            signed(),
            located(&auth.signature)
        ),
        AuthKind::Basic => "HTTP basic authentication (username, password)".into(),
        AuthKind::Token => format!(
            "a token in {}{}",
            located(&auth.token),
            auth.token_prefix.as_ref().map(|p| format!(" after `{}`", p.trim())).unwrap_or_default()
        ),
        AuthKind::Sns => "Amazon SNS signature (RSA SHA1 v1 / SHA256 v2) against the certificate at SigningCertURL (https, an SNS host); TopicArn allow-list (topic_arns)".into(),
        AuthKind::None => "none: only the source's allowed_ips".into(),
    };
    if let (Some(ts), true) =
        (&auth.timestamp, matches!(auth.kind, AuthKind::Hmac | AuthKind::Ed25519 | AuthKind::EcdsaP256))
    {
        line.push_str(&format!("; timestamp in {}", ts.describe()));
        if let Some(t) = auth.tolerance {
            line.push_str(&format!(", {} tolerance", humantime::format_duration(t)));
        }
    }
    if auth.secret_format == SecretFormat::Whsec {
        line.push_str("; whsec_ secrets");
    }
    if auth.refuse_replayed_token {
        line.push_str("; a token seen twice is refused");
    }
    line
}
