//! The relay: consumes the per-type topics and re-delivers each event to
//! every HTTP subscriber that wants it, signed with Standard Webhooks, with
//! durable retries, dead letters, endpoint health and replay.
//!
//! - [`Relay`]: the control operations behind the admin API; each
//!   subscriber's worker and consumer group are in `subscriber`.
//! - [`deliver`]: one HTTP attempt (with [`oauth2`] tokens); [`policy`]: what to do after it;
//!   [`circuit`]: endpoint health; [`sign`]: Standard Webhooks signatures.
//! - [`filter`]: a subscriber's CEL content filter; [`ordering`]: one event
//!   in flight per subject.
//! - [`replay`]: re-delivery from a point in time.
//! - [`api`]: the admin API (JSON over HTTP, bearer token).

pub mod api;
pub mod circuit;
pub mod deliver;
mod error;
pub mod filter;
mod metrics;
pub mod oauth2;
pub mod ordering;
pub mod policy;
mod record;
mod relay;
pub mod replay;
pub mod settings;
pub mod sign;
mod subscriber;

pub use error::{Error, Result};
pub use relay::{EventFate, EventView, Relay, SubscriberView};
pub use reqwest::Url;
pub use settings::{RecordAttempts, RelaySettings, SubscriberSettings};
pub use subscriber::Disabled;
