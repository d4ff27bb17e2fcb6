//! The bus between hookbridge's ingress and relay, in hookbridge's own types.
//!
//! - [`Publisher::publish`] resolves only once the backend has durably
//!   accepted the event (fsync'd, PubAck'd, delivery-reported), or says why
//!   not; a duplicate event (same source and id) is accepted once.
//! - [`Bus::subscribe`] opens a consumer in a named group with a committed
//!   position. Each [`Delivery`] carries its own ack handle: [`Delivery::ack`]
//!   commits it, [`Delivery::nack`] durably schedules it again after a
//!   delay. A group starts from its committed position, the earliest retained
//!   event, the latest, or a point in time (replay).
//! - [`Bus::tail`] reads the events of some types with no group and no
//!   acknowledgement, each with a cursor: an opaque string naming the bus
//!   position just after it, from which another tail (in any process on the
//!   same bus) resumes exactly (the streams listener's `Last-Event-ID`).
//!
//! Backends: [`embedded`] (a durable log on local disk), [`nats`] (JetStream)
//! and [`kafka`]. All implement the same traits and pass the same [`conformance`] suite.

pub mod attempts;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod embedded;
mod error;
pub mod kafka;
pub mod metrics;
pub mod nats;
mod options;

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookbridge_event::{Event, EventPattern};

pub use attempts::{AttemptQuery, AttemptRecord, StatusFilter};
pub use error::{Error, Result};
pub use options::{BusOptions, open};

/// What happened to a published event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Durably stored; it will be delivered.
    Published,
    /// An event with the same source and id is already held; nothing new was stored.
    Duplicate,
}

#[async_trait]
pub trait Publisher: Send + Sync + Debug {
    /// Publishes `event` on its topic (`<prefix>.<type>`).
    ///
    /// # Errors
    /// [`Error::Unavailable`] / [`Error::Closed`] when the backend cannot
    /// accept it now (retry later); nothing was acknowledged.
    async fn publish(&self, event: &Event) -> Result<PublishOutcome>;

    /// Whether the backend can accept events now.
    ///
    /// # Errors
    /// Why it cannot.
    async fn check_ready(&self) -> Result<()>;

    /// The backend's name, for logs and metric labels.
    fn backend(&self) -> &'static str;
}

/// Where a group reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The group's committed position; a group without one starts at `if_new`.
    Committed { if_new: NewGroup },
    /// Reset the group to the earliest retained event.
    Earliest,
    /// Reset the group to the end: only events published from now on.
    Latest,
    /// Reset the group to the first event published at or after this time.
    Time(DateTime<Utc>),
}

/// Where a group that has never committed starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewGroup {
    Earliest,
    Latest,
}

#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// Consumer group: consumers sharing it share the work and one position.
    pub group: String,
    /// Event types the group receives; other events advance its position.
    pub patterns: Vec<EventPattern>,
    pub start: StartFrom,
}

#[async_trait]
pub trait Bus: Publisher + std::any::Any {
    /// Opens a consumer in a group.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad group name or conflicting options;
    /// [`Error::Unavailable`] when the backend cannot be reached.
    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Consumer>>;

    /// The dead letters kept for `group`, oldest first.
    ///
    /// # Errors
    /// When the backend cannot be read.
    async fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetter>>;

    /// Hands dead letters (one by id, or all) back to `group` for delivery
    /// now, as first attempts; returns how many.
    ///
    /// # Errors
    /// When the backend cannot be written; nothing was moved.
    async fn replay_dead_letters(&self, group: &str, id: Option<&str>) -> Result<u64>;

    /// Deletes dead letters (one by id, or all); returns how many.
    ///
    /// # Errors
    /// When the backend cannot be written.
    async fn discard_dead_letters(&self, group: &str, id: Option<&str>) -> Result<u64>;

    /// What `group` still has to do among the events matching `patterns`.
    ///
    /// # Errors
    /// When the backend cannot be read.
    async fn group_status(&self, group: &str, patterns: &[EventPattern]) -> Result<GroupStatus>;

