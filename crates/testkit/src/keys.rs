//! Fixed test keys and secrets, and sample webhooks signed with them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use hookbridge_providers::samples::{self, Signer};
use hookbridge_providers::whippy::Scheme;
use hookbridge_providers::{HmacSecret, Provider};

pub const MAILPIPE_SECRET: &str = "mailpipe-test-secret";
pub const WHIPPY_SECRET: &str = "whippy-test-api-key";

pub fn mailpace_key() -> SigningKey {
    SigningKey::from_bytes(&[0x11; 32])
}

/// A second domain's key, configured before the main one (rotation).
pub fn other_mailpace_key() -> SigningKey {
    SigningKey::from_bytes(&[0x22; 32])
}

pub fn public_key_b64(key: &SigningKey) -> String {
    STANDARD.encode(key.verifying_key().to_bytes())
}

/// How each test source signs: `(source name, signer)`.
pub fn sources() -> Vec<(&'static str, Signer)> {
    vec![
        ("mailpace", Signer::MailPace(Box::new(mailpace_key()))),
        ("mailpipe", Signer::Mailpipe(HmacSecret::new(MAILPIPE_SECRET.into()))),
        ("whippy", Signer::Whippy(HmacSecret::new(WHIPPY_SECRET.into()), Scheme::HmacSha256Hex)),
        ("whippy-base64", Signer::Whippy(HmacSecret::new(WHIPPY_SECRET.into()), Scheme::HmacSha256Base64)),
        ("whippy-timestamped", Signer::Whippy(HmacSecret::new(WHIPPY_SECRET.into()), Scheme::Timestamped)),
    ]
}

/// The signer of a test source.
///
/// # Panics
/// For a name [`sources`] does not have.
pub fn signer(source: &str) -> Signer {
    sources().into_iter().find(|(name, _)| *name == source).map(|(_, s)| s).expect("known test source")
}

/// A signed sample: body and its signature header.
pub fn signed(signer: &Signer, event: &str, seq: u64, now: DateTime<Utc>) -> (Vec<u8>, (&'static str, String)) {
    let body = samples::body(&signer.provider(), event, seq, now);
    let header = signer.header(&body, now);
    (body, header)
}

/// The documented events of `provider`.
pub fn events(provider: Provider) -> &'static [&'static str] {
    match provider {
        Provider::MailPace => hookbridge_providers::mailpace::EVENTS,
        Provider::Mailpipe => hookbridge_providers::mailpipe::EVENTS,
        Provider::Whippy => hookbridge_providers::whippy::EVENTS,
        Provider::Defined(d) => panic!("{} is a defined provider: use its definition's events", d.name),
    }
}

/// The secret of every catalogue test source that takes one (a `whsec_`
/// secret, used as it is by HMAC providers and decoded by Standard Webhooks).
pub const CATALOGUE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const BASIC_USERNAME: &str = "hookbridge-test";
pub const BASIC_PASSWORD: &str = "basic-test-password";
/// The URL the test Mandrill source is configured with (Mandrill signs it).
pub const MANDRILL_URL: &str = "https://hooks.acme.example/webhooks/mandrill";

/// The P-256 key pair of the test SendGrid source: (PKCS#8, base64 SPKI),
/// made once per process.
pub fn sendgrid_key() -> &'static (Vec<u8>, String) {
    static KEY: std::sync::OnceLock<(Vec<u8>, String)> = std::sync::OnceLock::new();
    KEY.get_or_init(hookbridge_providers::defined::p256_keypair)
}

/// The built-in catalogue's test sources (each named after its provider) as
/// `[[ingress.sources]]` entries.
pub fn catalogue_sources_toml() -> String {
    let mut out = String::new();
    for definition in hookbridge_providers::builtin_catalogue().iter() {
        let name = &definition.name;
        let credential = match definition.credentials().first().copied() {
            Some("public_keys") => format!("public_keys = [\"{}\"]", sendgrid_key().1),
            Some("username + password") => format!("username = \"{BASIC_USERNAME}\"\npassword = \"{BASIC_PASSWORD}\""),
            _ => format!("secrets = [\"whsec_cmV0aXJlZC1zZWNyZXQtMjQtYnl0ZXMh\", \"{CATALOGUE_SECRET}\"]"),
        };
        let url = if definition.signs_url() { format!("\nwebhook_url = \"{MANDRILL_URL}\"") } else { String::new() };
        if definition.credentials().contains(&"topic_arns") {
            out.push_str(&format!(
                "[[ingress.sources]]\nname = \"{name}\"\nprovider = \"{name}\"\ntopic_arns = [\"{}\"]\nconfirm_subscriptions = true\nsigning_cert_host = '{}'\nsigning_cert_ca = \"{}\"\n",
                crate::sns::TOPIC_ARN,
                crate::sns::CERT_HOST,
                crate::sns::pki().ca_path.display()
            ));
            continue;
        }
        out.push_str(&format!("[[ingress.sources]]\nname = \"{name}\"\nprovider = \"{name}\"\n{credential}{url}\n"));
    }
    out
}

/// How the test source of a catalogue provider signs.
///
/// # Panics
/// For a name the built-in catalogue does not have.
pub fn defined_signer(provider: &str) -> hookbridge_providers::defined::DefinedSigner {
    use hookbridge_providers::defined::{Credential, DefinedSigner};
    let definition = hookbridge_providers::builtin_catalogue().get(provider).expect("a catalogue provider").clone();
    let credential = match definition.credentials().first().copied() {
        Some("topic_arns") => Credential::Sns {
            pkcs8: crate::sns::signing_key_pkcs8(),
            cert_url: crate::sns::cert_url(),
            topic_arn: crate::sns::TOPIC_ARN.into(),
        },
        Some("public_keys") => Credential::EcdsaPkcs8(sendgrid_key().0.clone()),
        Some("username + password") => {
            Credential::Basic { username: BASIC_USERNAME.into(), password: BASIC_PASSWORD.into() }
        }
        _ => Credential::Secret(CATALOGUE_SECRET.into()),
    };
    let url = definition.signs_url().then(|| MANDRILL_URL.to_owned());
    DefinedSigner::new(definition, credential, url)
}
