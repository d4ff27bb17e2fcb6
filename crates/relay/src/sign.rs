//! Standard Webhooks signatures of outbound deliveries.
//!
//! Signed content is `<webhook-id>.<webhook-timestamp>.<body>`, byte-exact.
//! `whsec_<base64>` secrets sign `v1,<base64 HMAC-SHA256>`; `whsk_<base64>`
//! keys sign `v1a,<base64 Ed25519>`. Several secrets (a rotation) give
//! several space-separated signatures in one `webhook-signature` header.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};

/// One signing secret. `Debug` never shows key material.
#[derive(Clone)]
pub enum SigningSecret {
    /// `whsec_`: HMAC-SHA256, signs `v1`.
    Hmac(SecretSlice<u8>),
    /// `whsk_`: Ed25519, signs `v1a`.
    Ed25519(Box<SigningKey>),
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hmac(_) => f.write_str("SigningSecret::Hmac([redacted])"),
            Self::Ed25519(key) => {
                write!(f, "SigningSecret::Ed25519(whpk_{})", STANDARD.encode(key.verifying_key().as_bytes()))
            }
        }
    }
}

/// Why a signing secret or verification key was refused (never showing it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a {0} key must be base64 after the prefix")]
    NotBase64(&'static str),
    #[error("a {prefix} key must decode to {expected} bytes, not {actual}")]
    WrongLength { prefix: &'static str, expected: &'static str, actual: usize },
    #[error("the whsk_ key's public half does not match its seed")]
    MismatchedPublicHalf,
    #[error("a whpk_ key must be an Ed25519 public key")]
    NotAKey,
    #[error("a signing secret starts with whsec_ (HMAC, v1) or whsk_ (Ed25519, v1a)")]
    UnknownPrefix,
}

impl SigningSecret {
    /// Parses `whsec_<base64>` (24 to 64 bytes) or `whsk_<base64>` (a 32-byte
    /// seed, or 64 bytes of seed and public key).
    ///
    /// # Errors
    /// What is wrong, never the secret.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        if let Some(b64) = s.strip_prefix("whsec_") {
            let bytes = STANDARD.decode(b64).map_err(|_| KeyError::NotBase64("whsec_"))?;
            if !(24..=64).contains(&bytes.len()) {
                return Err(KeyError::WrongLength { prefix: "whsec_", expected: "24-64", actual: bytes.len() });
            }
            Ok(Self::Hmac(SecretSlice::from(bytes)))
        } else if let Some(b64) = s.strip_prefix("whsk_") {
            let bytes = STANDARD.decode(b64).map_err(|_| KeyError::NotBase64("whsk_"))?;
            let seed: [u8; 32] = match bytes.len() {
                32 | 64 => bytes[..32].try_into().expect("32 bytes"),
                actual => return Err(KeyError::WrongLength { prefix: "whsk_", expected: "32 or 64", actual }),
            };
            let key = SigningKey::from_bytes(&seed);
            if bytes.len() == 64 && bytes[32..] != key.verifying_key().to_bytes() {
                return Err(KeyError::MismatchedPublicHalf);
            }
            Ok(Self::Ed25519(Box::new(key)))
        } else {
            Err(KeyError::UnknownPrefix)
        }
    }

    /// The `whpk_` public key subscribers verify `v1a` with.
    pub fn public_key(&self) -> Option<String> {
        match self {
            Self::Hmac(_) => None,
            Self::Ed25519(key) => Some(format!("whpk_{}", STANDARD.encode(key.verifying_key().as_bytes()))),
        }
    }

    fn sign(&self, content: &[&[u8]]) -> String {
        match self {
            Self::Hmac(key) => {
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.expose_secret()).expect("any key length");
                content.iter().for_each(|part| mac.update(part));
                format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
            }
            Self::Ed25519(key) => {
                let message = content.concat();
                format!("v1a,{}", STANDARD.encode(key.sign(&message).to_bytes()))
            }
        }
    }
}

/// The `webhook-signature` value for a delivery: one signature per secret.
pub fn signature_header(secrets: &[SigningSecret], id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let content: [&[u8]; 5] = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
    secrets.iter().map(|s| s.sign(&content)).collect::<Vec<_>>().join(" ")
}

/// A key a receiver verifies deliveries with: the `whsec_` secret (v1) or
/// the `whpk_` public key (v1a).
#[derive(Clone)]
pub enum VerifyKey {
    Hmac(SecretSlice<u8>),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hmac(_) => f.write_str("VerifyKey::Hmac([redacted])"),
            Self::Ed25519(key) => write!(f, "VerifyKey::Ed25519(whpk_{})", STANDARD.encode(key.as_bytes())),
        }
    }
}

impl VerifyKey {
    /// Parses `whsec_…` or `whpk_…`.
    ///
    /// # Errors
    /// What is wrong, never the secret.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        if let Some(b64) = s.strip_prefix("whpk_") {
            let bytes = STANDARD.decode(b64).map_err(|_| KeyError::NotBase64("whpk_"))?;
            let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| KeyError::WrongLength {
                prefix: "whpk_",
                expected: "32",
                actual: b.len(),
            })?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::NotAKey)?;
            return Ok(Self::Ed25519(key));
        }
        match SigningSecret::parse(s)? {
            SigningSecret::Hmac(key) => Ok(Self::Hmac(key)),
            SigningSecret::Ed25519(key) => Ok(Self::Ed25519(key.verifying_key())),
        }
    }
}

