//! HMAC-SHA256 shared by Mailpipe and Whippy.

use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// An HMAC key. `Debug` never shows it.
#[derive(Debug, Clone)]
pub struct HmacSecret(SecretSlice<u8>);

impl HmacSecret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(SecretSlice::from(bytes))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length.
        HmacSha256::new_from_slice(self.0.expose_secret()).expect("hmac takes any key length")
    }

    /// HMAC-SHA256 of the concatenated `parts`.
    pub fn sign(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the HMAC of the concatenated `parts`, compared in
    /// constant time.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut mac = self.mac();
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(tag).is_ok()
    }
}

/// Whether any of `secrets` produced `tag`. Every secret is tried, so the
/// time taken does not depend on which one matched.
pub(crate) fn verify_any(secrets: &[HmacSecret], parts: &[&[u8]], tag: &[u8]) -> bool {
    secrets.iter().fold(false, |ok, s| s.verify(parts, tag) | ok)
}

/// The value of header `name` as text, if present and visible ASCII.
pub(crate) fn header_str<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<Result<&'a str, ()>> {
    headers.get(name).map(|v| v.to_str().map(str::trim).map_err(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        let s = HmacSecret::new(b"Jefe".to_vec());
        let tag = s.sign(&[b"what do ya want ", b"for nothing?"]);
        assert_eq!(hex::encode(tag), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert!(s.verify(&[b"what do ya want for nothing?"], &tag));
        assert!(!s.verify(&[b"what do ya want for nothing!"], &tag));
        assert!(!s.verify(&[b"what do ya want for nothing?"], &tag[..31]));
    }

    #[test]
    fn debug_hides_the_key() {
        let s = HmacSecret::new(b"topsecret".to_vec());
        assert!(!format!("{s:?}").contains("topsecret"));
    }
}
