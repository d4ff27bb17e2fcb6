//! Writes the seed corpora of `fuzz/` from the sample webhooks:
//! `cargo run -p hookbridge-providers --example fuzz_seeds -- fuzz/corpus`.
//! The keys are the fuzz targets' own (`fuzz/fuzz_targets/*.rs`).

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use ed25519_dalek::SigningKey;
use hookbridge_providers::samples::{Signer, body};
use hookbridge_providers::whippy::Scheme;
use hookbridge_providers::{HmacSecret, Provider};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

/// `[header length][signature header][body]`, as the provider targets read it.
fn framed(signer: &Signer, body: &[u8]) -> Vec<u8> {
    let now = Utc.timestamp_opt(1_760_000_000, 0).single().expect("a valid time");
    let (_, header) = signer.header(body, now);
    let header = &header.as_bytes()[..header.len().min(255)];
    let mut out = vec![header.len() as u8];
    out.extend_from_slice(header);
    out.extend_from_slice(body);
    out
}

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    let now = Utc.timestamp_opt(1_760_000_000, 0).single().expect("a valid time");
    let mailpace = Signer::MailPace(Box::new(SigningKey::from_bytes(&[7; 32])));
    let mailpipe = Signer::Mailpipe(HmacSecret::new(b"mailpipe-fuzz-secret".to_vec()));
    for (target, provider, signer) in
        [("provider_mailpace", Provider::MailPace, &mailpace), ("provider_mailpipe", Provider::Mailpipe, &mailpipe)]
    {
        for (i, event) in provider.events().iter().enumerate() {
            write(&root.join(target), &format!("sample-{i}"), &framed(signer, &body(&provider, event, i as u64, now)));
        }
    }
    let schemes = [Scheme::HmacSha256Hex, Scheme::HmacSha256Base64, Scheme::Timestamped];
    for (s, scheme) in schemes.into_iter().enumerate() {
        let signer = Signer::Whippy(HmacSecret::new(b"whippy-fuzz-api-key".to_vec()), scheme);
        for (i, event) in Provider::Whippy.events().iter().enumerate() {
            let mut seed = vec![s as u8];
            seed.extend(framed(&signer, &body(&Provider::Whippy, event, i as u64, now)));
            write(&root.join("provider_whippy"), &format!("sample-{s}-{i}"), &seed);
        }
    }
    // Embedded records: `[appended_ms][type_len][type][key_len][key][json]`,
    // a delayed one (`[attempt]` in front) and the raw JSON (NATS, Kafka).
    let json = body(&Provider::Mailpipe, "email.sent", 1, now);
    let mut record = 1_760_000_000_000u64.to_be_bytes().to_vec();
    for part in ["email.sent", "mailpipe#1"] {
        record.extend_from_slice(&(part.len() as u16).to_be_bytes());
        record.extend_from_slice(part.as_bytes());
    }
    record.extend_from_slice(&json);
    let dir = root.join("bus_records");
    write(&dir, "record", &record);
    write(&dir, "delayed", &[&3u32.to_be_bytes()[..], &record].concat());
    let failure = br#"{"attempts":5,"last_status":500,"last_error":"HTTP 500"}"#;
    let dead =
        [&(failure.len() as u32).to_be_bytes()[..], failure, &1_760_000_000_000u64.to_be_bytes(), &record].concat();
    write(&dir, "dead-letter", &dead);
    write(&dir, "failure", failure);
    write(&dir, "event-json", &json);
    // Standard Webhooks: `id \0 timestamp \0 signature \0 body`.
    let delivery =
        [&b"msg_2Kx\x001760000000\x00v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v1a,AAAA\x00"[..], &json].concat();
    write(&root.join("standard_webhooks"), "delivery", &delivery);
    // The catalogue: `[provider pick][0][unsigned body]` per definition (the
    // pick as the target reads it: index + count), and `[0][definition text]`.
    let sources: Vec<_> = hookbridge_providers::builtin_catalogue()
        .iter()
        .filter(|d| !d.credentials().contains(&"topic_arns"))
        .cloned()
        .collect();
    for (k, definition) in sources.iter().enumerate() {
        let provider = Provider::Defined(definition.clone());
        for (i, event) in provider.events().iter().enumerate().take(3) {
            let mut seed = vec![(k + sources.len()) as u8, 0];
            seed.extend(body(&provider, event, i as u64, now));
            write(&root.join("provider_catalogue"), &format!("{}-{i}", definition.name), &seed);
        }
    }
    for path in ["examples/providers/mailpipe-declarative.toml", "crates/providers/definitions/sendgrid.toml"] {
        let text = std::fs::read(path).expect("run from the project's root");
        let name = Path::new(path).file_stem().expect("a file name").to_string_lossy().into_owned();
        write(&root.join("provider_catalogue"), &format!("definition-{name}"), &[&[0u8][..], &text].concat());
    }
    // Configurations: the examples the project ships.
    for path in [
        "examples/hookbridge.toml",
        "examples/hookbridge-nats.toml",
        "examples/hookbridge-kafka.toml",
        "deploy/compose/hookbridge-nats.toml",
        "deploy/compose/hookbridge-kafka.toml",
    ] {
        let text = std::fs::read(path).expect("run from the project's root");
        let name = Path::new(path).file_stem().expect("a file name").to_string_lossy().into_owned();
        write(&root.join("config"), &format!("{}-{name}", path.split('/').next().unwrap_or("x")), &text);
    }
    println!("seeds written under {}", root.display());
}
