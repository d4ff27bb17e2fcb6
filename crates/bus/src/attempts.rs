//! The delivery record: every attempt the relay makes, kept on the bus for
//! a bounded time (`[bus] attempts_retention`) so operators can see why a
//! delivery failed, attempt by attempt, from any process on the same bus.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How much of a subscriber's response body an attempt keeps.
pub const RESPONSE_EXCERPT_BYTES: usize = 1024;

/// How long attempts are kept unless `[bus] attempts_retention` says otherwise.
pub const DEFAULT_RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Most attempts one query answers.
pub const MAX_ATTEMPTS_LISTED: usize = 1000;

/// One delivery attempt of one event to one subscriber.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub event_id: String,
    pub event_type: String,
    /// When the bus accepted the event: where to find it again.
    pub published_at: DateTime<Utc>,
    pub subscriber: String,
    /// 1 for the first delivery, then one more per retry.
    pub attempt: u32,
    /// When the request was sent.
    pub at: DateTime<Utc>,
    /// `delivered`, `retry_scheduled`, `slowed_down`, `dead_lettered` or `gone`.
    pub outcome: String,
    /// The subscriber's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why there was no answer (connection refused, timed out, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// From sending the request to the end of the response.
    pub latency_ms: f64,
    /// The first [`RESPONSE_EXCERPT_BYTES`] of the response body (lossy UTF-8).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub response: String,
    /// When the next attempt is due, if one was scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The replay this attempt belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<String>,
}

impl AttemptRecord {
    /// Whether the attempt did not deliver the event.
    pub fn failed(&self) -> bool {
        self.outcome != "delivered"
    }

