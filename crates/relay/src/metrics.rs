//! Relay metrics. Label values: subscriber names from configuration and
//! fixed outcome sets.

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

pub const OUTCOMES: &[&str] = &["delivered", "retry_scheduled", "slowed_down", "dead_lettered", "gone"];
pub const REPLAY_OUTCOMES: &[&str] = &["delivered", "failed", "skipped"];

/// Why an event of a subscriber's types was not delivered (`filtered_total`).
const FILTER_REASONS: [&str; 3] = ["source", "filtered", "filter_error"];

#[derive(Debug, Clone)]
pub struct RelayMetrics {
    deliveries: IntCounterVec,
    filtered: IntCounterVec,
    slowed: IntCounterVec,
    duration: HistogramVec,
    latency: HistogramVec,
    pub(crate) backlog: IntGaugeVec,
    pub(crate) oldest_age: GaugeVec,
    pub(crate) pending_retries: IntGaugeVec,
    pub(crate) dead_letters: IntGaugeVec,
    pub(crate) circuit_state: IntGaugeVec,
    pub(crate) enabled: IntGaugeVec,
    held: IntGaugeVec,
    pub(crate) token_requests: IntCounterVec,
    replay_events: IntCounterVec,
    pub(crate) replays_running: IntGaugeVec,
    attempts_recorded: prometheus::IntCounter,
    attempts_unrecorded: IntCounterVec,
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0,
        86400.0,
    ]
}

