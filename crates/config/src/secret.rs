//! Secret references: a value given inline, as `env:NAME` (read from the
//! environment) or as `file:/path` (read from a file, e.g. a mounted
//! Kubernetes secret; one trailing newline is dropped).

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

/// A secret as written in the config. `Debug` shows where it comes from,
/// never an inline value.
#[derive(Clone)]
pub enum SecretRef {
    Inline(SecretString),
    Env(String),
    File(String),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("SecretRef::Inline([redacted])"),
            Self::Env(name) => write!(f, "SecretRef::Env({name})"),
            Self::File(path) => write!(f, "SecretRef::File({path})"),
        }
    }
}

impl SecretRef {
    pub fn parse(s: &str) -> Self {
        if let Some(name) = s.strip_prefix("env:") {
            Self::Env(name.to_owned())
        } else if let Some(path) = s.strip_prefix("file:") {
            Self::File(path.to_owned())
        } else {
            Self::Inline(SecretString::from(s.to_owned()))
        }
    }

    /// The secret's value.
    ///
    /// # Errors
    /// Says which variable or file is missing; never includes the value.
    pub fn resolve(&self) -> Result<String, SecretError> {
        match self {
            Self::Inline(s) => Ok(s.expose_secret().to_owned()),
            Self::Env(name) => std::env::var(name).map_err(|e| match e {
                std::env::VarError::NotPresent => SecretError::EnvMissing(name.clone()),
                std::env::VarError::NotUnicode(_) => SecretError::EnvNotUnicode(name.clone()),
            }),
            Self::File(path) => std::fs::read_to_string(path)
                .map(|s| s.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&s).to_owned())
                .map_err(|source| SecretError::File { path: path.clone(), source }),
        }
    }
}

/// Why a secret reference could not be resolved (never its value).
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("environment variable {0} is not valid UTF-8")]
    EnvNotUnicode(String),
    #[error("cannot read secret file {path}: {source}")]
    File { path: String, source: std::io::Error },
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(deserializer)?))
    }
}

/// A private key in PEM: `env:NAME` (the PEM itself), `file:/path` or a
/// path. The message of an error names where, never the value.
pub(crate) fn read_key_pem(reference: &str) -> Result<Vec<u8>, String> {
    if let Some(name) = reference.strip_prefix("env:") {
        return std::env::var(name)
            .map(String::into_bytes)
            .map_err(|_| format!("environment variable {name} is not set"));
    }
    let path = reference.strip_prefix("file:").unwrap_or(reference);
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}
