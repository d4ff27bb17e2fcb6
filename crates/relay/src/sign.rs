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
            Self::Ed25519(key) => write!(f, "SigningSecret::Ed25519(whpk_{})", STANDARD.encode(key.verifying_key().as_bytes())),
        }
    }
}

impl SigningSecret {
    /// Parses `whsec_<base64>` (24 to 64 bytes) or `whsk_<base64>` (a 32-byte
    /// seed, or 64 bytes of seed and public key).
    ///
    /// # Errors
    /// What is wrong, never the secret.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(b64) = s.strip_prefix("whsec_") {
            let bytes = STANDARD.decode(b64).map_err(|_| "a whsec_ secret must be base64 after the prefix".to_owned())?;
            if !(24..=64).contains(&bytes.len()) {
                return Err(format!("a whsec_ secret must decode to 24-64 bytes, not {}", bytes.len()));
            }
            Ok(Self::Hmac(SecretSlice::from(bytes)))
        } else if let Some(b64) = s.strip_prefix("whsk_") {
            let bytes = STANDARD.decode(b64).map_err(|_| "a whsk_ key must be base64 after the prefix".to_owned())?;
            let seed: [u8; 32] = match bytes.len() {
                32 | 64 => bytes[..32].try_into().expect("32 bytes"),
                n => return Err(format!("a whsk_ key must decode to 32 or 64 bytes, not {n}")),
            };
            let key = SigningKey::from_bytes(&seed);
            if bytes.len() == 64 && bytes[32..] != key.verifying_key().to_bytes() {
                return Err("the whsk_ key's public half does not match its seed".to_owned());
            }
            Ok(Self::Ed25519(Box::new(key)))
        } else {
            Err("a signing secret starts with whsec_ (HMAC, v1) or whsk_ (Ed25519, v1a)".to_owned())
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
    fn bad_secrets_are_explained_without_echoing_them() {
        for (bad, says) in [("whsec_!!", "base64"), ("whsec_AAAA", "24-64"), ("plain", "whsec_"), ("whsk_AAAA", "32 or 64")] {
            let err = SigningSecret::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let key = SigningKey::from_bytes(&[5; 32]);
        let mut mismatched = key.to_bytes().to_vec();
        mismatched.extend([0u8; 32]);
        assert!(SigningSecret::parse(&format!("whsk_{}", STANDARD.encode(mismatched))).unwrap_err().contains("public half"));
        assert!(!format!("{:?}", SigningSecret::parse(SECRET).unwrap()).contains("MfKQ9r8"));
    }
}
