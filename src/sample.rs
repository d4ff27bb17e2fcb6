//! `send-sample` and `keygen`.

use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use ed25519_dalek::SigningKey;
use hookbridge_config::secret::SecretRef;
use hookbridge_providers::defined::{Credential, DefinedSigner, SignedRequest, p256_keypair};
use hookbridge_providers::samples::{self, Signer};
use hookbridge_providers::whippy::Scheme;
use hookbridge_providers::{Catalogue, Definition, HmacSecret, Provider};

use crate::cli::SendSampleArgs;

fn secret(value: &str, what: &str) -> anyhow::Result<String> {
    SecretRef::parse(value).resolve().map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

fn ed25519_key(args: &SendSampleArgs, provider: &str) -> anyhow::Result<SigningKey> {
    let key = args
        .key
        .as_deref()
        .with_context(|| format!("{provider} signs with Ed25519: pass --key (see `hookbridge keygen`)"))?;
    let seed = STANDARD.decode(secret(key, "--key")?.trim()).context("--key is not base64")?;
    let seed: [u8; 32] = seed.try_into().map_err(|_| anyhow::anyhow!("--key must decode to 32 bytes"))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// How samples of the provider are made and signed.
enum Sampler {
    Code(Signer),
    Defined(DefinedSigner),
}

fn catalogue(args: &SendSampleArgs) -> anyhow::Result<Catalogue> {
    match &args.config {
        Some(path) => Ok(crate::load(path)?.providers),
        None => Ok(hookbridge_providers::builtin_catalogue().clone()),
    }
}

fn sampler(args: &SendSampleArgs, url: &str) -> anyhow::Result<Sampler> {
    let provider_name = args.provider.as_deref().unwrap_or(&args.source);
    let catalogue = catalogue(args)?;
    let provider = Provider::lookup(provider_name, &catalogue).with_context(|| {
        format!("unknown provider `{provider_name}` (see `hookbridge providers list`); pass --provider when the source name is not a provider")
    })?;
    Ok(match provider {
        Provider::MailPace => Sampler::Code(Signer::MailPace(Box::new(ed25519_key(args, "mailpace")?))),
        Provider::Mailpipe | Provider::Whippy => {
            let value = args.secret.as_deref().with_context(|| format!("{provider} signs with HMAC: pass --secret"))?;
            let hmac = HmacSecret::new(secret(value, "--secret")?.into_bytes());
            Sampler::Code(if provider == Provider::Mailpipe {
                Signer::Mailpipe(hmac)
            } else {
                Signer::Whippy(hmac, args.scheme.parse::<Scheme>().map_err(|e| anyhow::anyhow!("--scheme: {e}"))?)
            })
        }
        Provider::Defined(definition) => {
            let credential = credential(args, &definition)?;
            let webhook_url = args.webhook_url.clone().or_else(|| definition.signs_url().then(|| url.to_owned()));
            Sampler::Defined(DefinedSigner::new(definition, credential, webhook_url))
        }
    })
}

/// The credential the arguments give, among those the provider takes.
fn credential(args: &SendSampleArgs, definition: &Definition) -> anyhow::Result<Credential> {
    let takes = definition.credentials();
    if let Some(value) = &args.secret {
        return Ok(Credential::Secret(secret(value, "--secret")?));
    }
    if let (Some(u), Some(p)) = (&args.username, &args.password) {
        return Ok(Credential::Basic { username: secret(u, "--username")?, password: secret(p, "--password")? });
    }
    if let Some(cert_url) = &args.signing_cert_url {
        let key = args.key.as_deref().context("SNS messages are signed with RSA: pass --key (a PKCS#8 private key)")?;
        let text = secret(key, "--key")?;
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect::<Vec<_>>().join("");
        let pkcs8 = STANDARD.decode(body.trim()).context("--key is not a PEM or base64 PKCS#8 key")?;
        return Ok(Credential::Sns { pkcs8, cert_url: cert_url.clone(), topic_arn: args.topic_arn.clone() });
    }
    if let Some(key) = &args.key {
        let bytes = STANDARD.decode(secret(key, "--key")?.trim()).context("--key is not base64")?;
        return Ok(if bytes.len() == 32 {
            Credential::Ed25519(Box::new(SigningKey::from_bytes(&bytes.try_into().expect("32 bytes"))))
        } else {
            Credential::EcdsaPkcs8(bytes)
        });
    }
    if takes.contains(&"allowed_ips") {
        return Ok(Credential::None);
    }
    if takes.contains(&"topic_arns") {
        bail!(
            "{} is signed by Amazon SNS: pass --key (RSA, PKCS#8) and --signing-cert-url (where its certificate is served)",
            definition.name
        );
    }
    bail!("{} needs {}: pass --secret, --username and --password, or --key", definition.name, takes.join(" or "))
}

fn endpoint(url: &str, source: &str) -> String {
    if url.contains("/webhooks/") { url.to_owned() } else { format!("{}/webhooks/{source}", url.trim_end_matches('/')) }
}

/// Signs and posts `--count` samples; fails when any is not answered 2xx.
pub async fn send(args: SendSampleArgs) -> anyhow::Result<ExitCode> {
    let url = endpoint(&args.url, &args.source);
    let sampler = sampler(&args, &url)?;
    let client =
        reqwest::Client::builder().user_agent(concat!("hookbridge-send-sample/", env!("CARGO_PKG_VERSION"))).build()?;
    // Distinct samples per run: seed the sequence from the clock.
    let base = Utc::now().timestamp_micros().unsigned_abs();
    let mut failed = 0;
    for n in 0..args.count {
        let now = Utc::now();
        let seq = base + n * args.batch.max(1) as u64;
        let request = match &sampler {
            Sampler::Code(signer) => {
                let body = samples::body(&signer.provider(), &args.event, seq, now);
                let (header, signature) = signer.header(&body, now);
                SignedRequest {
                    body,
                    content_type: "application/json",
                    headers: vec![(header.to_owned(), signature)],
                    query: Vec::new(),
                }
            }
            Sampler::Defined(signer) => {
                let elements = (0..args.batch.max(1) as u64)
                    .map(|i| signer.element(&args.event, seq + i, now))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| anyhow::anyhow!(e))?;
                signer.request(elements, seq, now)
            }
        };
        let mut post = client.post(&url).query(&request.query).header("content-type", request.content_type);
        for (name, value) in &request.headers {
            post = post.header(name, value);
        }
        let response = post.body(request.body).send().await.with_context(|| format!("POST {url}"))?;
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

/// A new key pair: Ed25519 (as `send-sample --key` and MailPace's
/// `public_keys` take them) or P-256 (SendGrid's).
pub fn keygen(kind: &str) -> anyhow::Result<String> {
    match kind {
        "ed25519" => {
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
        "p256" => {
            let (pkcs8, public) = p256_keypair();
            Ok(format!(
                "# ECDSA P-256 key pair for SendGrid-style signing\n\
                 # private (PKCS#8 DER, base64): for `hookbridge send-sample --key`; keep it secret\n\
                 private_key = \"{}\"\n\
                 # public (SubjectPublicKeyInfo DER, base64, as SendGrid shows it): for public_keys\n\
                 public_key = \"{public}\"\n",
                STANDARD.encode(pkcs8)
            ))
        }
        other => bail!("--kind `{other}` is not ed25519 or p256"),
    }
}
