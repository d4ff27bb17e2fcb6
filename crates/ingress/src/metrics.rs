//! Ingress metrics. Label values come only from configuration (source
//! names), the provider list, the taxonomy (unknown types fold into
//! `other`) and the reason codes: never from request data.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookbridge_event::taxonomy;
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// `source` label of requests to a name no source has.
pub const UNKNOWN_SOURCE: &str = "unknown";

/// Every (outcome, reason) pair the ingress answers with: the two answers
/// that publish, then every rejection the error enums can express.
fn outcomes() -> Vec<(&'static str, &'static str)> {
    let mut outcomes = vec![
        ("accepted", "none"),
        ("duplicate", "none"),
        ("accepted", "subscription_confirmed"),
        ("accepted", "ignored"),
    ];
    outcomes.extend(crate::IngressError::labels());
    outcomes
}

#[derive(Debug, Clone)]
pub struct IngressMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    published: IntCounterVec,
    last_accepted: GaugeVec,
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl IngressMetrics {
    /// Registers the ingress metrics, with every label set of the configured
    /// `sources` (name, provider) starting at zero.
    ///
    /// # Errors
    /// When a metric of the same name is already registered.
    pub fn register(registry: &Registry, sources: &[(&str, &str)]) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new("hookbridge_ingress_requests_total", "Webhook requests by source, outcome and reason code."),
            &["source", "outcome", "reason"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "hookbridge_ingress_request_duration_seconds",
                "Time from the request's arrival to its answer, by source.",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["source"],
        )?;
        let published = IntCounterVec::new(
            Opts::new(
                "hookbridge_ingress_events_published_total",
                "Events published onto the bus, by provider and type.",
            ),
            &["provider", "type"],
        )?;
        let last_accepted = GaugeVec::new(
            Opts::new(
                "hookbridge_ingress_last_accepted_timestamp_seconds",
                "Unix time of the last accepted webhook per source (the process start until the first).",
            ),
            &["source"],
        )?;
        for metric in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(published.clone()),
            Box::new(last_accepted.clone()),
        ] {
            registry.register(metric)?;
        }
        let started = now_secs();
        for (source, provider) in sources {
            for (outcome, reason) in outcomes().iter().filter(|(o, _)| *o != "not_found") {
                requests.with_label_values(&[source, outcome, reason]);
            }
            duration.with_label_values(&[source]);
            last_accepted.with_label_values(&[source]).set(started);
            // The email providers' types, or the messaging names Whippy
            // documents; every provider's unknown names count as `other`.
            let types = if *provider == "whippy" { taxonomy::PASSTHROUGH_KNOWN } else { taxonomy::KNOWN };
            for ty in types.iter().copied().chain([taxonomy::OTHER]) {
                published.with_label_values(&[provider, ty]);
            }
        }
        requests.with_label_values(&[UNKNOWN_SOURCE, "not_found", "unknown_source"]);
        Ok(Self { requests, duration, published, last_accepted })
    }

    pub fn request(&self, source: &str, outcome: &str, reason: &str, took: Duration) {
        self.requests.with_label_values(&[source, outcome, reason]).inc();
        self.duration.with_label_values(&[source]).observe(took.as_secs_f64());
        if outcome == "accepted" || outcome == "duplicate" {
            self.last_accepted.with_label_values(&[source]).set(now_secs());
        }
    }

    pub fn published(&self, provider: &str, ty: &str) {
        self.published.with_label_values(&[provider, taxonomy::label_for(ty)]).inc();
    }
}
