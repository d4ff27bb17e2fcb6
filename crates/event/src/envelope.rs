use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The CloudEvents specification version every event carries.
pub const SPEC_VERSION: &str = "1.0";
/// `datacontenttype` of every event: `data` is always JSON.
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// A normalized provider event as a CloudEvents 1.0 structured-mode event.
///
/// `source` + `id` is unique: the same provider webhook delivered twice yields
/// the same `id`, which is what the bus deduplicates on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Always [`SPEC_VERSION`].
    pub specversion: String,
    /// Stable id of the provider event (the provider's id, or one derived
    /// from the payload when the provider sends none).
    pub id: String,
    /// URI-reference naming the configured source, e.g. `urn:hookbridge:source:mailpace`.
    pub source: String,
    /// Normalized type from the taxonomy, or the provider's own name for
    /// events hookbridge does not know yet.
    #[serde(rename = "type")]
    pub ty: String,
    /// When the provider says the event happened; the receive time when it
    /// says nothing.
    pub time: DateTime<Utc>,
    /// The provider's message id (or resource id), for consumers that key on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Always [`DATA_CONTENT_TYPE`].
    pub datacontenttype: String,
    /// Extension: provider kind (`mailpace`, `mailpipe`, `whippy`).
    pub provider: String,
    /// Extension: the provider's own event name, e.g. `email.spam`.
    pub providerevent: String,
    /// Extension: when hookbridge accepted the webhook.
    pub ingesttime: DateTime<Utc>,
    /// Extension (CloudEvents distributed tracing): the W3C trace context of
    /// the ingress span, continued by the relay on every delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Normalized fields for the type, plus the provider's payload under `original`.
    pub data: Box<RawValue>,
}

impl Event {
    /// Key under which the bus deduplicates: unique per source, stable across
    /// redeliveries of the same webhook.
    pub fn dedup_key(&self) -> String {
        format!("{}\n{}", self.source, self.id)
    }

    /// The event as structured-mode JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing owned strings, timestamps and a RawValue cannot fail.
        serde_json::to_vec(self).expect("event serializes")
    }

    /// Parses a structured-mode event.
    ///
    /// # Errors
    /// When the bytes are not a JSON event of this shape.
    pub fn from_json(bytes: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(bytes)
    }
}
