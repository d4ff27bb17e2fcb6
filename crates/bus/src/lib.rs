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
//!
//! Backends: [`embedded`] (a durable log on local disk). NATS JetStream and
//! Kafka implement the same traits and pass the same [`conformance`] suite.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod embedded;
mod error;

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookbridge_event::{Event, EventPattern};

pub use error::{Error, Result};

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
pub trait Bus: Publisher {
    /// Opens a consumer in a group.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad group name or conflicting options;
    /// [`Error::Unavailable`] when the backend cannot be reached.
    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Consumer>>;
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
}
