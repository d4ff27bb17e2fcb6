//! The streams listener's Prometheus metrics.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Debug, Clone)]
pub struct StreamMetrics {
    /// Clients connected now, by token and protocol (`sse`, `ws`).
    pub(crate) clients: IntGaugeVec,
    /// Events written to clients, by token and protocol.
    pub(crate) events: IntCounterVec,
    /// Streams ended, by reason.
    pub(crate) disconnects: IntCounterVec,
    /// How far behind the bus a client is when an event is handed to it:
    /// now minus the event's publish time.
    pub(crate) lag: HistogramVec,
}

impl StreamMetrics {
    /// Registers the metrics on `registry`.
    ///
    /// # Errors
    /// When they are registered already.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let clients = IntGaugeVec::new(
            Opts::new("hookbridge_stream_clients", "Stream clients connected now."),
            &["token", "protocol"],
        )?;
        let events = IntCounterVec::new(
            Opts::new("hookbridge_stream_events_sent_total", "Events written to stream clients."),
            &["token", "protocol"],
        )?;
        let disconnects = IntCounterVec::new(
            Opts::new(
                "hookbridge_stream_disconnects_total",
                "Streams ended, by reason: client (it went away), slow (it fell behind its buffer), shutdown, unavailable (the bus could not be read).",
            ),
            &["reason"],
        )?;
        let lag = HistogramVec::new(
            HistogramOpts::new(
                "hookbridge_stream_lag_seconds",
                "Time from the bus accepting an event to its being handed to a stream client.",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0, 300.0, 3600.0]),
            &["protocol"],
        )?;
        registry.register(Box::new(clients.clone()))?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(disconnects.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        Ok(Self { clients, events, disconnects, lag })
    }
}
