//! How an event is written as a Kafka record: headers, key, times.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Header of a retry record: when it is due (milliseconds since the epoch).
pub(crate) const DUE_HEADER: &str = "hookbridge_due";
/// Header of a retry record: the attempt it is.
pub(crate) const ATTEMPT_HEADER: &str = "hookbridge_attempt";
/// Header of a retry record: when the bus first accepted the event (ms).
pub(crate) const PUBLISHED_HEADER: &str = "hookbridge_published";
/// Header of a dead letter: why it failed (JSON `Failure`).
pub(crate) const FAILURE_HEADER: &str = "hookbridge_failure";
/// Header of a marker in a dead-letter topic: the id it removes, or `*`
/// for every dead letter before it.
pub(crate) const REMOVED_HEADER: &str = "hookbridge_removed";
/// The CloudEvents Kafka binding's content type for a structured event.
pub const CONTENT_TYPE: &str = "application/cloudevents+json; charset=UTF-8";

/// A header's value as text.
pub(crate) fn header<'a>(message: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    message.headers()?.iter().find(|h| h.key == name).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
}

pub(crate) fn millis_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_else(Utc::now)
}

/// The identity of an event for duplicate detection.
pub(super) fn msg_id(event: &Event) -> String {
    format!("{}#{}", event.source, event.id)
}

/// The headers of an event record.
pub(crate) fn event_headers(event: &Event) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(4)
        .insert(Header { key: "content-type", value: Some(CONTENT_TYPE) })
        .insert(Header { key: "ce_id", value: Some(event.id.as_str()) })
        .insert(Header { key: "ce_type", value: Some(event.ty.as_str()) })
        .insert(Header { key: "ce_source", value: Some(event.source.as_str()) })
}

/// The record key of an event: its subject (the provider's message id), so
/// one message's events share a partition.
pub(crate) fn event_key(event: &Event) -> &str {
    event.subject.as_deref().unwrap_or(event.id.as_str())
}
