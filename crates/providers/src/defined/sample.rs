//! Sample requests of a defined provider, signed the way the provider signs
//! them: for `hookbridge send-sample`, the tests and the benchmark.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signer as _, SigningKey};
use ring::rand::SystemRandom;
use ring::{hmac, signature};
use serde_json::Value;

use super::format::{Algorithm, AuthKind, Encoding, Shape, SignatureFormat, TimeFormat};
use super::verify::{secret_bytes, signed_content};
use super::{Auth, Definition, IdSpec, Location};

/// What a sample is signed with.
pub enum Credential {
    /// An HMAC secret, or a token, as configured in `secrets`.
    Secret(String),
    /// A P-256 private key, PKCS#8 DER.
    EcdsaPkcs8(Vec<u8>),
    Ed25519(Box<SigningKey>),
    Basic {
        username: String,
        password: String,
    },
    /// Amazon SNS: an RSA private key (PKCS#8 DER) whose certificate is
    /// served at `cert_url`; messages of `topic_arn`, SignatureVersion 2.
    Sns {
        pkcs8: Vec<u8>,
        cert_url: String,
        topic_arn: String,
    },
    /// Nothing: the source trusts addresses.
    None,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(redacted)")
    }
}

/// A signed sample request.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    /// Query parameters to add to the URL.
    pub query: Vec<(String, String)>,
}

/// Signs sample requests for one defined provider.
#[derive(Debug, Clone)]
pub struct DefinedSigner {
    definition: Arc<Definition>,
    credential: Arc<Credential>,
    webhook_url: Option<String>,
}

/// A new P-256 key pair: (PKCS#8 DER private key, base64 SubjectPublicKeyInfo
/// DER public key, as SendGrid shows it).
///
/// # Panics
/// When the system has no randomness.
pub fn p256_keypair() -> (Vec<u8>, String) {
    let rng = SystemRandom::new();
    let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .expect("system randomness");
    let pair = signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .expect("a key ring just made");
    use signature::KeyPair as _;
    let public = STANDARD.encode(super::verify::p256_spki(pair.public_key().as_ref()));
    (pkcs8.as_ref().to_vec(), public)
}

impl DefinedSigner {
    /// `webhook_url` is the URL the provider is told to post to, for
    /// definitions that sign it.
    pub fn new(definition: Arc<Definition>, credential: Credential, webhook_url: Option<String>) -> Self {
        Self { definition, credential: Arc::new(credential), webhook_url }
    }

    pub fn definition(&self) -> &Arc<Definition> {
        &self.definition
    }

    /// The method the credential serves.
    fn method(&self) -> Option<&Auth> {
        self.definition.auth.iter().find(|a| {
            matches!(
                (a.kind, self.credential.as_ref()),
                (AuthKind::Hmac | AuthKind::Token, Credential::Secret(_))
                    | (AuthKind::EcdsaP256, Credential::EcdsaPkcs8(_))
                    | (AuthKind::Ed25519, Credential::Ed25519(_))
                    | (AuthKind::Basic, Credential::Basic { .. })
                    | (AuthKind::Sns, Credential::Sns { .. })
                    | (AuthKind::None, Credential::None)
            )
        })
    }

    /// One sample element of `event` (the provider's name); `seq` makes
    /// ids unique.
    ///
    /// # Errors
    /// When the definition has no sample.
    pub fn element(&self, event: &str, seq: u64, now: DateTime<Utc>) -> Result<Value, String> {
        let d = &self.definition;
        let mut value = d.sample.clone().ok_or_else(|| format!("the {} definition has no sample", d.name))?;
        if let Some(p) = d.event.ty.first() {
            p.set(&mut value, Value::String(event.to_owned()));
        }
        if let Some(rule) = d.rules.iter().find(|r| r.name == event) {
            for (p, v) in &rule.when {
                p.set(&mut value, Value::String(v.clone()));
            }
        }
        if let Some(IdSpec::Pointers(pointers)) = &d.event.id
            && let Some(p) = pointers.first()
        {
            p.set(&mut value, Value::String(format!("{}-{seq}", d.name)));
        }
        // The message id, wherever the template has it.
        let message_id = Value::String(format!("<{seq}.sample@{}.example>", d.name));
        let mut pointers: Vec<&super::Pointer> = d.event.subject.iter().collect();
        pointers.extend(d.event.data.get("message_id").into_iter().flatten());
        for (i, p) in pointers.into_iter().enumerate() {
            if i == 0 || p.find(&value).is_some() {
                p.set(&mut value, message_id.clone());
            }
        }
        if let Some(p) = d.event.time.first() {
            let old = p.find(&value).cloned();
            let new = match (d.event.time_format, old) {
                (TimeFormat::UnixMs, _) => Value::from(now.timestamp_millis()),
                (TimeFormat::Rfc3339, _) => Value::String(now.to_rfc3339_opts(SecondsFormat::Millis, true)),
                (_, Some(Value::Number(_))) | (TimeFormat::Unix, None) => Value::from(now.timestamp()),
                (_, Some(Value::String(s))) if s.trim().parse::<f64>().is_ok() => {
                    Value::String(now.timestamp().to_string())
                }
                (_, Some(Value::String(s))) if s.len() == 19 && !s.contains('T') => {
                    Value::String(now.format("%Y-%m-%d %H:%M:%S").to_string())
                }
                _ => Value::String(now.to_rfc3339_opts(SecondsFormat::Millis, true)),
            };
            p.set(&mut value, new);
        }
        Ok(value)
    }

