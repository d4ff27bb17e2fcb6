//! The documentation stays true: every JSON example in `docs/events.md` is
//! a schema-valid event, and every normalized type has one.

use std::path::Path;

use chrono::{DateTime, Utc};
use hookbridge_providers::{Redactor, SourceMeta};
use hookbridge_testkit::{assert_valid_event, keys};
use serde_json::Value;

/// (source, provider event) whose events `docs/events.md` shows, one per type.
const EXAMPLES: &[(&str, &str)] = &[
    ("mailpace", "email.queued"),
    ("mailpipe", "email.sent"),
    ("mailpace", "email.deferred"),
    ("mailpipe", "email.bounced"),
    ("mailpace", "email.spam"),
    ("mailpipe", "email.opened"),
    ("mailpipe", "email.received"),
    ("mailpipe", "domain.verified"),
    ("whippy", "message.created"),
    ("whippy", "contact.created"),
];

fn events_md() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/events.md")).expect("docs/events.md")
}

fn json_blocks(markdown: &str) -> Vec<Value> {
    markdown
        .split("```json")
        .skip(1)
        .map(|rest| serde_json::from_str(rest.split("```").next().unwrap()).expect("example is JSON"))
        .collect()
}

#[test]
fn every_example_in_events_md_is_a_valid_event() {
    let examples = json_blocks(&events_md());
    assert!(examples.len() >= EXAMPLES.len());
    for example in &examples {
        assert_valid_event(example);
    }
    for expected in [
        "email.queued",
        "email.delivered",
        "email.deferred",
        "email.bounced",
        "email.rejected",
        "email.opened",
        "email.received",
        "domain.verified",
        "message.created",
        "contact.created",
    ] {
        assert!(examples.iter().any(|e| e["type"] == expected), "docs/events.md has no {expected} example");
    }
}

/// Regenerates the examples: `cargo test --test it -- --ignored print_event_examples --nocapture`.
#[test]
#[ignore = "prints the examples of docs/events.md"]
fn print_event_examples() {
    let at: DateTime<Utc> = "2026-11-22T10:00:00.000Z".parse().unwrap();
    for (n, (source, event)) in EXAMPLES.iter().enumerate() {
        let signer = keys::signer(source);
        let (body, _) = keys::signed(&signer, event, 4200 + n as u64, at);
        let meta = SourceMeta { event_source: SourceMeta::default_event_source(source), redactor: Redactor::default() };
        let normalized = hookbridge_providers::normalize(&signer.provider(), &body, &meta, at).unwrap();
        let value: Value = serde_json::from_slice(&normalized.to_json()).unwrap();
        println!(
            "### `{}` (from {} `{event}`)\n\n```json\n{}\n```\n",
            normalized.ty,
            signer.provider(),
            serde_json::to_string_pretty(&value).unwrap()
        );
    }
}

#[test]
fn every_catalogue_provider_is_documented() {
    let providers_md =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/providers.md")).unwrap();
    let configuration_md =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md")).unwrap();
    for definition in hookbridge_providers::builtin_catalogue().iter() {
        let name = &definition.name;
        assert!(providers_md.contains(&format!("provider = \"{name}\"")), "docs/providers.md has no config for {name}");
        assert!(configuration_md.contains(&format!("`{name}`")), "docs/configuration.md does not list {name}");
        assert!(definition.docs.is_some() && !definition.setup.is_empty(), "{name}: docs and setup steps");
    }
}
