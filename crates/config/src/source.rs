//! `[[ingress.sources]]` into the ingress's [`Source`]s; each provider's
//! own rules are in `hookbridge-providers` ([`Provider::verifier`]).

use std::sync::Arc;

use hookbridge_ingress::Source;
use hookbridge_providers::{Catalogue, Provider, Redactor, SourceMeta, VerifierSettings};

use crate::secret::SecretRef;
use crate::{Problems, raw};

pub(crate) fn build_source(raw: &raw::SourceConfig, at: &str, catalogue: &Catalogue) -> Result<Source, Problems> {
    let mut problems: Problems = Vec::new();
    if !Source::valid_name(&raw.name) {
        problems.push((format!("{at}.name"), format!("`{}` must be 1-64 characters of a-z, 0-9, - and _", raw.name)));
    }
    let provider = Provider::lookup(&raw.provider, catalogue);
    if provider.is_none() {
        let names: Vec<&str> = Provider::ALL.iter().map(Provider::as_str).chain(catalogue.names()).collect();
        problems.push((
            format!("{at}.provider"),
            format!("unknown provider `{}` (expected one of: {})", raw.provider, names.join(", ")),
        ));
    }
    // A secret's value, or its problem at `key`.
    let secret = |key: String, value: &SecretRef, problems: &mut Problems| -> Option<String> {
        match value.resolve() {
            Ok(v) if v.is_empty() => {
                problems.push((key, "is empty".into()));
                None
            }
            Ok(v) => Some(v),
            Err(e) => {
                problems.push((key, e.to_string()));
                None
            }
        }
    };
    let one = |field: &str, value: &Option<SecretRef>, problems: &mut Problems| {
        secret(format!("{at}.{field}"), value.as_ref()?, problems)
    };
    let mut allowed_ips = Vec::new();
    for (j, entry) in raw.allowed_ips.iter().enumerate() {
        let parsed =
            entry.parse::<ipnet::IpNet>().or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => allowed_ips.push(net.trunc()),
            Err(_) => problems
                .push((format!("{at}.allowed_ips[{j}]"), format!("`{entry}` is not an address or CIDR network"))),
        }
    }
    if let Some(Err(e)) = raw.webhook_url.as_deref().map(crate::relay::http_url) {
        problems.push((format!("{at}.webhook_url"), e));
    }
    let resolve = |field: &str, list: &[SecretRef], problems: &mut Problems| -> Vec<String> {
        list.iter().enumerate().filter_map(|(j, s)| secret(format!("{at}.{field}[{j}]"), s, problems)).collect()
    };
    let settings = VerifierSettings {
        public_keys: resolve("public_keys", &raw.public_keys, &mut problems),
        secrets: resolve("secrets", &raw.secrets, &mut problems),
        listed_public_keys: raw.public_keys.len(),
        listed_secrets: raw.secrets.len(),
        signature: raw.signature.clone(),
        timestamp_tolerance: raw.timestamp_tolerance,
        username: one("username", &raw.username, &mut problems),
        password: one("password", &raw.password, &mut problems),
        webhook_url: raw.webhook_url.clone(),
        allowed_ips: !raw.allowed_ips.is_empty(),
        sns: sns_settings(raw, provider.as_ref(), at, &mut problems),
    };
    // Each provider's rules are its own (hookbridge-providers).
    let verifier = provider.as_ref().and_then(|p| {
        p.verifier(&settings)
            .map_err(|errs| problems.extend(errs.into_iter().map(|e| (format!("{at}.{}", e.key), e.message))))
            .ok()
    });
    for (j, field) in raw.redact_fields.iter().enumerate() {
        if field.is_empty() || field.split('.').any(str::is_empty) {
            problems
                .push((format!("{at}.redact_fields[{j}]"), format!("`{field}` is not a field name or dotted path")));
        }
    }
    match (verifier, provider) {
        (Some(verifier), Some(provider)) if problems.is_empty() => Ok(Source {
            name: raw.name.clone(),
            provider,
            allowed_ips,
            verifier: Arc::new(verifier),
            meta: SourceMeta {
                event_source: raw.event_source.clone().unwrap_or_else(|| SourceMeta::default_event_source(&raw.name)),
                redactor: Redactor::new(&raw.redact_fields),
            },
        }),
        _ => Err(problems),
    }
}

/// The SNS keys of a source: for SNS providers, or to be refused by others.
fn sns_settings(
    raw: &raw::SourceConfig,
    provider: Option<&Provider>,
    at: &str,
    problems: &mut Problems,
) -> Option<hookbridge_providers::defined::sns::SnsSettings> {
    let is_sns = matches!(provider, Some(Provider::Defined(d)) if d.credentials().contains(&"topic_arns"));
    let any = !raw.topic_arns.is_empty()
        || raw.confirm_subscriptions.is_some()
        || raw.signing_cert_host.is_some()
        || raw.signing_cert_ca.is_some();
    if !is_sns && !any {
        return None;
    }
    for (j, arn) in raw.topic_arns.iter().enumerate() {
        if !arn.starts_with("arn:") || arn.split(':').count() != 6 {
            problems.push((
                format!("{at}.topic_arns[{j}]"),
                format!("`{arn}` is not a topic ARN (arn:aws:sns:<region>:<account>:<name>)"),
            ));
        }
    }
    let cert_ca_pem = raw.signing_cert_ca.as_ref().and_then(|path| match std::fs::read(path) {
        Ok(pem) => Some(pem),
        Err(e) => {
            problems.push((format!("{at}.signing_cert_ca"), format!("cannot read {}: {e}", path.display())));
            None
        }
    });
    Some(hookbridge_providers::defined::sns::SnsSettings {
        topic_arns: raw.topic_arns.clone(),
        confirm_subscriptions: raw.confirm_subscriptions.unwrap_or(false),
        cert_host: raw.signing_cert_host.clone(),
        cert_ca_pem,
    })
}