    /// A signed request carrying `elements` (more than one only for
    /// providers that batch).
    ///
    /// A credential that fits none of the definition's methods signs
    /// nothing (an unsigned request, for tests of refusals).
    pub fn request(&self, mut elements: Vec<Value>, seq: u64, now: DateTime<Utc>) -> SignedRequest {
        let d = &self.definition;
        let Some(auth) = self.method() else {
            let empty = Vec::new();
            let (body, content_type) = encode(d, &elements, &empty);
            return SignedRequest { body, content_type, headers: Vec::new(), query: Vec::new() };
        };
        let timestamp = now.timestamp().to_string();
        let id = format!("msg_{seq:x}{:x}", now.timestamp_micros());
        let token = hex::encode(crate::normalize::derived_id("", &[&seq.to_be_bytes(), timestamp.as_bytes()]));
        let mut out = Placed::default();
        let signs = matches!(auth.kind, AuthKind::Hmac | AuthKind::Ed25519 | AuthKind::EcdsaP256);
        if signs {
            out.place(&auth.timestamp, &timestamp, &mut elements);
            out.place(&auth.id, &id, &mut elements);
            out.place(&auth.token, &token, &mut elements);
        }
        let serialize = |elements: &[Value], form_extra: &[(String, String)]| encode(d, elements, form_extra);
        let (mut body, content_type) = serialize(&elements, &out.form);
        if let (AuthKind::Sns, Credential::Sns { pkcs8, cert_url, topic_arn }) = (auth.kind, self.credential.as_ref()) {
            let message = String::from_utf8(body).expect("JSON is UTF-8");
            let envelope = sns_envelope(
                &message,
                &format!("{seq:08x}-0000-4000-8000-{:012x}", now.timestamp_micros()),
                topic_arn,
                cert_url,
                now,
                |text| {
                    let pair = signature::RsaKeyPair::from_pkcs8(pkcs8).expect("an RSA PKCS#8 key");
                    let mut sig = vec![0; pair.public().modulus_len()];
                    pair.sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), text, &mut sig).expect("RSA signing");
                    ("2", sig)
                },
            );
            return SignedRequest {
                body: envelope,
                content_type: "text/plain; charset=UTF-8",
                headers: vec![("x-amz-sns-message-type".into(), "Notification".into())],
                query: out.query,
            };
        }
        match (auth.kind, self.credential.as_ref()) {
            (AuthKind::Basic, Credential::Basic { username, password }) => out
                .headers
                .push(("authorization".into(), format!("Basic {}", STANDARD.encode(format!("{username}:{password}"))))),
            (AuthKind::Token, Credential::Secret(token)) => {
                let value = format!("{}{token}", auth.token_prefix.as_deref().unwrap_or_default());
                out.place(&auth.token, &value, &mut elements);
            }
            (_, credential) if signs => {
                let message = signed_content(
                    &auth.signed,
                    &body,
                    Some(&timestamp),
                    Some(&id),
                    Some(&token),
                    self.webhook_url.as_deref(),
                );
                let raw = sign(auth, credential, &message);
                let encoded = match auth.encoding {
                    Encoding::Hex => hex::encode(raw),
                    Encoding::Base64 => STANDARD.encode(raw),
                    Encoding::Base64url => URL_SAFE_NO_PAD.encode(raw),
                };
                let value = format!("{}{encoded}", auth.signature_prefix.as_deref().unwrap_or_default());
                out.place(&auth.signature, &value, &mut elements);
                // A signature in the body changes the body.
                if matches!(auth.signature, Some(Location::Json(_) | Location::Form(_))) {
                    body = serialize(&elements, &out.form).0;
                }
            }
            _ => {}
        }
        SignedRequest { body, content_type, headers: out.headers, query: out.query }
    }
}

