//! Bus metrics, recorded by whoever publishes (the ingress) so every backend
//! is measured the same way.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::Error;

#[derive(Debug, Clone)]
pub struct BusMetrics {
    publish_duration: HistogramVec,
    publish_failures: IntCounterVec,
}

/// Failure reasons, a bounded set.
pub const FAILURE_REASONS: &[&str] = &["timeout", "unavailable", "closed", "storage", "invalid"];

impl BusMetrics {
    /// Registers the bus metrics for `backend` (its label set starts at zero).
    ///
    /// # Errors
    /// When a metric of the same name is already registered.
    pub fn register(registry: &Registry, backend: &str) -> prometheus::Result<Self> {
        let publish_duration = HistogramVec::new(
            HistogramOpts::new(
                "hookbridge_bus_publish_duration_seconds",
                "Time from publish to the backend's durable acknowledgement, by backend.",
            )
            .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["backend"],
        )?;
        let publish_failures = IntCounterVec::new(
            Opts::new(
                "hookbridge_bus_publish_failures_total",
                "Publishes the backend did not acknowledge, by backend and reason.",
            ),
            &["backend", "reason"],
        )?;
        registry.register(Box::new(publish_duration.clone()))?;
        registry.register(Box::new(publish_failures.clone()))?;
        publish_duration.with_label_values(&[backend]);
        for reason in FAILURE_REASONS {
            publish_failures.with_label_values(&[backend, reason]);
        }
        Ok(Self { publish_duration, publish_failures })
    }

    pub fn published(&self, backend: &str, took: Duration) {
        self.publish_duration.with_label_values(&[backend]).observe(took.as_secs_f64());
    }

    /// A publish that failed (`None`: it timed out).
    pub fn failed(&self, backend: &str, error: Option<&Error>) {
        let reason = match error {
            None => "timeout",
            Some(Error::Unavailable(_)) => "unavailable",
            Some(Error::Closed) => "closed",
            Some(Error::Storage(_)) => "storage",
            Some(Error::Invalid(_)) => "invalid",
        };
        self.publish_failures.with_label_values(&[backend, reason]).inc();
    }
}