    /// How many retained events match `patterns` and were published in
    /// `[since, until]`, if the backend can tell cheaply enough.
    ///
    /// # Errors
    /// When the backend cannot be read.
    async fn count_between(
        &self,
        patterns: &[EventPattern],
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<u64>>;

    /// A small durable value shared by every process on this bus (e.g. a
    /// subscriber disabled by an operator).
    ///
    /// # Errors
    /// When the backend cannot be read.
    async fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Waits until every consumer dropped so far has let go of the bus (on
    /// Kafka: left its group, so other members take its partitions at once).
    /// Callers bound it with a timeout: an unreachable broker can hold it.
    async fn close(&self) {}

    /// Reads the events matching `patterns` from `from` on, without a group:
    /// nothing is acknowledged and nothing is held back for anyone else.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a cursor this bus did not give;
    /// [`Error::Unavailable`] when the backend cannot be reached.
    async fn tail(&self, patterns: Vec<EventPattern>, from: TailFrom) -> Result<Box<dyn Tail>>;

    /// Sets (or with `None` removes) a value read by [`get_state`](Bus::get_state).
    ///
    /// # Errors
    /// When the backend cannot be written.
    async fn put_state(&self, key: &str, value: Option<Vec<u8>>) -> Result<()>;

    /// Adds delivery attempts to the delivery record, kept for the bus's
    /// `attempts_retention` and read by every process on the bus.
    ///
    /// # Errors
    /// When the backend cannot be written; none of them may be kept.
    async fn record_attempts(&self, attempts: &[AttemptRecord]) -> Result<()>;

    /// The recorded attempts answering `query`, newest first, at most its limit.
    ///
    /// # Errors
    /// When the backend cannot be read.
    async fn attempts(&self, query: &AttemptQuery) -> Result<Vec<AttemptRecord>>;
}

/// Where a [`Bus::tail`] starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailFrom {
    /// With the events published from now on.
    Now,
    /// Just after the event this cursor came with.
    After(String),
    /// With the first event published at or after this time.
    Time(DateTime<Utc>),
}

/// What a [`Tail`] reads next.
#[derive(Debug, Clone)]
pub enum Tailed {
    /// An event, and the cursor just after it.
    Event { event: Box<Event>, cursor: String, published_at: DateTime<Utc> },
    /// Events between the position asked for and `oldest` are no longer
    /// retained; reading goes on from `oldest`, the oldest cursor there is.
    Resync { oldest: String },
}

/// A reader of the bus with no group (see [`Bus::tail`]).
#[async_trait]
pub trait Tail: Send + Debug {
    /// Waits for the next event, or a resync.
    ///
    /// # Errors
    /// [`Error::Closed`] when the bus shut down; [`Error::Unavailable`]
    /// when the backend cannot be read now.
    async fn next(&mut self) -> Result<Tailed>;
}

/// A cursor of another backend or version, or not one at all.
pub(crate) fn bad_cursor(cursor: &str) -> Error {
    let shown: String = cursor.chars().take(40).collect();
    Error::Invalid(format!("`{shown}` is not a cursor of this bus"))
}

/// An event a subscriber could not take, kept until replayed or discarded.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Identifies it within its group.
    pub id: String,
    pub event: Event,
    pub failure: Failure,
    pub dead_lettered_at: DateTime<Utc>,
}

/// Why delivery gave up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// Attempts made.
    pub attempts: u32,
    /// The subscriber's last HTTP status, if it answered.
    pub last_status: Option<u16>,
    /// What went wrong last, in words (never a secret).
    pub last_error: String,
}

/// A group's outstanding work.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupStatus {
    /// Matching events published and not yet settled by the group,
    /// including those waiting for a retry.
    pub backlog: u64,
    /// Of the backlog, events waiting for a retry (on NATS: delivered and
    /// not yet acknowledged, which includes retries).
    pub pending_retries: u64,
    pub dead_letters: u64,
    /// When the oldest unsettled matching event was published.
    pub oldest_undelivered: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait Consumer: Send + Debug {
    /// Waits for the next event of the group.
    ///
    /// # Errors
    /// [`Error::Closed`] when the bus shut down; other errors are transient.
    async fn next(&mut self) -> Result<Delivery>;
}

