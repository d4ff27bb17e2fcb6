use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hookbridge_providers::{PayloadError, PayloadErrorKind, VerifyError, VerifyErrorKind};
use serde::Serialize;
use strum::IntoEnumIterator;

/// Why a webhook was not accepted. A 4xx says precisely what was wrong
/// (never echoing secrets or the body); a 5xx says only that the provider
/// should retry, and the cause goes to the log.
#[derive(Debug, thiserror::Error, strum::EnumDiscriminants)]
#[strum_discriminants(name(IngressErrorKind), derive(strum::EnumIter))]
pub enum IngressError {
    #[error("no source is configured under this name")]
    UnknownSource,
    #[error("requests to this source may not come from this address")]
    Forbidden,
    #[error(transparent)]
    Unauthorized(#[from] VerifyError),
    #[error(transparent)]
    BadRequest(#[from] PayloadError),
    #[error("the body is larger than the {0}-byte limit")]
    TooLarge(usize),
    #[error("the request body could not be read")]
    UnreadableBody,
    #[error("the body did not arrive within {0:?}")]
    SlowBody(std::time::Duration),
    #[error("too many webhooks in flight; retry in a second")]
    Overloaded,
    #[error("the event could not be stored; retry later")]
    Unavailable,
    #[error("the signature cannot be checked now; retry later")]
    CannotVerify,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl IngressError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownSource => StatusCode::NOT_FOUND,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) | Self::UnreadableBody => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::SlowBody(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Unavailable | Self::Overloaded | Self::CannotVerify => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The outcome label of this answer.
    pub fn outcome(&self) -> &'static str {
        IngressErrorKind::from(self).outcome()
    }

    /// A bounded reason code, for responses, logs and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(e) => e.code(),
            Self::BadRequest(e) => e.code(),
            other => IngressErrorKind::from(other).code().expect("a kind without an inner error has its own code"),
        }
    }

    /// Every (outcome, reason code) pair a rejection can carry, derived from
    /// the error enums (the metric labels start at zero from this list).
    pub fn labels() -> Vec<(&'static str, &'static str)> {
        IngressErrorKind::iter()
            .flat_map(|kind| {
                let codes: Vec<&'static str> = match kind {
                    IngressErrorKind::Unauthorized => VerifyErrorKind::iter().map(VerifyErrorKind::code).collect(),
                    IngressErrorKind::BadRequest => PayloadErrorKind::iter().map(PayloadErrorKind::code).collect(),
                    other => other.code().into_iter().collect(),
                };
                codes.into_iter().map(move |code| (kind.outcome(), code))
            })
            .collect()
    }
}

impl IngressErrorKind {
    fn outcome(self) -> &'static str {
        match self {
            Self::UnknownSource => "not_found",
            Self::Forbidden => "forbidden",
            Self::Unauthorized => "unauthorized",
            Self::BadRequest | Self::UnreadableBody => "bad_request",
            Self::TooLarge => "too_large",
            Self::SlowBody => "timeout",
            Self::Unavailable | Self::CannotVerify => "unavailable",
            Self::Overloaded => "overloaded",
        }
    }

    /// The reason code of a kind that has one of its own; the kinds that
    /// wrap a provider's error take that error's code.
    fn code(self) -> Option<&'static str> {
        match self {
            Self::UnknownSource => Some("unknown_source"),
            Self::Forbidden => Some("ip_not_allowed"),
            Self::Unauthorized | Self::BadRequest => None,
            Self::TooLarge => Some("too_large"),
            Self::UnreadableBody => Some("unreadable_body"),
            Self::SlowBody => Some("slow_body"),
            Self::Unavailable => Some("unavailable"),
            Self::CannotVerify => Some("cannot_verify"),
            Self::Overloaded => Some("overloaded"),
        }
    }
}

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status(), Json(ErrorBody { error: self.code(), message: self.to_string() })).into_response();
        match self {
            Self::Unavailable | Self::CannotVerify => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Self::Overloaded => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::SlowBody(_) => {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_cover_every_rejection_once() {
        let labels = IngressError::labels();
        let unique: std::collections::BTreeSet<_> = labels.iter().collect();
        assert_eq!(unique.len(), labels.len(), "no pair twice: {labels:?}");
        for error in [
            IngressError::UnknownSource,
            IngressError::Forbidden,
            IngressError::Unauthorized(VerifyError::StaleTimestamp),
            IngressError::BadRequest(PayloadError::InvalidJson("x".into())),
            IngressError::TooLarge(1),
            IngressError::UnreadableBody,
            IngressError::SlowBody(std::time::Duration::from_secs(1)),
            IngressError::Unavailable,
            IngressError::CannotVerify,
            IngressError::Overloaded,
        ] {
            assert!(labels.contains(&(error.outcome(), error.code())), "{error:?} is listed");
        }
        assert!(labels.contains(&("unauthorized", "missing_signature")));
        assert!(labels.contains(&("bad_request", "invalid_payload")));
        assert_eq!(labels.len(), 19);
    }
}
