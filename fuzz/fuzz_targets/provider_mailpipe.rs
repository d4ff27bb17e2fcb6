#![no_main]
//! Mailpipe: HMAC-SHA256 hex over the raw body, then normalization.

#[path = "common/mod.rs"]
mod common;

use std::sync::LazyLock;

use hookbridge_providers::samples::Signer;
use hookbridge_providers::{HmacSecret, Verifier, mailpipe};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"mailpipe-fuzz-secret";
static VERIFIER: LazyLock<Verifier> =
    LazyLock::new(|| Verifier::Mailpipe(mailpipe::Verifier::new(vec![HmacSecret::new(SECRET.to_vec())])));
static SIGNER: LazyLock<Signer> = LazyLock::new(|| Signer::Mailpipe(HmacSecret::new(SECRET.to_vec())));

fuzz_target!(|data: &[u8]| common::check(data, &VERIFIER, &SIGNER, &[]));
