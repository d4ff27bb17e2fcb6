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
    /// Only events of these providers (empty: all).
    pub providers: Vec<String>,
    /// Only events of these sources: a source name or a CloudEvents `source` (empty: all).
    pub sources: Vec<String>,
    /// Only events this CEL expression passes (see [`crate::filter`]).
    pub filter: Option<std::sync::Arc<crate::filter::EventFilter>>,
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

/// The relay's settings.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub topic_prefix: String,
    pub subscribers: Vec<SubscriberSettings>,
    /// How often the per-subscriber gauges (backlog, retries, dead letters) are refreshed.
    pub status_interval: std::time::Duration,
}

impl RelaySettings {
    /// The bus consumer group of a subscriber.
    pub fn group(&self, subscriber: &str) -> String {
        format!("{}.relay.{subscriber}", self.topic_prefix)
    }
}
