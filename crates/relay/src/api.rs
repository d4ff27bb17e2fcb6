//! The admin API, served on the admin listener under `/admin` (documented in
//! `docs/admin-api.md`). Every request needs `Authorization: Bearer <admin.token>`.
//! The CLI's `subscribers`, `dead-letters` and `replay` commands are its
//! clients, so they work the same on every backend and against a relay
//! running anywhere.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use hookbridge_event::EventPattern;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Error, Relay};

#[derive(Debug, Clone)]
struct Api {
    relay: Arc<Relay>,
}

/// SHA-256 of the admin token: compared in constant time, whatever its length.
#[derive(Debug, Clone, Copy)]
struct Token(Option<[u8; 32]>);

/// `router` with every route behind `Authorization: Bearer <admin.token>`;
/// without a token every call is refused (403). The `/admin` routes and
/// anything else on the admin listener that is not a probe or metrics.
pub fn require_token<S: Clone + Send + Sync + 'static>(router: Router<S>, token: Option<&SecretString>) -> Router<S> {
    let token = Token(token.map(|t| Sha256::digest(t.expose_secret().as_bytes()).into()));
    router.route_layer(middleware::from_fn_with_state(token, authorize))
}

/// The `/admin` router. Without a token every call is refused: the admin
/// API changes what is delivered, so it is never open.
pub fn router(relay: Arc<Relay>, token: Option<&SecretString>) -> Router {
    let api = Api { relay };
    let routes = Router::new()
        .route("/admin/subscribers", get(subscribers))
        .route("/admin/subscribers/{name}/enable", post(enable))
        .route("/admin/subscribers/{name}/disable", post(disable))
        .route("/admin/subscribers/{name}/dead-letters", get(dead_letters))
        .route("/admin/subscribers/{name}/dead-letters/replay", post(replay_dead_letters))
        .route("/admin/subscribers/{name}/dead-letters/discard", post(discard_dead_letters))
        .route("/admin/subscribers/{name}/replay", post(start_replay))
        .route("/admin/replays/{id}", get(replay))
        .route("/admin/subscribers/{name}/attempts", get(attempts))
        .route("/admin/events/{id}", get(event));
    require_token(routes, token).with_state(api)
}

#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    message: String,
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    (status, Json(ErrorBody { error: code, message: message.into() })).into_response()
}

async fn authorize(State(Token(token)): State<Token>, request: Request, next: Next) -> Response {
    let Some(expected) = token else {
        return error(StatusCode::FORBIDDEN, "admin_api_disabled", "set admin.token to use the admin API");
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| -> [u8; 32] { Sha256::digest(t.trim().as_bytes()).into() });
    match given {
        Some(given) if bool::from(given.ct_eq(&expected)) => next.run(request).await,
        _ => {
            error(StatusCode::UNAUTHORIZED, "unauthorized", "a valid `Authorization: Bearer <admin.token>` is required")
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match &self {
            Error::UnknownSubscriber(_) | Error::UnknownReplay(_) | Error::UnknownEvent(_) => {
                error(StatusCode::NOT_FOUND, "not_found", self.to_string())
            }
            Error::DisabledInConfig(_) => error(StatusCode::CONFLICT, "disabled_in_config", self.to_string()),
            Error::Invalid(_) | Error::Bus(hookbridge_bus::Error::Invalid(_)) => {
                error(StatusCode::BAD_REQUEST, "invalid", self.to_string())
            }
            Error::Bus(cause) => {
                tracing::error!(error = %cause, "admin API: bus unavailable");
                error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the bus is unavailable; retry later")
            }
        }
    }
}

type ApiResult<T> = Result<Json<T>, Error>;

async fn subscribers(State(api): State<Api>) -> ApiResult<Vec<crate::SubscriberView>> {
    Ok(Json(api.relay.subscribers().await?))
}

async fn enable(State(api): State<Api>, Path(name): Path<String>) -> ApiResult<crate::SubscriberView> {
    Ok(Json(api.relay.set_enabled(&name, true).await?))
}

async fn disable(State(api): State<Api>, Path(name): Path<String>) -> ApiResult<crate::SubscriberView> {
    Ok(Json(api.relay.set_enabled(&name, false).await?))
}

/// A dead letter as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeadLetterView {
    pub id: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: String,
    pub dead_lettered_at: DateTime<Utc>,
    pub event: serde_json::Value,
}

