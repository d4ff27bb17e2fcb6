use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hookbridge_providers::{PayloadError, VerifyError};
use serde::Serialize;

/// Why a webhook was not accepted. A 4xx says precisely what was wrong
/// (never echoing secrets or the body); a 5xx says only that the provider
/// should retry, and the cause goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("no source is configured under this name")]
    UnknownSource,
    #[error(transparent)]
    Unauthorized(#[from] VerifyError),
    #[error(transparent)]
    BadRequest(#[from] PayloadError),
    #[error("the body is larger than the {0}-byte limit")]
    TooLarge(usize),
    #[error("the request body could not be read")]
    UnreadableBody,
    #[error("the event could not be stored; retry later")]
    Unavailable,
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
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) | Self::UnreadableBody => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The outcome label of this answer.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::UnknownSource => "not_found",
            Self::Unauthorized(_) => "unauthorized",
            Self::BadRequest(_) | Self::UnreadableBody => "bad_request",
            Self::TooLarge(_) => "too_large",
            Self::Unavailable => "unavailable",
        }
    }

    /// A bounded reason code, for responses, logs and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownSource => "unknown_source",
            Self::Unauthorized(e) => e.reason_code(),
            Self::BadRequest(e) => e.reason_code(),
            Self::TooLarge(_) => "too_large",
            Self::UnreadableBody => "unreadable_body",
            Self::Unavailable => "unavailable",
        }
    }
}

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status(), Json(ErrorBody { error: self.code(), message: self.to_string() })).into_response();
        if matches!(self, Self::Unavailable) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}
