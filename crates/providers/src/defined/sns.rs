//! Amazon SNS message signatures (Amazon SES notifications arrive through
//! SNS): the string to sign built from the envelope by `Type`, an RSA
//! signature (SignatureVersion 1: SHA1, 2: SHA256) checked against the
//! certificate at `SigningCertURL`, fetched only over https from a host
//! matching the configured pattern and cached; a `TopicArn` allow-list;
//! subscription confirmation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use regex::Regex;
use ring::signature;
use serde::Deserialize;

use crate::VerifyError;

/// Where Amazon serves SNS signing certificates.
pub const DEFAULT_CERT_HOST: &str = r"^sns\.[a-zA-Z0-9\-]{3,}\.amazonaws\.com(\.cn)?$";
/// How long a fetched certificate is trusted before it is fetched again.
const CERT_TTL: Duration = Duration::from_secs(24 * 3600);
const MAX_CERTS: usize = 64;
const MAX_CERT_BYTES: usize = 64 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// An SNS message as it arrives (the HTTP body).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct Envelope {
    #[serde(rename = "Type")]
    pub kind: String,
    pub message_id: String,
    pub topic_arn: String,
    pub subject: Option<String>,
    pub message: String,
    pub timestamp: String,
    pub signature_version: String,
    pub signature: String,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
    #[serde(rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    pub token: Option<String>,
}

impl Envelope {
    /// The envelope as SNS sends it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "Type": self.kind,
            "MessageId": self.message_id,
            "TopicArn": self.topic_arn,
            "Message": self.message,
            "Timestamp": self.timestamp,
            "SignatureVersion": self.signature_version,
            "Signature": self.signature,
            "SigningCertURL": self.signing_cert_url,
        });
        let map = v.as_object_mut().expect("an object");
        if let Some(subject) = &self.subject {
            map.insert("Subject".into(), subject.clone().into());
        }
        if let Some(url) = &self.subscribe_url {
            map.insert("SubscribeURL".into(), url.clone().into());
        }
        if let Some(token) = &self.token {
            map.insert("Token".into(), token.clone().into());
        }
        v
    }

    /// The string SNS signs: `Key\nValue\n` pairs in a fixed order by type.
    pub fn string_to_sign(&self) -> String {
        let mut out = String::new();
        let mut pair = |k: &str, v: &str| {
            out.push_str(k);
            out.push('\n');
            out.push_str(v);
            out.push('\n');
        };
        pair("Message", &self.message);
        pair("MessageId", &self.message_id);
        if self.kind == "Notification" {
            if let Some(subject) = &self.subject {
                pair("Subject", subject);
            }
        } else {
            pair("SubscribeURL", self.subscribe_url.as_deref().unwrap_or_default());
        }
        pair("Timestamp", &self.timestamp);
        if self.kind != "Notification" {
            pair("Token", self.token.as_deref().unwrap_or_default());
        }
        pair("TopicArn", &self.topic_arn);
        pair("Type", &self.kind);
        out
    }
}

pub use crate::settings::SnsSettings;

/// Checks SNS messages for one source.
#[derive(Debug)]
pub(crate) struct SnsVerifier {
    host: Regex,
    topics: Vec<String>,
    confirm: bool,
    client: reqwest::Client,
    certs: Mutex<CertCache>,
}

/// Public keys by certificate URL, with when they were fetched.
type CertCache = HashMap<String, (Instant, Arc<Vec<u8>>)>;

/// What an accepted SNS request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnsOutcome {
    Notification,
    /// A subscription confirmed (its SubscribeURL fetched).
    Confirmed,
    /// A subscription confirmation left to the operator, or an
    /// unsubscribe confirmation: nothing to publish.
    Ignored,
}

impl SnsVerifier {
    pub fn new(settings: &SnsSettings) -> Result<Self, (String, String)> {
        let pattern = settings.cert_host.as_deref().unwrap_or(DEFAULT_CERT_HOST);
        let host = Regex::new(pattern).map_err(|e| ("signing_cert_host".to_owned(), format!("is not a regex: {e}")))?;
        let mut builder = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .user_agent(concat!("hookbridge/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &settings.cert_ca_pem {
            let certificate = reqwest::Certificate::from_pem(pem)
                .map_err(|e| ("signing_cert_ca".to_owned(), format!("is not a PEM certificate: {e}")))?;
            builder = builder.add_root_certificate(certificate);
        }
        let client = builder.build().map_err(|e| ("signing_cert_ca".to_owned(), e.to_string()))?;
        Ok(Self {
            host,
            topics: settings.topic_arns.clone(),
            confirm: settings.confirm_subscriptions,
            client,
            certs: Mutex::default(),
        })
    }

    /// An https URL on an allowed host, or why not.
    fn allowed_url(&self, text: &str) -> Result<reqwest::Url, &'static str> {
        let url = reqwest::Url::parse(text).map_err(|_| "not a URL")?;
        if url.scheme() != "https" {
            return Err("not https");
        }
        let host = url.host_str().ok_or("no host")?;
        if !self.host.is_match(host) {
            return Err("not an SNS host");
        }
        Ok(url)
    }