async fn dead_letters(State(api): State<Api>, Path(name): Path<String>) -> ApiResult<Vec<DeadLetterView>> {
    let letters = api.relay.dead_letters(&name).await?;
    Ok(Json(
        letters
            .into_iter()
            .map(|l| DeadLetterView {
                id: l.id,
                event_id: l.event.id.clone(),
                ty: l.event.ty.clone(),
                attempts: l.failure.attempts,
                last_status: l.failure.last_status,
                last_error: l.failure.last_error,
                dead_lettered_at: l.dead_lettered_at,
                event: serde_json::from_slice(&l.event.to_json()).unwrap_or_default(),
            })
            .collect(),
    ))
}

/// Body of the dead-letter replay and discard calls: one id, or all.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Selection {
    pub id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Count {
    pub count: u64,
}

async fn replay_dead_letters(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: Option<Json<Selection>>,
) -> ApiResult<Count> {
    let selection = body.map(|Json(s)| s).unwrap_or_default();
    Ok(Json(Count { count: api.relay.replay_dead_letters(&name, selection.id.as_deref()).await? }))
}

async fn discard_dead_letters(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: Option<Json<Selection>>,
) -> ApiResult<Count> {
    let selection = body.map(|Json(s)| s).unwrap_or_default();
    Ok(Json(Count { count: api.relay.discard_dead_letters(&name, selection.id.as_deref()).await? }))
}

/// Body of `POST /admin/subscribers/{name}/replay`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReplayRequest {
    pub since: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
    /// Only these event types (patterns), within the subscriber's.
    #[serde(default)]
    pub events: Vec<String>,
}

async fn start_replay(
    State(api): State<Api>,
    Path(name): Path<String>,
    Json(request): Json<ReplayRequest>,
) -> ApiResult<crate::replay::ReplayView> {
    let events = request
        .events
        .iter()
        .map(|p| EventPattern::parse(p).map_err(|e| Error::Invalid(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(api.relay.start_replay(&name, request.since, request.until, events).await?))
}

async fn replay(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<crate::replay::ReplayView> {
    Ok(Json(api.relay.replay(&id)?))
}

/// The query of `GET /admin/subscribers/{name}/attempts`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AttemptsQuery {
    /// Only the attempts at this event.
    pub event: Option<String>,
    /// `failed`, an outcome (`delivered`, `retry_scheduled`, `slowed_down`,
    /// `dead_lettered`, `gone`), an HTTP status (`500`) or a class (`5xx`).
    pub status: Option<String>,
    /// Only attempts made at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// At most this many, newest first (default 100, at most 1000).
    pub limit: Option<usize>,
}

impl AttemptsQuery {
    /// The bus query this asks for.
    ///
    /// # Errors
    /// A status filter that is not one.
    pub fn to_query(&self) -> Result<hookbridge_bus::AttemptQuery, Error> {
        let status =
            self.status.as_deref().filter(|s| !s.is_empty()).map(str::parse).transpose().map_err(Error::Invalid)?;
        Ok(hookbridge_bus::AttemptQuery {
            subscriber: None,
            event: self.event.clone().filter(|e| !e.is_empty()),
            since: self.since,
            status,
            limit: self.limit.unwrap_or(100),
        })
    }
}

async fn attempts(
    State(api): State<Api>,
    Path(name): Path<String>,
    query: Result<Query<AttemptsQuery>, QueryRejection>,
) -> ApiResult<Vec<hookbridge_bus::AttemptRecord>> {
    let Query(query) = query.map_err(|e| Error::Invalid(e.body_text()))?;
    Ok(Json(api.relay.attempts(&name, query.to_query()?).await?))
}

async fn event(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<crate::relay::EventView> {
    Ok(Json(api.relay.event(&id).await?))
}