/// What a sample request carries besides its body, as the definition's
/// locations place the values.
#[derive(Default)]
struct Placed {
    /// Lowercase names.
    headers: Vec<(String, String)>,
    query: Vec<(String, String)>,
    /// Form fields beside the one holding the events.
    form: Vec<(String, String)>,
}

impl Placed {
    /// Puts `text` where `location` says; a JSON location sets it in every element.
    fn place(&mut self, location: &Option<Location>, text: &str, elements: &mut [Value]) {
        match location {
            Some(Location::Header(names)) => self.headers.push((names[0].to_ascii_lowercase(), text.to_owned())),
            Some(Location::HeaderKey(names, key)) => {
                // `key=value` in a `k=v,k=v` header, created by its first pair.
                let name = names[0].to_ascii_lowercase();
                match self.headers.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, existing)) => existing.push_str(&format!(",{key}={text}")),
                    None => self.headers.push((name, format!("{key}={text}"))),
                }
            }
            Some(Location::Json(p)) => {
                for e in elements.iter_mut() {
                    p.set(e, Value::String(text.to_owned()));
                }
            }
            Some(Location::Form(f)) => self.form.push((f.clone(), text.to_owned())),
            Some(Location::Query(q)) => self.query.push((q.clone(), text.to_owned())),
            None => {}
        }
    }
}

/// An SNS Notification envelope carrying `message`, signed by `sign`
/// (which returns the SignatureVersion and the signature of the string to
/// sign).
pub fn sns_envelope(
    message: &str,
    message_id: &str,
    topic_arn: &str,
    cert_url: &str,
    now: DateTime<Utc>,
    sign: impl FnOnce(&[u8]) -> (&'static str, Vec<u8>),
) -> Vec<u8> {
    let mut envelope = super::sns::Envelope {
        kind: "Notification".into(),
        message_id: message_id.into(),
        topic_arn: topic_arn.into(),
        subject: None,
        message: message.into(),
        timestamp: now.to_rfc3339_opts(SecondsFormat::Millis, true),
        signature_version: String::new(),
        signature: String::new(),
        signing_cert_url: cert_url.into(),
        subscribe_url: None,
        token: None,
    };
    let (version, signature) = sign(envelope.string_to_sign().as_bytes());
    envelope.signature_version = version.into();
    envelope.signature = STANDARD.encode(signature);
    serde_json::to_vec(&envelope.to_json()).expect("json")
}

/// The body of `elements` in the definition's shape.
fn encode(d: &Definition, elements: &[Value], form_extra: &[(String, String)]) -> (Vec<u8>, &'static str) {
    match d.shape {
        Shape::Json => (serde_json::to_vec(&elements[0]).expect("json"), "application/json"),
        Shape::JsonOrArray if elements.len() == 1 => {
            (serde_json::to_vec(&elements[0]).expect("json"), "application/json")
        }
        Shape::JsonArray | Shape::JsonOrArray => (serde_json::to_vec(elements).expect("json"), "application/json"),
        Shape::Sns => (serde_json::to_vec(&elements[0]).expect("json"), "application/json"),
        Shape::FormJson => {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair(
                d.form_field.as_deref().unwrap_or_default(),
                &serde_json::to_string(elements).expect("json"),
            );
            for (k, v) in form_extra {
                form.append_pair(k, v);
            }
            (form.finish().into_bytes(), "application/x-www-form-urlencoded")
        }
    }
}

fn sign(auth: &Auth, credential: &Credential, message: &[u8]) -> Vec<u8> {
    match credential {
        Credential::Secret(secret) => {
            let algorithm = match auth.algorithm {
                Algorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                Algorithm::Sha256 => hmac::HMAC_SHA256,
                Algorithm::Sha512 => hmac::HMAC_SHA512,
            };
            let key = secret_bytes(auth.secret_format, secret).unwrap_or_else(|_| secret.as_bytes().to_vec());
            hmac::sign(&hmac::Key::new(algorithm, &key), message).as_ref().to_vec()
        }
        Credential::EcdsaPkcs8(pkcs8) => {
            let alg = match auth.signature_format {
                SignatureFormat::Der => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                SignatureFormat::Raw => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            };
            let rng = SystemRandom::new();
            let pair = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8, &rng).expect("a PKCS#8 P-256 key");
            pair.sign(&rng, message).expect("signing").as_ref().to_vec()
        }
        Credential::Ed25519(key) => key.sign(message).to_bytes().to_vec(),
        _ => Vec::new(),
    }
}
