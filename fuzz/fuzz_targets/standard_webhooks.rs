#![no_main]
//! The Standard Webhooks signatures the relay sends: what it signs always
//! verifies with the matching key and never with another, and verifying
//! arbitrary headers never panics.

use std::sync::LazyLock;

use hookbridge_relay::sign::{SigningSecret, VerifyKey, signature_header, verify};
use libfuzzer_sys::fuzz_target;

const HMAC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ED25519: &str = "whsk_BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
const NOW: i64 = 1_760_000_000;

static SECRETS: LazyLock<Vec<SigningSecret>> =
    LazyLock::new(|| [HMAC, ED25519].iter().map(|s| SigningSecret::parse(s).expect("test secrets parse")).collect());
static KEYS: LazyLock<Vec<VerifyKey>> = LazyLock::new(|| {
    let public = SECRETS[1].public_key().expect("an Ed25519 secret has a public key");
    vec![VerifyKey::parse(HMAC).expect("parses"), VerifyKey::parse(&public).expect("parses")]
});
static OTHER: LazyLock<Vec<VerifyKey>> =
    LazyLock::new(|| vec![VerifyKey::parse("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").expect("parses")]);

fuzz_target!(|data: &[u8]| {
    // id \0 timestamp \0 signature \0 body
    let mut parts = data.splitn(4, |&b| b == 0);
    let (Some(id), Some(ts), Some(sig), Some(body)) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let (Ok(id), Ok(ts), Ok(sig)) = (std::str::from_utf8(id), std::str::from_utf8(ts), std::str::from_utf8(sig)) else {
        return;
    };
    let _ = verify(&KEYS, Some(id), Some(ts), Some(sig), body, NOW, 300);
    let _ = SigningSecret::parse(sig);
    let _ = VerifyKey::parse(sig);

    let ts = (NOW - 10).to_string();
    for (i, secret) in SECRETS.iter().enumerate() {
        let header = signature_header(std::slice::from_ref(secret), id, NOW - 10, body);
        assert!(verify(&KEYS[i..=i], Some(id), Some(&ts), Some(&header), body, NOW, 300).is_ok(), "ours verifies");
        assert!(verify(&OTHER, Some(id), Some(&ts), Some(&header), body, NOW, 300).is_err(), "not with another key");
    }
});
