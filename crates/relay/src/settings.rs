//! A subscriber's validated settings, built by `hookbridge-config`.

use std::time::Duration;

use hookbridge_event::{Event, EventPattern};
use http::{HeaderName, HeaderValue};

use crate::circuit::CircuitSettings;
use crate::policy::RetryPolicy;
use crate::sign::SigningSecret;

/// One HTTP subscriber.
#[derive(Debug, Clone)]
pub struct SubscriberSettings {
    pub name: String,
    pub url: reqwest::Url,
    /// Event types delivered: exact, `family.*` or `*`.
    pub events: Vec<EventPattern>,
    /// Empty: deliveries are not signed.
    pub secrets: Vec<SigningSecret>,
    /// A 2xx must arrive within this.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Deliveries in flight at once.
    pub max_in_flight: usize,
    /// Extra request headers (values are marked sensitive).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// PEM certificates trusted for this subscriber's TLS, besides the
    /// system's roots (an internal CA).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain and private key presented to the subscriber (mTLS).
    pub client_identity: Option<secrecy::SecretSlice<u8>>,
    /// `http://…` or `https://…` proxy for this subscriber's
    /// requests (it may hold credentials).
    pub proxy: Option<secrecy::SecretString>,
    /// OAuth2 client credentials: a bearer token on every delivery.
    pub auth: Option<crate::oauth2::OAuth2Settings>,
    /// Only events of these providers (empty: all).
    pub providers: Vec<String>,
    /// Only events of these sources: a source name or a CloudEvents `source` (empty: all).
    pub sources: Vec<String>,
    /// Deliveries per second at most, per relay process, and the burst.
    pub rate_limit: Option<RateLimit>,
    /// Only events this CEL expression passes (see [`crate::filter`]).
    pub filter: Option<std::sync::Arc<crate::filter::EventFilter>>,
    /// `subject`: one event in flight per subject, in publish order.
    pub ordering: crate::ordering::Ordering,
    /// `false`: configured off; the admin API cannot enable it.
    pub enabled: bool,
    pub circuit: CircuitSettings,
}

impl SubscriberSettings {
    /// Whether `event` is delivered, or why not (a `filtered_total`
    /// reason): the provider/source filters, then the content filter (the
    /// type filter is applied by the bus).
    pub fn admit(&self, event: &Event) -> Result<(), &'static str> {
        if !self.accepts(event) {
            return Err("source");
        }
        match self.filter.as_ref().map(|f| f.evaluate(event)) {
            None | Some(crate::filter::Verdict::Pass) => Ok(()),
            Some(crate::filter::Verdict::Reject) => Err("filtered"),
            Some(crate::filter::Verdict::Error(error)) => {
                tracing::debug!(subscriber = %self.name, event_id = %event.id, %error, "the filter failed on an event: not delivered");
                Err("filter_error")
            }
        }
    }

    /// Whether the provider/source filters let `event` through.
    pub fn accepts(&self, event: &Event) -> bool {
        let provider_ok = self.providers.is_empty() || self.providers.contains(&event.provider);
        let source_ok = self.sources.is_empty()
            || self.sources.iter().any(|s| {
                *s == event.source || event.source.strip_prefix("urn:hookbridge:source:").is_some_and(|name| name == s)
            });
        provider_ok && source_ok
    }
}

/// A subscriber's delivery rate limit (per relay process).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Deliveries a second, on average.
    pub per_second: f64,
    /// Deliveries that may start at once after a quiet time.
    pub burst: u32,
}