/// One received event and the handle that settles it. Dropping a delivery
/// without settling it hands it back for redelivery.
#[derive(Debug)]
pub struct Delivery {
    pub event: Event,
    /// 1 on first delivery, then one more after each nack.
    pub attempt: u32,
    /// When the bus accepted the event.
    pub published_at: DateTime<Utc>,
    acker: Box<dyn Acker>,
}

/// A backend's settlement of one delivery.
#[async_trait]
pub trait Acker: Send + Sync + Debug {
    async fn ack(self: Box<Self>) -> Result<()>;
    async fn nack(self: Box<Self>, delay: Duration) -> Result<()>;
    async fn dead_letter(self: Box<Self>, group: &str, failure: Failure) -> Result<()>;
}

impl Delivery {
    pub fn new(event: Event, attempt: u32, published_at: DateTime<Utc>, acker: Box<dyn Acker>) -> Self {
        Self { event, attempt, published_at, acker }
    }

    /// Marks the event done for this group; resolves once that is durable.
    ///
    /// # Errors
    /// When the position could not be stored; the event will come again.
    pub async fn ack(self) -> Result<()> {
        self.acker.ack().await
    }

    /// Delivers the event to this group again after `delay`, durably: the
    /// retry survives a restart and does not hold back newer events.
    ///
    /// # Errors
    /// When the retry could not be stored; the event will come again.
    pub async fn nack(self, delay: Duration) -> Result<()> {
        self.acker.nack(delay).await
    }

    /// Settles the event for this group and keeps it in `group`'s dead
    /// letters (usually this group's own; a replay files its failures under
    /// the subscriber's), atomically where the backend allows.
    ///
    /// # Errors
    /// When it could not be stored; the event will come again.
    pub async fn dead_letter(self, group: &str, failure: Failure) -> Result<()> {
        self.acker.dead_letter(group, failure).await
    }
}

/// Entry points for `fuzz/` (cargo-fuzz, `scripts/fuzz`): the formats the
/// backends read back from storage. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use hookbridge_event::Event;

    use crate::Failure;
    use crate::embedded::record;

    /// Decodes `bytes` as each kind of embedded-bus record; whatever decodes
    /// must encode back to the same record.
    pub fn embedded_records(bytes: &[u8]) {
        if let Some(r) = record::decode(bytes) {
            assert_eq!(record::encode(r.appended_ms, r.ty, r.key, r.json), bytes, "a record round-trips");
            let _ = Event::from_json(r.json);
        }
        if let Some((attempt, rest)) = record::decode_delayed(bytes) {
            assert_eq!(record::encode_delayed(attempt, rest), bytes, "a delayed record round-trips");
        }
        if let Some((failure, dead_ms, rest)) = record::decode_dead_letter(bytes) {
            let encoded = record::encode_dead_letter(&failure, dead_ms, rest);
            let (again, again_ms, again_rest) = record::decode_dead_letter(&encoded).expect("what we encode decodes");
            assert_eq!((again, again_ms, again_rest), (failure, dead_ms, rest), "a dead letter round-trips");
        }
    }

    /// What NATS and Kafka read back: an event's JSON (the payload) and a
    /// failure's JSON (a dead letter's header).
    pub fn broker_payloads(bytes: &[u8]) {
        if let Ok(event) = Event::from_json(bytes) {
            let json = event.to_json();
            assert_eq!(Event::from_json(&json).expect("ours parses").to_json(), json, "an event round-trips");
        }
        if let Ok(failure) = serde_json::from_slice::<Failure>(bytes) {
            let json = serde_json::to_vec(&failure).expect("serializes");
            assert_eq!(serde_json::from_slice::<Failure>(&json).expect("ours parses"), failure);
        }
    }
}
