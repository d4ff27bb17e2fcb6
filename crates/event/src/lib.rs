//! The normalized event hookbridge publishes: a CloudEvents 1.0 envelope in
//! structured JSON mode, the event-type taxonomy shared by every provider,
//! and the rules that turn an event type into a bus topic.
//!
//! - [`Event`] is the envelope; its `data` holds the normalized fields of
//!   [`data`] plus the provider's original payload under `original`.
//! - [`taxonomy`] lists the normalized types and folds unknown ones for
//!   bounded metric labels.
//! - [`topic`] names topics (`<prefix>.<event type>`) and matches the
//!   subscription patterns (`email.bounced`, `message.*`, `*`).
//!
//! The JSON Schema of the envelope and of each type's `data` is
//! [`SCHEMA_JSON`]; every test that produces an event validates against it.

pub mod data;
mod envelope;
pub mod taxonomy;
pub mod topic;
pub mod trace;

pub use envelope::{DATA_CONTENT_TYPE, Event, SPEC_VERSION};
pub use topic::{EventPattern, PatternError, TopicName};

/// JSON Schema (draft 2020-12) of the envelope and each normalized type's `data`.
pub const SCHEMA_JSON: &str = include_str!("../schema/event.schema.json");