impl RelayMetrics {
    /// Registers the relay metrics with every subscriber's label sets at zero.
    ///
    /// # Errors
    /// When a metric of the same name is already registered.
    pub fn register(registry: &Registry, subscribers: &[&str]) -> prometheus::Result<Self> {
        let label = &["subscriber"];
        let m = Self {
            deliveries: IntCounterVec::new(
                Opts::new("hookbridge_relay_deliveries_total", "Delivery attempts by subscriber and outcome."),
                &["subscriber", "outcome"],
            )?,
            filtered: IntCounterVec::new(
                Opts::new(
                    "hookbridge_relay_filtered_total",
                    "Events of a subscriber's types settled without a delivery, by reason: source (its providers/sources), filtered (its filter said no), filter_error (its filter failed on the event).",
                ),
                &["subscriber", "reason"],
            )?,
            slowed: IntCounterVec::new(
                Opts::new(
                    "hookbridge_relay_slowed_total",
                    "Times a subscriber's deliveries waited, by reason: rate_limit (its rate_limit), retry_after (it answered 429 with Retry-After).",
                ),
                &["subscriber", "reason"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new("hookbridge_relay_delivery_duration_seconds", "Time of one delivery attempt: POST to answer.")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                label,
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "hookbridge_relay_end_to_end_latency_seconds",
                    "At successful delivery, the time since the provider's event time (from=\"provider\") or since the ingress accepted it (from=\"ingress\").",
                )
                .buckets(latency_buckets()),
                &["subscriber", "from"],
            )?,
            backlog: IntGaugeVec::new(Opts::new("hookbridge_relay_backlog_events", "Events of the subscriber's types not yet settled."), label)?,
            oldest_age: GaugeVec::new(
                Opts::new("hookbridge_relay_oldest_undelivered_age_seconds", "Age of the oldest event not yet delivered (0 when none)."),
                label,
            )?,
            pending_retries: IntGaugeVec::new(Opts::new("hookbridge_relay_pending_retries", "Deliveries waiting for their next attempt."), label)?,
            dead_letters: IntGaugeVec::new(Opts::new("hookbridge_relay_dead_letters", "Dead letters kept for the subscriber."), label)?,
            circuit_state: IntGaugeVec::new(
                Opts::new("hookbridge_relay_circuit_state", "Endpoint circuit: 0 closed, 1 open, 2 probing."),
                label,
            )?,
            enabled: IntGaugeVec::new(Opts::new("hookbridge_relay_subscriber_enabled", "1 while the subscriber is enabled, 0 while disabled."), label)?,
            held: IntGaugeVec::new(
                Opts::new(
                    "hookbridge_relay_ordering_held_events",
                    "Events an ordered subscriber (ordering = \"subject\") holds in this relay process: in flight, retrying in place, or waiting behind an earlier event of their subject.",
                ),
                label,
            )?,
            token_requests: IntCounterVec::new(
                Opts::new(
                    "hookbridge_relay_oauth2_token_requests_total",
                    "OAuth2 client-credentials token requests for a subscriber with auth.type = \"oauth2\", by outcome: issued, failed.",
                ),
                &["subscriber", "outcome"],
            )?,
            replay_events: IntCounterVec::new(
                Opts::new("hookbridge_relay_replay_events_total", "Events handled by replays, by subscriber and outcome."),
                &["subscriber", "outcome"],
            )?,
            replays_running: IntGaugeVec::new(Opts::new("hookbridge_relay_replays_running", "Replays in progress."), label)?,
            attempts_recorded: prometheus::IntCounter::new(
                "hookbridge_relay_attempts_recorded_total",
                "Delivery attempts stored in the delivery record.",
            )?,
            attempts_unrecorded: IntCounterVec::new(
                Opts::new(
                    "hookbridge_relay_attempts_unrecorded_total",
                    "Delivery attempts left out of the delivery record, by reason: queue_full (more waiting than the writer holds), bus_unavailable (the bus refused them after retries). Deliveries are not affected.",
                ),
                &["reason"],
            )?,
        };
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(m.deliveries.clone()),
            Box::new(m.filtered.clone()),
            Box::new(m.slowed.clone()),
            Box::new(m.duration.clone()),
            Box::new(m.latency.clone()),
            Box::new(m.backlog.clone()),
            Box::new(m.oldest_age.clone()),
            Box::new(m.pending_retries.clone()),
            Box::new(m.dead_letters.clone()),
            Box::new(m.circuit_state.clone()),
            Box::new(m.enabled.clone()),
            Box::new(m.held.clone()),
            Box::new(m.token_requests.clone()),
            Box::new(m.replay_events.clone()),
            Box::new(m.replays_running.clone()),
            Box::new(m.attempts_recorded.clone()),
            Box::new(m.attempts_unrecorded.clone()),
        ];
        for c in collectors {
            registry.register(c)?;
        }
        for reason in ["queue_full", "bus_unavailable"] {
            m.attempts_unrecorded.with_label_values(&[reason]);
        }
        for s in subscribers {
            for outcome in OUTCOMES {
                m.deliveries.with_label_values(&[s, outcome]);
            }
            for outcome in REPLAY_OUTCOMES {
                m.replay_events.with_label_values(&[s, outcome]);
            }
            for reason in FILTER_REASONS {
                m.filtered.with_label_values(&[s, reason]);
            }
            for reason in ["rate_limit", "retry_after"] {
                m.slowed.with_label_values(&[s, reason]);
            }
            m.duration.with_label_values(&[s]);
            m.latency.with_label_values(&[s, "provider"]);
            m.latency.with_label_values(&[s, "ingress"]);
            m.backlog.with_label_values(&[s]);
            m.oldest_age.with_label_values(&[s]);
            m.pending_retries.with_label_values(&[s]);
            m.dead_letters.with_label_values(&[s]);
            m.circuit_state.with_label_values(&[s]);
            m.enabled.with_label_values(&[s]).set(1);
            m.replays_running.with_label_values(&[s]);
            m.held.with_label_values(&[s]);
            for outcome in ["issued", "failed"] {
                m.token_requests.with_label_values(&[s, outcome]);
            }
        }
        Ok(m)
    }

    pub(crate) fn attempt(&self, subscriber: &str, outcome: &str, took: Duration) {
        self.deliveries.with_label_values(&[subscriber, outcome]).inc();
        self.duration.with_label_values(&[subscriber]).observe(took.as_secs_f64());
    }

    pub(crate) fn delivered(&self, subscriber: &str, since_event: Duration, since_ingest: Duration) {
        self.latency.with_label_values(&[subscriber, "provider"]).observe(since_event.as_secs_f64());
        self.latency.with_label_values(&[subscriber, "ingress"]).observe(since_ingest.as_secs_f64());
    }

    pub(crate) fn filtered(&self, subscriber: &str, reason: &str) {
        self.filtered.with_label_values(&[subscriber, reason]).inc();
    }

    pub(crate) fn slowed(&self, subscriber: &str, reason: &str) {
        self.slowed.with_label_values(&[subscriber, reason]).inc();
    }

    pub(crate) fn held(&self, subscriber: &str, change: i64) {
        self.held.with_label_values(&[subscriber]).add(change);
    }

    pub(crate) fn recorded(&self, n: usize) {
        self.attempts_recorded.inc_by(n as u64);
    }

    pub(crate) fn unrecorded(&self, reason: &str, n: usize) {
        self.attempts_unrecorded.with_label_values(&[reason]).inc_by(n as u64);
    }

    pub(crate) fn replayed(&self, subscriber: &str, outcome: &str) {
        self.replay_events.with_label_values(&[subscriber, outcome]).inc();
    }
}