    /// The record as stored.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an attempt serializes")
    }

    /// A stored record, or `None` for bytes that are not one.
    pub(crate) fn from_json(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Which attempts to list (`GET /admin/subscribers/{name}/attempts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptQuery {
    pub subscriber: Option<String>,
    pub event: Option<String>,
    /// Only attempts made at or after this time.
    pub since: Option<DateTime<Utc>>,
    pub status: Option<StatusFilter>,
    /// Most attempts answered, newest first.
    pub limit: usize,
}

impl Default for AttemptQuery {
    fn default() -> Self {
        Self { subscriber: None, event: None, since: None, status: None, limit: 100 }
    }
}

/// The `status=` filter of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusFilter {
    /// Every attempt that did not deliver.
    Failed,
    /// One outcome (`delivered`, `retry_scheduled`, …).
    Outcome(String),
    /// One HTTP status code.
    Code(u16),
    /// A class of codes: `4xx`, `5xx`.
    Class(u16),
}

/// The outcomes an attempt can have.
pub const OUTCOMES: [&str; 5] = ["delivered", "retry_scheduled", "slowed_down", "dead_lettered", "gone"];

impl std::str::FromStr for StatusFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "failed" {
            return Ok(Self::Failed);
        }
        if OUTCOMES.contains(&s) {
            return Ok(Self::Outcome(s.to_owned()));
        }
        if let Ok(code) = s.parse::<u16>()
            && (100..=599).contains(&code)
        {
            return Ok(Self::Code(code));
        }
        if let [d @ b'1'..=b'5', b'x', b'x'] = s.as_bytes() {
            return Ok(Self::Class(u16::from(d - b'0')));
        }
        Err(format!(
            "`{s}` is not a status filter: give failed, {}, an HTTP status (500) or a class (5xx)",
            OUTCOMES.join(", ")
        ))
    }
}

impl AttemptQuery {
    /// Whether `record` answers this query.
    pub fn matches(&self, record: &AttemptRecord) -> bool {
        self.subscriber.as_ref().is_none_or(|s| *s == record.subscriber)
            && self.event.as_ref().is_none_or(|e| *e == record.event_id)
            && self.since.is_none_or(|since| record.at >= since)
            && self.status.as_ref().is_none_or(|status| match status {
                StatusFilter::Failed => record.failed(),
                StatusFilter::Outcome(outcome) => record.outcome == *outcome,
                StatusFilter::Code(code) => record.status == Some(*code),
                StatusFilter::Class(class) => record.status.is_some_and(|s| s / 100 == *class),
            })
    }

    /// The most answered: `limit`, at least 1, at most [`MAX_ATTEMPTS_LISTED`].
    pub fn capped_limit(&self) -> usize {
        self.limit.clamp(1, MAX_ATTEMPTS_LISTED)
    }
}

/// Where a backend that reads its record forward scans from, in turn,
/// until enough attempts answer: the last hour, the last day, then
/// everything since `query.since` (`None`: all that is retained).
pub(crate) fn scan_starts(query: &AttemptQuery, now: DateTime<Utc>) -> Vec<Option<DateTime<Utc>>> {
    let mut starts: Vec<Option<DateTime<Utc>>> = [1, 24]
        .into_iter()
        .map(|hours| now - chrono::Duration::hours(hours))
        .filter(|start| query.since.is_none_or(|since| *start > since))
        .map(Some)
        .collect();
    starts.push(query.since);
    starts
}

/// The part of a broker subject or key naming an event: a hash, so any id fits.
pub(crate) fn event_token(event_id: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(event_id.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Keeps the newest `limit` records of those offered, in any order; gives
/// them newest first.
#[derive(Debug)]
pub(crate) struct Newest {
    limit: usize,
    kept: std::collections::BinaryHeap<std::cmp::Reverse<Ordered>>,
}

#[derive(Debug)]
struct Ordered(AttemptRecord);

impl PartialEq for Ordered {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Ordered {}
impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0.at, self.0.attempt, &self.0.event_id).cmp(&(other.0.at, other.0.attempt, &other.0.event_id))
    }
}

impl Newest {
    pub(crate) fn new(query: &AttemptQuery) -> Self {
        Self { limit: query.capped_limit(), kept: std::collections::BinaryHeap::new() }
    }

    pub(crate) fn offer(&mut self, record: AttemptRecord) {
        self.kept.push(std::cmp::Reverse(Ordered(record)));
        if self.kept.len() > self.limit {
            self.kept.pop();
        }
    }

    pub(crate) fn into_newest_first(self) -> Vec<AttemptRecord> {
        // `into_sorted_vec` of `Reverse` is descending by the inner order.
        self.kept.into_sorted_vec().into_iter().map(|std::cmp::Reverse(Ordered(r))| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at: i64, outcome: &str, status: Option<u16>) -> AttemptRecord {
        AttemptRecord {
            event_id: format!("e{at}"),
            event_type: "email.sent".into(),
            published_at: DateTime::from_timestamp(at, 0).unwrap(),
            subscriber: "crm".into(),
            attempt: 1,
            at: DateTime::from_timestamp(at, 0).unwrap(),
            outcome: outcome.into(),
            status,
            error: None,
            latency_ms: 1.0,
            response: String::new(),
            next_attempt_at: None,
            replay: None,
        }
    }

    #[test]
    fn status_filters_parse_and_match() {
        let q = |s: &str| AttemptQuery { status: Some(s.parse().unwrap()), ..AttemptQuery::default() };
        let failed = record(1, "retry_scheduled", Some(503));
        let ok = record(2, "delivered", Some(204));
        assert!(q("failed").matches(&failed) && !q("failed").matches(&ok));
        assert!(q("5xx").matches(&failed) && !q("4xx").matches(&failed));
        assert!(q("503").matches(&failed) && !q("500").matches(&failed));
        assert!(q("delivered").matches(&ok) && !q("delivered").matches(&failed));
        for bad in ["6xx", "ok", "99", "x5xx", ""] {
            assert!(bad.parse::<StatusFilter>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_newest_are_kept_newest_first() {
        let mut newest = Newest::new(&AttemptQuery { limit: 3, ..AttemptQuery::default() });
        for at in [5, 1, 9, 3, 7] {
            newest.offer(record(at, "delivered", Some(200)));
        }
        let ids: Vec<_> = newest.into_newest_first().into_iter().map(|r| r.event_id).collect();
        assert_eq!(ids, ["e9", "e7", "e5"]);
    }

    #[test]
    fn a_record_round_trips_through_its_stored_form() {
        let mut r = record(4, "dead_lettered", None);
        r.error = Some("connection failed: Connection refused".into());
        assert_eq!(AttemptRecord::from_json(&r.to_json()), Some(r));
        assert_eq!(AttemptRecord::from_json(b"{not json"), None);
    }
}
