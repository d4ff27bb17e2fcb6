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
