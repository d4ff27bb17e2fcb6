use std::borrow::Cow;

/// Why a webhook's signature was not accepted. Each maps to a 401 with a
/// stable reason code; none of them carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, strum::EnumDiscriminants)]
#[strum_discriminants(name(VerifyErrorKind), derive(strum::EnumIter))]
pub enum VerifyError {
    #[error("the signature ({0}) is missing")]
    MissingSignature(Cow<'static, str>),
    #[error("the signature ({header}) is malformed: {detail}")]
    MalformedSignature { header: Cow<'static, str>, detail: Cow<'static, str> },
    #[error("the signature does not match the body with any configured key")]
    InvalidSignature,
    #[error("the signature timestamp is outside the allowed tolerance")]
    StaleTimestamp,
    #[error("the credentials ({0}) are missing")]
    MissingCredentials(Cow<'static, str>),
    #[error("the credentials do not match the configured ones")]
    InvalidCredentials,
    #[error("this signed request was already accepted (replayed token)")]
    Replayed,
    #[error("the message's topic is not one this source accepts")]
    TopicNotAllowed,
    /// Not the sender's fault: the signing certificate could not be fetched
    /// (answered 503, so the provider retries).
    #[error("the signing certificate cannot be fetched now; retry later")]
    CertificateUnavailable,
}

impl VerifyError {
    /// A bounded reason code for responses, logs and metric labels.
    pub fn code(&self) -> &'static str {
        VerifyErrorKind::from(self).code()
    }
}

impl VerifyErrorKind {
    /// The reason code of every error of this kind; `VerifyErrorKind::iter()`
    /// lists them all (metric labels start at zero).
    pub fn code(self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::MalformedSignature => "malformed_signature",
            Self::InvalidSignature => "invalid_signature",
            Self::StaleTimestamp => "stale_timestamp",
            Self::MissingCredentials => "missing_credentials",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Replayed => "replayed",
            Self::TopicNotAllowed => "topic_not_allowed",
            Self::CertificateUnavailable => "certificate_unavailable",
        }
    }
}

/// A correctly signed body that is not a valid payload for its provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, strum::EnumDiscriminants)]
#[strum_discriminants(name(PayloadErrorKind), derive(strum::EnumIter))]
pub enum PayloadError {
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the payload is not a valid {provider} webhook: {detail}")]
    InvalidShape { provider: &'static str, detail: String },
}

impl PayloadError {
    /// A bounded reason code for responses, logs and metric labels.
    pub fn code(&self) -> &'static str {
        PayloadErrorKind::from(self).code()
    }

    pub(crate) fn shape(provider: &'static str, detail: impl Into<String>) -> Self {
        Self::InvalidShape { provider, detail: detail.into() }
    }
}

impl PayloadErrorKind {
    /// The reason code of every error of this kind.
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidShape => "invalid_payload",
        }
    }
}
