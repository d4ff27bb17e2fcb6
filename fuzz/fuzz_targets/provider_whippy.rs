#![no_main]
//! Whippy: each of its three signature schemes (the first byte picks one),
//! then normalization.

#[path = "common/mod.rs"]
mod common;

use std::sync::LazyLock;
use std::time::Duration;

use hookbridge_providers::samples::Signer;
use hookbridge_providers::whippy::Scheme;
use hookbridge_providers::{HmacSecret, Verifier, whippy};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"whippy-fuzz-api-key";
const SCHEMES: [Scheme; 3] = [Scheme::HmacSha256Hex, Scheme::HmacSha256Base64, Scheme::Timestamped];

static PAIRS: LazyLock<Vec<(Verifier, Signer)>> = LazyLock::new(|| {
    SCHEMES
        .iter()
        .map(|&scheme| {
            let secret = || HmacSecret::new(SECRET.to_vec());
            let verifier = whippy::Verifier::new(vec![secret()], scheme, Duration::from_secs(300));
            (Verifier::Whippy(verifier), Signer::Whippy(secret(), scheme))
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let (verifier, signer) = &PAIRS[usize::from(pick) % PAIRS.len()];
    common::check(rest, verifier, signer, &[]);
});
