//! Signing in and out, sessions and their CSRF tokens.
//!
//! A session is a random 256-bit id in an `HttpOnly`, `SameSite=Strict`
//! cookie scoped to `/console`; the process keeps only its SHA-256, with a
//! CSRF token every form of the session carries. Sessions live in the
//! process's memory: they end with it, and each relay replica has its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Console;
use crate::layout::{self, Page};

/// The session cookie's name.
pub const COOKIE: &str = "hookbridge_console";
/// A session unused this long ends.
const IDLE: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept; the least recently used goes first.
const MAX_SESSIONS: usize = 1000;

#[derive(Debug)]
pub(crate) struct Sessions {
    /// SHA-256 of the admin token; `None`: nobody can sign in.
    token: Option<[u8; 32]>,
    by_id: Mutex<HashMap<[u8; 32], Session>>,
}

#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    last_seen: Instant,
}

/// The signed-in session of a request, for the pages: its CSRF token.
#[derive(Debug, Clone)]
pub(crate) struct Signed {
    pub(crate) csrf: String,
    id: [u8; 32],
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl Sessions {
    pub(crate) fn new(token: Option<&SecretString>) -> Self {
        Self { token: token.map(|t| digest(t.expose_secret())), by_id: Mutex::default() }
    }

    /// A new session's cookie value, if `given` is the admin token.
    fn sign_in(&self, given: &str) -> Option<String> {
        let expected = self.token?;
        if !bool::from(digest(given.trim()).ct_eq(&expected)) {
            return None;
        }
        let id = random_hex();
        let mut sessions = self.by_id.lock().expect("sessions lock");
        sessions.retain(|_, s| s.last_seen.elapsed() < IDLE);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(digest(&id), Session { csrf: random_hex(), last_seen: Instant::now() });
        Some(id)
    }

    fn find(&self, headers: &HeaderMap) -> Option<Signed> {
        let id = cookie(headers)?;
        let key = digest(&id);
        let mut sessions = self.by_id.lock().expect("sessions lock");
        let session = sessions.get_mut(&key)?;
        if session.last_seen.elapsed() >= IDLE {
            sessions.remove(&key);
            return None;
        }
        session.last_seen = Instant::now();
        Some(Signed { csrf: session.csrf.clone(), id: key })
    }

    fn end(&self, signed: &Signed) {
        self.by_id.lock().expect("sessions lock").remove(&signed.id);
    }
}

/// The session cookie's value in a request.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Lets signed-in requests through, with their [`Signed`] session; sends
/// a browser that is not signed in to the sign-in page.
pub(crate) async fn require(State(console): State<Console>, mut request: Request, next: Next) -> Response {
    match console.sessions.find(request.headers()) {
        Some(signed) => {
            request.extensions_mut().insert(signed);
            next.run(request).await
        }
        None if request.method() == Method::GET => Redirect::to("/console/login").into_response(),
        None => {
            layout::refused(StatusCode::UNAUTHORIZED, "You are not signed in, or your session ended: sign in again.")
        }
    }
}

/// A form's fields (`application/x-www-form-urlencoded`), repeated ones kept.
#[derive(Debug, Default)]
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    pub(crate) fn parse(body: &Bytes) -> Self {
        Self(form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    pub(crate) fn all(&self, key: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    /// The 403 to answer when the form lacks the session's CSRF token.
    pub(crate) fn csrf_refusal(&self, signed: &Signed) -> Option<Response> {
        let given = self.get("csrf").unwrap_or_default();
        (!bool::from(given.as_bytes().ct_eq(signed.csrf.as_bytes()))).then(|| {
            layout::refused(
                StatusCode::FORBIDDEN,
                "This form's CSRF token is missing or wrong: nothing was done. Open the page again and repeat.",
            )
        })
    }
}

pub(crate) async fn login_page(State(console): State<Console>) -> Response {
    login_answer(&console, StatusCode::OK, None)
}

fn login_answer(console: &Console, status: StatusCode, error: Option<&str>) -> Response {
    let disabled = console.sessions.token.is_none();
    (status, Page::bare("Sign in").render(layout::login_form(error, disabled))).into_response()
}

pub(crate) async fn login(State(console): State<Console>, body: Bytes) -> Response {
    let form = Form::parse(&body);
    match console.sessions.sign_in(form.get("token").unwrap_or_default()) {
        Some(id) => {
            tracing::info!("console: signed in");
            let cookie = format!("{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}", IDLE.as_secs());
            ([(header::SET_COOKIE, cookie)], Redirect::to("/console/")).into_response()
        }
        None => {
            tracing::warn!("console: a sign-in with a wrong token was refused");
            let message = if console.sessions.token.is_none() {
                "The console is off: set admin.token in the configuration."
            } else {
                "That is not the admin token."
            };
            login_answer(&console, StatusCode::UNAUTHORIZED, Some(message))
        }
    }
}

pub(crate) async fn logout(
    State(console): State<Console>,
    axum::Extension(signed): axum::Extension<Signed>,
    body: Bytes,
) -> Response {
    if let Some(refused) = Form::parse(&body).csrf_refusal(&signed) {
        return refused;
    }
    console.sessions.end(&signed);
    let clear = format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, clear)], Redirect::to("/console/login")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_admin_token_signs_in_and_a_session_is_found_by_its_cookie() {
        let sessions = Sessions::new(Some(&SecretString::from("the-admin-token-0123")));
        assert!(sessions.sign_in("wrong").is_none());
        let id = sessions.sign_in("the-admin-token-0123").expect("signed in");
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, format!("other=1; {COOKIE}={id}").parse().unwrap());
        let signed = sessions.find(&headers).expect("found");
        assert_eq!(signed.csrf.len(), 64);
        sessions.end(&signed);
        assert!(sessions.find(&headers).is_none(), "signed out");
        let off = Sessions::new(None);
        assert!(off.sign_in("").is_none() && off.sign_in("anything").is_none());
    }

    #[test]
    fn a_form_without_its_csrf_token_is_refused() {
        let signed = Signed { csrf: "abc".into(), id: [0; 32] };
        assert!(Form::parse(&Bytes::from_static(b"csrf=abc&id=1&id=2")).csrf_refusal(&signed).is_none());
        assert!(Form::parse(&Bytes::from_static(b"csrf=abd")).csrf_refusal(&signed).is_some());
        assert!(Form::parse(&Bytes::from_static(b"id=1")).csrf_refusal(&signed).is_some());
        assert_eq!(Form::parse(&Bytes::from_static(b"id=1&id=2")).all("id"), ["1", "2"]);
    }
}
