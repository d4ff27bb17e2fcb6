//! `hookbridge providers list` and `providers show NAME`: the catalogue.

use std::fmt::Write;
use std::process::ExitCode;

use anyhow::bail;
use hookbridge_providers::{Catalogue, Provider};

use crate::cli::{ProvidersArgs, ProvidersCommand};

/// What the three providers written in code say of themselves.
fn code_provider(provider: &Provider) -> (&'static str, Vec<&'static str>, Vec<&'static str>) {
    match provider {
        Provider::MailPace => (
            "Ed25519 (base64) of the body in X-MailPace-Signature",
            vec!["public_keys"],
            vec!["the signature header's name and encoding (docs/providers.md)"],
        ),
        Provider::Mailpipe => ("HMAC-SHA256 (hex) of the body in X-Mailpipe-Signature", vec!["secrets"], vec![]),
        Provider::Whippy => (
            "HMAC-SHA256 of the body in X-Whippy-Signature: hex, base64 or t=…,v1=… (source key `signature`)",
            vec!["secrets"],
            vec!["the signature format: Whippy does not document it (docs/providers.md)"],
        ),
        Provider::Defined(_) => unreachable!("definitions describe themselves"),
    }
}

fn catalogue(args: &ProvidersArgs) -> anyhow::Result<Catalogue> {
    match &args.config {
        Some(path) => Ok(crate::load(path)?.providers),
        None => Ok(hookbridge_providers::builtin_catalogue().clone()),
    }
}

fn all(catalogue: &Catalogue) -> Vec<Provider> {
    Provider::ALL.into_iter().chain(catalogue.iter().map(|d| Provider::Defined(d.clone()))).collect()
}

pub fn run(command: ProvidersCommand) -> anyhow::Result<ExitCode> {
    match command {
        ProvidersCommand::List(args) => {
            print!("{}", list(&catalogue(&args)?));
            Ok(ExitCode::SUCCESS)
        }
        ProvidersCommand::Show(args) => {
            let catalogue = catalogue(&args.config)?;
            let Some(provider) = Provider::lookup(&args.name, &catalogue) else {
                let names: Vec<String> = all(&catalogue).iter().map(|p| p.as_str().to_owned()).collect();
                bail!("unknown provider `{}` (one of: {})", args.name, names.join(", "));
            };
            print!("{}", show(&provider));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One line per provider.
pub fn list(catalogue: &Catalogue) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<12} {:<9} {:<6} {:<28} events", "provider", "origin", "batch", "credentials");
    for provider in all(catalogue) {
        let (origin, credentials) = match &provider {
            Provider::Defined(d) => (if d.builtin { "built-in" } else { "user" }, d.credentials().join(" | ")),
            other => ("code", code_provider(other).1.join(" | ")),
        };
        let _ = writeln!(
            out,
            "{:<12} {:<9} {:<6} {:<28} {}",
            provider.as_str(),
            origin,
            if provider.batches() { "yes" } else { "no" },
            credentials,
            provider.events().join(", ")
        );
    }
    out
}

/// Everything about one provider.
pub fn show(provider: &Provider) -> String {
    let mut out = String::new();
    match provider {
        Provider::Defined(d) => {
            let _ = writeln!(out, "{} ({})", d.name, d.title);
            if let Some(path) = &d.path {
                let _ = writeln!(out, "defined in {}", path.display());
            }
            if let Some(docs) = &d.docs {
                let _ = writeln!(out, "docs: {docs}");
            }
            if !d.setup.is_empty() {
                let _ = writeln!(out, "\nsetup:");
                for (i, step) in d.setup.iter().enumerate() {
                    let _ = writeln!(out, "  {}. {step}", i + 1);
                }
            }
            let _ = writeln!(out, "\nauthentication (a source enables the methods it has credentials for):");
            for line in d.authentication() {
                let _ = writeln!(out, "  - {line}");
            }
            let _ = writeln!(out, "  source keys: {}", d.credentials().join(" | "));
            let _ = writeln!(out, "\nbody: {}", d.body_shape());
            let _ = writeln!(out, "\nevents (provider name -> published type; any other name is published as it is):");
            for (name, when, ty) in d.mappings() {
                let when = if when.is_empty() { String::new() } else { format!(" when {when}") };
                let _ = writeln!(out, "  {name}{when} -> {ty}");
            }
            if !d.unconfirmed.is_empty() {
                let _ = writeln!(out, "\nunconfirmed:");
                for fact in &d.unconfirmed {
                    let _ = writeln!(out, "  - {fact}");
                }
            }
        }
        code => {
            let (auth, credentials, unconfirmed) = code_provider(code);
            let _ = writeln!(out, "{code} (written in code)");
            let _ = writeln!(out, "\nauthentication:\n  - {auth}\n  source keys: {}", credentials.join(" | "));
            let _ = writeln!(out, "\nevents (provider name -> published type; any other name is published as it is):");
            let events = code.events();
            let types = code.event_types();
            for event in events {
                let ty = match code {
                    Provider::MailPace => hookbridge_providers::mailpace::normalized_type(event),
                    Provider::Mailpipe => hookbridge_providers::mailpipe::normalized_type(event),
                    _ => event,
                };
                debug_assert!(types.contains(&ty));
                let _ = writeln!(out, "  {event} -> {ty}");
            }
            if !unconfirmed.is_empty() {
                let _ = writeln!(out, "\nunconfirmed:");
                for fact in unconfirmed {
                    let _ = writeln!(out, "  - {fact}");
                }
            }
        }
    }
    out
}
