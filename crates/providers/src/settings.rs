//! A source's verification settings, and each provider's rules for them:
//! which keys it takes, which it refuses, and how its verifier is built.
//! Adding a provider adds its rules here, beside its module.

use std::time::Duration;

use crate::whippy::{self, Scheme};
use crate::{HmacSecret, Provider, Verifier, mailpace, mailpipe};

/// What a source's configuration gives its provider: secrets already
/// resolved (`env:`/`file:`); those that could not be are left out and
/// reported by the caller, which still counts them as listed.
#[derive(Debug, Default)]
pub struct VerifierSettings {
    pub public_keys: Vec<String>,
    pub secrets: Vec<String>,
    /// How many of each the configuration lists, resolved or not.
    pub listed_public_keys: usize,
    pub listed_secrets: usize,
    pub signature: Option<String>,
    pub timestamp_tolerance: Option<Duration>,
    /// Basic authentication (defined providers).
    pub username: Option<String>,
    pub password: Option<String>,
    /// The URL the provider posts to, as configured there (signed by some).
    pub webhook_url: Option<String>,
    /// Whether the source lists `allowed_ips` (checked by the ingress).
    pub allowed_ips: bool,
    /// Amazon SNS: topics, confirmation, where certificates come from.
    pub sns: Option<SnsSettings>,
}

/// What a source configures for SNS.
#[derive(Debug, Clone, Default)]
pub struct SnsSettings {
    /// Topics whose messages are accepted; empty: any (a warning at start-up).
    pub topic_arns: Vec<String>,
    pub confirm_subscriptions: bool,
    /// The pattern the certificate (and SubscribeURL) host must match.
    pub cert_host: Option<String>,
    /// A PEM root certificate trusted for fetching, beside the system's.
    pub cert_ca_pem: Option<Vec<u8>>,
}

/// One problem with a source's settings: the key (relative to the source,
/// e.g. `public_keys[0]`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingProblem {
    pub key: String,
    pub message: String,
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> SettingProblem {
    SettingProblem { key: key.into(), message: message.into() }
}

impl Provider {
    /// This provider's verifier for `settings`, or every problem with them.
    ///
    /// # Errors
    /// Each key that is missing, refused by this provider, or malformed.
    pub(crate) fn code_verifier(&self, settings: &VerifierSettings) -> Result<Verifier, Vec<SettingProblem>> {
        let mut problems = Vec::new();
        if settings.username.is_some() || settings.password.is_some() {
            problems.push(problem("username", format!("{self} takes no basic authentication")));
        }
        if settings.webhook_url.is_some() {
            problems.push(problem("webhook_url", format!("{self} does not sign the URL")));
        }
        if settings.signature.is_some() && *self != Self::Whippy {
            problems.push(problem("signature", "only whippy sources choose a signature scheme"));
        }
        if settings.timestamp_tolerance.is_some() && *self != Self::Whippy {
            problems.push(problem("timestamp_tolerance", "only whippy sources with the timestamped scheme use it"));
        }
        let verifier = match self {
            Self::MailPace => Verifier::MailPace(mailpace_verifier(settings, &mut problems)),
            Self::Mailpipe => Verifier::Mailpipe(mailpipe::Verifier::new(hmac_secrets(self, settings, &mut problems))),
            Self::Whippy => Verifier::Whippy(whippy_verifier(settings, &mut problems)),
            Self::Defined(_) => unreachable!("defined providers are verified by their definitions"),
        };
        if problems.is_empty() { Ok(verifier) } else { Err(problems) }
    }
}

/// MailPace signs with Ed25519: public keys, never secrets.
fn mailpace_verifier(settings: &VerifierSettings, problems: &mut Vec<SettingProblem>) -> mailpace::Verifier {
    if settings.listed_public_keys == 0 {
        problems.push(problem("public_keys", "a mailpace source needs at least one public key"));
    }
    if settings.listed_secrets > 0 {
        problems.push(problem("secrets", "mailpace signs with Ed25519: give public_keys, not secrets"));
    }
    let keys = settings
        .public_keys
        .iter()
        .enumerate()
        .filter_map(|(j, k)| {
            mailpace::parse_public_key(k)
                .map_err(|e| problems.push(problem(format!("public_keys[{j}]"), format!("the key {e}"))))
                .ok()
        })
        .collect();
    mailpace::Verifier::new(keys)
}

/// Mailpipe and Whippy sign with HMAC: secrets, never public keys.
fn hmac_secrets(
    provider: &Provider,
    settings: &VerifierSettings,
    problems: &mut Vec<SettingProblem>,
) -> Vec<HmacSecret> {
    if settings.listed_secrets == 0 {
        problems.push(problem("secrets", format!("a {provider} source needs at least one secret")));
    }
    if settings.listed_public_keys > 0 {
        problems.push(problem("public_keys", format!("{provider} signs with HMAC: give secrets, not public_keys")));
    }
    settings.secrets.iter().map(|s| HmacSecret::new(s.clone().into_bytes())).collect()
}

/// Whippy's scheme is configured (its format is unconfirmed); a tolerance
/// applies only to the timestamped one.
fn whippy_verifier(settings: &VerifierSettings, problems: &mut Vec<SettingProblem>) -> whippy::Verifier {
    let secrets = hmac_secrets(&Provider::Whippy, settings, problems);
    let scheme = match settings.signature.as_deref().map(str::parse::<Scheme>) {
        None => Scheme::HmacSha256Hex,
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            problems.push(problem("signature", e));
            Scheme::HmacSha256Hex
        }
    };
    if settings.timestamp_tolerance.is_some() && scheme != Scheme::Timestamped {
        problems.push(problem("timestamp_tolerance", "applies only to signature = \"timestamped\""));
    }
    whippy::Verifier::new(secrets, scheme, settings.timestamp_tolerance.unwrap_or(whippy::DEFAULT_TOLERANCE))
}
