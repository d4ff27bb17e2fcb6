#![no_main]
//! MailPace: Ed25519 over the raw body, then normalization.

#[path = "common/mod.rs"]
mod common;

use std::sync::LazyLock;

use ed25519_dalek::SigningKey;
use hookbridge_providers::samples::Signer;
use hookbridge_providers::{Verifier, mailpace};
use libfuzzer_sys::fuzz_target;

static KEY: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::from_bytes(&[7; 32]));
static VERIFIER: LazyLock<Verifier> =
    LazyLock::new(|| Verifier::MailPace(mailpace::Verifier::new(vec![KEY.verifying_key()])));
static SIGNER: LazyLock<Signer> = LazyLock::new(|| Signer::MailPace(Box::new(KEY.clone())));

fuzz_target!(|data: &[u8]| common::check(data, &VERIFIER, &SIGNER, &["htmlbody", "payload.textbody"]));
