//! The web console: what an operator of hookbridge needs in a browser,
//! served by the admin listener at `/console/` (documented in
//! `docs/console.md`).
//!
//! - Pages are rendered on the server ([`pages`], with maud's escaping);
//!   the little JavaScript there is (the live tail) and the stylesheet are
//!   compiled into the binary ([`assets`]): nothing loads from elsewhere.
//! - Access ([`session`]): a sign-in page takes the admin token and sets an
//!   `HttpOnly`, `SameSite=Strict` session cookie; every action is a form
//!   carrying the session's CSRF token. The admin API keeps accepting only
//!   the bearer token.
//! - The overview's charts come from this process's own metrics, sampled
//!   every few seconds ([`charts`]).

mod assets;
mod charts;
mod layout;
mod pages;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use hookbridge_bus::Bus;
use hookbridge_relay::Relay;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

pub use session::COOKIE;

/// What the console's pages read and act on.
#[derive(Debug, Clone)]
pub struct Console {
    relay: Arc<Relay>,
    bus: Arc<dyn Bus>,
    registry: prometheus::Registry,
    sessions: Arc<session::Sessions>,
    samples: Arc<charts::Samples>,
}

impl Console {
    /// The console of `relay` on `bus`, signed in with `token` (without
    /// one, the sign-in page says so and refuses every attempt). Starts
    /// sampling `registry` for the overview's charts until `shutdown`.
    pub fn new(
        relay: Arc<Relay>,
        bus: Arc<dyn Bus>,
        registry: prometheus::Registry,
        token: Option<&SecretString>,
        shutdown: CancellationToken,
    ) -> Self {
        let samples = Arc::new(charts::Samples::default());
        tokio::spawn(charts::sample(samples.clone(), registry.clone(), shutdown));
        Self { relay, bus, registry, sessions: Arc::new(session::Sessions::new(token)), samples }
    }

    /// The `/console` routes.
    pub fn router(self) -> Router {
        let signed_in = Router::new()
            .route("/console/", get(pages::overview))
            .route("/console/sources", get(pages::sources))
            .route("/console/events", get(pages::events))
            .route("/console/events/{id}", get(pages::event))
            .route("/console/subscribers", get(pages::subscribers))
            .route("/console/subscribers/{name}/{action}", post(pages::set_enabled))
            .route("/console/attempts", get(pages::attempts))
            .route("/console/dead-letters", get(pages::dead_letters))
            .route("/console/dead-letters/{name}/{action}", post(pages::act_on_dead_letters))
            .route("/console/replay", get(pages::replay_form).post(pages::start_replay))
            .route("/console/replays/{id}", get(pages::replay))
            .route("/console/tail", get(pages::tail))
            .route("/console/tail/stream", get(pages::tail_stream))
            .route("/console/logout", post(session::logout))
            .route_layer(axum::middleware::from_fn_with_state(self.clone(), session::require));
        Router::new()
            .route("/console", get(|| async { axum::response::Redirect::permanent("/console/") }))
            .route("/console/login", get(session::login_page).post(session::login))
            .route("/console/assets/{file}", get(assets::serve))
            .merge(signed_in)
            .with_state(self)
    }
}