impl RateLimit {
    /// Parses `N/s`, `N/m` or `N/h` (N a positive number).
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(text: &str, burst: Option<u32>) -> Result<Self, String> {
        let (n, unit) =
            text.trim().split_once('/').ok_or_else(|| format!("`{text}` is not a rate: use N/s, N/m or N/h"))?;
        let n: f64 = n.trim().parse().map_err(|_| format!("`{n}` is not a number"))?;
        let seconds = match unit.trim() {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("`{other}` is not a unit: use s, m or h")),
        };
        if !(n.is_finite() && n > 0.0) {
            return Err("the rate must be greater than 0".into());
        }
        let per_second = n / seconds;
        let burst = burst.unwrap_or_else(|| per_second.ceil().max(1.0) as u32);
        if burst == 0 {
            return Err("the burst must be at least 1".into());
        }
        Ok(Self { per_second, burst })
    }
}

/// The relay's settings.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub topic_prefix: String,
    pub subscribers: Vec<SubscriberSettings>,
    /// How often the per-subscriber gauges (backlog, retries, dead letters) are refreshed.
    pub status_interval: std::time::Duration,
    /// Which attempts the delivery record keeps (`[relay] record_attempts`).
    pub record_attempts: RecordAttempts,
}

/// Which delivery attempts are stored in the delivery record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordAttempts {
    /// Every attempt (`true`, `"all"`).
    #[default]
    All,
    /// Every attempt but a first one that delivered (`"failures"`): what
    /// failed, and how each event that failed ended. A record write per
    /// delivery costs the bus; this keeps the record of healthy traffic
    /// at nothing.
    Failures,
    /// None (`false`, `"off"`).
    Off,
}

impl RecordAttempts {
    /// The setting of `[relay] record_attempts` named `name`.
    ///
    /// # Errors
    /// A message naming the choices.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "all" => Ok(Self::All),
            "failures" => Ok(Self::Failures),
            "off" => Ok(Self::Off),
            other => {
                Err(format!("`{other}` is not a choice: use true (or \"all\"), \"failures\" or false (or \"off\")"))
            }
        }
    }

    /// Whether an attempt is kept: `attempt` counts from 1, `delivered` is its outcome.
    pub fn keeps(self, attempt: u32, delivered: bool) -> bool {
        match self {
            Self::All => true,
            Self::Failures => attempt > 1 || !delivered,
            Self::Off => false,
        }
    }
}

impl RelaySettings {
    /// The bus consumer group of a subscriber.
    pub fn group(&self, subscriber: &str) -> String {
        format!("{}.relay.{subscriber}", self.topic_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::{RateLimit, RecordAttempts};

    #[test]
    fn record_attempts_failures_keeps_all_but_first_deliveries() {
        assert!(RecordAttempts::All.keeps(1, true));
        assert!(!RecordAttempts::Failures.keeps(1, true), "a first attempt that delivered");
        assert!(RecordAttempts::Failures.keeps(1, false));
        assert!(RecordAttempts::Failures.keeps(2, true), "how a failed event ended");
        assert!(!RecordAttempts::Off.keeps(2, false));
        assert_eq!(RecordAttempts::parse("failures"), Ok(RecordAttempts::Failures));
        assert_eq!(RecordAttempts::parse("all"), Ok(RecordAttempts::All));
        assert_eq!(RecordAttempts::parse("off"), Ok(RecordAttempts::Off));
        assert!(RecordAttempts::parse("some").unwrap_err().contains("\"failures\""));
    }

    #[test]
    fn rate_limits_parse_per_second_minute_and_hour() {
        assert_eq!(RateLimit::parse("200/s", None), Ok(RateLimit { per_second: 200.0, burst: 200 }));
        assert_eq!(RateLimit::parse("120/m", Some(5)), Ok(RateLimit { per_second: 2.0, burst: 5 }));
        assert_eq!(RateLimit::parse("36/h", None), Ok(RateLimit { per_second: 0.01, burst: 1 }));
        for bad in ["200", "0/s", "-1/s", "x/s", "10/d", "10/s/s"] {
            assert!(RateLimit::parse(bad, None).is_err(), "{bad}");
        }
        assert!(RateLimit::parse("10/s", Some(0)).is_err());
    }
}