    async fn certificate(&self, url: reqwest::Url) -> Result<Arc<Vec<u8>>, VerifyError> {
        let key = url.to_string();
        if let Some((at, cert)) = self.lock().get(&key)
            && at.elapsed() < CERT_TTL
        {
            return Ok(cert.clone());
        }
        let unreachable = |detail: String| {
            tracing::warn!(url = %key, %detail, "cannot fetch the SNS signing certificate");
            VerifyError::CertificateUnavailable
        };
        let response = self.client.get(url).send().await.map_err(|e| unreachable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unreachable(format!("answered {}", response.status())));
        }
        let bytes = response.bytes().await.map_err(|e| unreachable(e.to_string()))?;
        if bytes.len() > MAX_CERT_BYTES {
            return Err(unreachable("too large".into()));
        }
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(&bytes).map_err(|_| unreachable("not a PEM certificate".into()))?;
        let cert = pem.parse_x509().map_err(|_| unreachable("not an X.509 certificate".into()))?;
        let public_key = Arc::new(cert.public_key().subject_public_key.data.to_vec());
        let mut certs = self.lock();
        if certs.len() >= MAX_CERTS {
            certs.clear();
        }
        certs.insert(key, (Instant::now(), public_key.clone()));
        Ok(public_key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CertCache> {
        self.certs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Verifies an SNS message and, for a subscription confirmation,
    /// confirms it when configured.
    pub async fn verify(&self, body: &[u8]) -> Result<SnsOutcome, VerifyError> {
        let malformed = |detail: &'static str| VerifyError::MalformedSignature {
            header: "SNS message".into(),
            detail: detail.into(),
        };
        let envelope: Envelope =
            serde_json::from_slice(body).map_err(|_| malformed("not an SNS message (JSON envelope)"))?;
        let algorithm: &dyn signature::VerificationAlgorithm = match envelope.signature_version.as_str() {
            "1" => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            "2" => &signature::RSA_PKCS1_2048_8192_SHA256,
            _ => return Err(malformed("SignatureVersion is not 1 or 2")),
        };
        let url = self.allowed_url(&envelope.signing_cert_url).map_err(|detail| {
            tracing::warn!(url = %envelope.signing_cert_url, detail, "SNS certificate URL refused");
            VerifyError::MalformedSignature { header: "SigningCertURL".into(), detail: detail.into() }
        })?;
        let signature = STANDARD.decode(envelope.signature.trim()).map_err(|_| malformed("Signature is not base64"))?;
        let public_key = self.certificate(url).await?;
        signature::UnparsedPublicKey::new(algorithm, public_key.as_slice())
            .verify(envelope.string_to_sign().as_bytes(), &signature)
            .map_err(|_| VerifyError::InvalidSignature)?;
        if !self.topics.is_empty() && !self.topics.contains(&envelope.topic_arn) {
            return Err(VerifyError::TopicNotAllowed);
        }
        match envelope.kind.as_str() {
            "Notification" => Ok(SnsOutcome::Notification),
            "SubscriptionConfirmation" if self.confirm => {
                let subscribe = envelope
                    .subscribe_url
                    .as_deref()
                    .ok_or_else(|| malformed("a SubscriptionConfirmation without SubscribeURL"))?;
                let url = self.allowed_url(subscribe).map_err(|detail| VerifyError::MalformedSignature {
                    header: "SubscribeURL".into(),
                    detail: detail.into(),
                })?;
                match self.client.get(url).send().await {
                    Ok(response) if response.status().is_success() => {
                        tracing::info!(topic = %envelope.topic_arn, "SNS subscription confirmed");
                        Ok(SnsOutcome::Confirmed)
                    }
                    Ok(response) => {
                        tracing::warn!(topic = %envelope.topic_arn, status = %response.status(), "SNS subscription confirmation refused; SNS will send it again");
                        Err(VerifyError::CertificateUnavailable)
                    }
                    Err(error) => {
                        tracing::warn!(topic = %envelope.topic_arn, %error, "SNS subscription confirmation failed; SNS will send it again");
                        Err(VerifyError::CertificateUnavailable)
                    }
                }
            }
            "SubscriptionConfirmation" => {
                tracing::warn!(topic = %envelope.topic_arn, "SNS subscription not confirmed: confirm_subscriptions is off (confirm it in the SNS console, or turn it on)");
                Ok(SnsOutcome::Ignored)
            }
            "UnsubscribeConfirmation" => {
                tracing::info!(topic = %envelope.topic_arn, "SNS unsubscribe confirmation received");
                Ok(SnsOutcome::Ignored)
            }
            _ => Err(malformed("Type is not Notification, SubscriptionConfirmation or UnsubscribeConfirmation")),
        }
    }
}
