//! `send-sample` and `keygen`.

use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use ed25519_dalek::SigningKey;
use hookbridge_config::secret::SecretRef;
use hookbridge_providers::samples::{self, Signer};
use hookbridge_providers::whippy::Scheme;
use hookbridge_providers::{HmacSecret, Provider};

use crate::cli::SendSampleArgs;

fn secret(value: &str, what: &str) -> anyhow::Result<String> {
    SecretRef::parse(value).resolve().map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

fn signer(args: &SendSampleArgs) -> anyhow::Result<Signer> {
    let provider_name = args.provider.as_deref().unwrap_or(&args.source);
    let provider: Provider = provider_name
        .parse()
        .map_err(|e: String| anyhow::anyhow!("{e}; pass --provider when the source name is not a provider"))?;
    Ok(match provider {
        Provider::MailPace => {
            let key =
                args.key.as_deref().context("mailpace signs with Ed25519: pass --key (see `hookbridge keygen`)")?;
            let seed = STANDARD.decode(secret(key, "--key")?.trim()).context("--key is not base64")?;
            let seed: [u8; 32] = seed.try_into().map_err(|_| anyhow::anyhow!("--key must decode to 32 bytes"))?;
            Signer::MailPace(Box::new(SigningKey::from_bytes(&seed)))
        }
        Provider::Mailpipe | Provider::Whippy => {
            let value = args.secret.as_deref().with_context(|| format!("{provider} signs with HMAC: pass --secret"))?;
            let hmac = HmacSecret::new(secret(value, "--secret")?.into_bytes());
            if provider == Provider::Mailpipe {
                Signer::Mailpipe(hmac)
            } else {
                Signer::Whippy(hmac, args.scheme.parse::<Scheme>().map_err(|e| anyhow::anyhow!("--scheme: {e}"))?)
            }
        }
    })
}

fn endpoint(url: &str, source: &str) -> String {
    if url.contains("/webhooks/") { url.to_owned() } else { format!("{}/webhooks/{source}", url.trim_end_matches('/')) }
}

/// Signs and posts `--count` samples; fails when any is not answered 2xx.
pub async fn send(args: SendSampleArgs) -> anyhow::Result<ExitCode> {
    let signer = signer(&args)?;
    let url = endpoint(&args.url, &args.source);
    let client =
        reqwest::Client::builder().user_agent(concat!("hookbridge-send-sample/", env!("CARGO_PKG_VERSION"))).build()?;
    // Distinct samples per run: seed the sequence from the clock.
    let base = Utc::now().timestamp_micros().unsigned_abs();
    let mut failed = 0;
    for n in 0..args.count {
        let now = Utc::now();
        let body = samples::body(signer.provider(), &args.event, base + n, now);
        let (header, signature) = signer.header(&body, now);
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .header(header, signature)
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        println!("{} {}", status.as_u16(), text.trim());
        if !status.is_success() {
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} of {} samples were not accepted", args.count);
    }
    Ok(ExitCode::SUCCESS)
}

/// A new Ed25519 key pair, as `send-sample --key` and `public_keys` take them.
pub fn keygen() -> anyhow::Result<String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    Ok(format!(
        "# Ed25519 key pair for MailPace-style signing (base64)\n\
         # private: for `hookbridge send-sample --key`; keep it secret\n\
         private_key = \"{}\"\n\
         # public: for [[ingress.sources]] public_keys\n\
         public_key = \"{}\"\n",
        STANDARD.encode(seed),
        STANDARD.encode(key.verifying_key().to_bytes())
    ))
}