/// Why a received delivery was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("a webhook-id, webhook-timestamp or webhook-signature header is missing")]
    MissingHeader,
    #[error("the timestamp is not unix seconds or is too far from now")]
    BadTimestamp,
    #[error("no signature matches")]
    NoMatch,
}

/// Verifies a Standard Webhooks request: any signature in `signature`
/// (space-separated `v1,…`/`v1a,…`) made by any of `keys`, and a timestamp
/// within `tolerance_secs` of `now`. Compared in constant time.
///
/// # Errors
/// [`Rejected`] says why.
pub fn verify(
    keys: &[VerifyKey],
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), Rejected> {
    let (Some(id), Some(timestamp), Some(signature)) = (id, timestamp, signature) else {
        return Err(Rejected::MissingHeader);
    };
    let ts: i64 = timestamp.parse().map_err(|_| Rejected::BadTimestamp)?;
    // `abs_diff`: a timestamp near i64::MIN must not overflow.
    if now.abs_diff(ts) > tolerance_secs.unsigned_abs() {
        return Err(Rejected::BadTimestamp);
    }
    let content: [&[u8]; 5] = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
    let matched = signature.split(' ').filter_map(|s| s.split_once(',')).any(|(version, sig)| {
        let Ok(sig) = STANDARD.decode(sig) else { return false };
        keys.iter().any(|key| match (version, key) {
            ("v1", VerifyKey::Hmac(secret)) => {
                let mut mac =
                    hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose_secret()).expect("any key length");
                content.iter().for_each(|part| mac.update(part));
                mac.verify_slice(&sig).is_ok()
            }
            ("v1a", VerifyKey::Ed25519(public)) => ed25519_dalek::Signature::from_slice(&sig)
                .is_ok_and(|sig| ed25519_dalek::Verifier::verify(public, &content.concat(), &sig).is_ok()),
            _ => false,
        })
    });
    if matched { Ok(()) } else { Err(Rejected::NoMatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks specification's example.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    #[test]
    fn v1_matches_the_specification_example() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        assert_eq!(signature_header(&[secret], ID, TIMESTAMP, BODY), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn several_secrets_give_several_signatures() {
        let a = SigningSecret::parse(SECRET).unwrap();
        let b = SigningSecret::parse(&format!("whsk_{}", STANDARD.encode([5u8; 32]))).unwrap();
        let header = signature_header(&[a, b], ID, TIMESTAMP, BODY);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts[0].starts_with("v1,") && parts[1].starts_with("v1a,"), "{header}");
    }

    #[test]
    fn verify_accepts_ours_and_rejects_the_rest() {
        let hmac = SigningSecret::parse(SECRET).unwrap();
        let ed = SigningSecret::parse(&format!("whsk_{}", STANDARD.encode([5u8; 32]))).unwrap();
        let header = signature_header(&[hmac, ed.clone()], ID, TIMESTAMP, BODY);
        let by_secret = [VerifyKey::parse(SECRET).unwrap()];
        let by_public = [VerifyKey::parse(&ed.public_key().unwrap()).unwrap()];
        for keys in [&by_secret[..], &by_public[..]] {
            assert_eq!(verify(keys, Some(ID), Some("1614265330"), Some(&header), BODY, TIMESTAMP, 300), Ok(()));
            assert_eq!(
                verify(keys, Some(ID), Some("1614265330"), Some(&header), b"{}", TIMESTAMP, 300),
                Err(Rejected::NoMatch)
            );
            assert_eq!(
                verify(keys, Some("msg_other"), Some("1614265330"), Some(&header), BODY, TIMESTAMP, 300),
                Err(Rejected::NoMatch)
            );
            assert_eq!(
                verify(keys, Some(ID), Some("1614265330"), Some(&header), BODY, TIMESTAMP + 301, 300),
                Err(Rejected::BadTimestamp)
            );
            assert_eq!(verify(keys, Some(ID), None, Some(&header), BODY, TIMESTAMP, 300), Err(Rejected::MissingHeader));
        }
    }

    #[test]
    fn extreme_timestamps_are_rejected_not_overflowed() {
        let keys = [VerifyKey::parse(SECRET).unwrap()];
        for ts in [i64::MIN.to_string(), i64::MAX.to_string(), "-1".to_owned()] {
            assert_eq!(
                verify(&keys, Some("msg_1"), Some(&ts), Some("v1,AAAA"), b"{}", 1_700_000_000, 300),
                Err(Rejected::BadTimestamp),
                "{ts}"
            );
        }
    }

    #[test]
    fn bad_secrets_are_explained_without_echoing_them() {
        for (bad, says) in
            [("whsec_!!", "base64"), ("whsec_AAAA", "24-64"), ("plain", "whsec_"), ("whsk_AAAA", "32 or 64")]
        {
            let err = SigningSecret::parse(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let key = SigningKey::from_bytes(&[5; 32]);
        let mut mismatched = key.to_bytes().to_vec();
        mismatched.extend([0u8; 32]);
        assert!(
            SigningSecret::parse(&format!("whsk_{}", STANDARD.encode(mismatched))).unwrap_err()
                == KeyError::MismatchedPublicHalf
        );
        assert!(!format!("{:?}", SigningSecret::parse(SECRET).unwrap()).contains("MfKQ9r8"));
    }
}
