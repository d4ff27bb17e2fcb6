//! The relay's side of the delivery record: each attempt is handed to a
//! background writer that stores them on the bus in batches, so recording
//! adds no wait to a delivery. A record that cannot be stored (the bus down
//! for longer than the writer retries, or more waiting than it holds) is
//! counted in `hookbridge_relay_attempts_unrecorded_total`; the event's
//! delivery is not affected.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookbridge_bus::{AttemptRecord, Bus};
use hookbridge_event::Event;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::RelayMetrics;
use crate::policy::{Attempt, Verdict};
use crate::settings::RecordAttempts;

/// Attempts waiting to be stored before new ones are dropped (and counted).
const QUEUE: usize = 20_000;
/// Most attempts stored in one write.
const BATCH: usize = 2000;
/// How long the writer gathers attempts before a write: fewer, larger
/// writes cost the bus (and the deliveries sharing its CPU) much less.
const GATHER: Duration = Duration::from_millis(200);
/// Waits between the tries of a write that fails.
const BACKOFF: [Duration; 3] = [Duration::from_millis(100), Duration::from_millis(500), Duration::from_secs(2)];

/// Hands attempts to the writer; cheap to clone. Off: records nothing.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    queue: Option<mpsc::Sender<AttemptRecord>>,
    keeps: RecordAttempts,
    metrics: RelayMetrics,
}

impl Recorder {
    /// Starts the writer on `tracker` (unless `keeps` is off). It stores
    /// what is queued until shutdown, then what the deliveries still running
    /// add, and ends when they have.
    pub(crate) fn start(
        bus: Arc<dyn Bus>,
        keeps: RecordAttempts,
        metrics: RelayMetrics,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        if keeps == RecordAttempts::Off {
            return Self { queue: None, keeps, metrics };
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tracker.spawn(write(bus, rx, metrics.clone(), tracker.clone(), shutdown));
        Self { queue: Some(tx), keeps, metrics }
    }

    /// Queues one attempt, if the record keeps it; never waits.
    pub(crate) fn record(&self, made: &Made<'_>) {
        let Some(queue) = &self.queue else { return };
        if !self.keeps.keeps(made.n, *made.verdict == Verdict::Delivered) {
            return;
        }
        if queue.try_send(made.record()).is_err() {
            self.metrics.unrecorded("queue_full", 1);
        }
    }
}

/// What one attempt was, as the record keeps it.
pub(crate) struct Made<'a> {
    pub(crate) subscriber: &'a str,
    pub(crate) event: &'a Event,
    pub(crate) published_at: DateTime<Utc>,
    pub(crate) n: u32,
    pub(crate) started: DateTime<Utc>,
    pub(crate) took: Duration,
    pub(crate) attempt: &'a Attempt,
    pub(crate) verdict: &'a Verdict,
    pub(crate) replay: Option<&'a str>,
}

impl Made<'_> {
    pub(crate) fn record(&self) -> AttemptRecord {
        let (status, error, response) = match self.attempt {
            Attempt::Status { status, body, .. } => (Some(*status), None, body.clone()),
            Attempt::Failed { error } => (None, Some(error.clone()), String::new()),
        };
        let next = match self.verdict {
            Verdict::Retry { delay } | Verdict::SlowDown { delay } => {
                Some(Utc::now() + chrono::Duration::from_std(*delay).unwrap_or(chrono::Duration::MAX))
            }
            _ => None,
        };
        AttemptRecord {
            event_id: self.event.id.clone(),
            event_type: self.event.ty.clone(),
            published_at: self.published_at,
            subscriber: self.subscriber.to_owned(),
            attempt: self.n,
            at: self.started,
            outcome: outcome(self.verdict).to_owned(),
            status,
            error,
            latency_ms: self.took.as_secs_f64() * 1000.0,
            response,
            next_attempt_at: next,
            replay: self.replay.map(str::to_owned),
        }
    }
}

/// The outcome label of a verdict (as `hookbridge_relay_deliveries_total` has it).
pub(crate) fn outcome(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Delivered => "delivered",
        Verdict::Retry { .. } => "retry_scheduled",
        Verdict::SlowDown { .. } => "slowed_down",
        Verdict::DeadLetter => "dead_lettered",
        Verdict::Gone => "gone",
    }
}

async fn write(
    bus: Arc<dyn Bus>,
    mut rx: mpsc::Receiver<AttemptRecord>,
    metrics: RelayMetrics,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            first = rx.recv() => first,
            () = shutdown.cancelled() => {
                // Deliveries still running may add more: keep storing until
                // this writer is the relay's last task and nothing waits.
                match rx.try_recv() {
                    Ok(record) => Some(record),
                    Err(_) if tracker.len() <= 1 => return,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
            }
        };
        let Some(first) = first else { return };
        batch.push(first);
        let until = tokio::time::Instant::now() + GATHER;
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) if shutdown.is_cancelled() => break,
                Err(_) => match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(record)) => batch.push(record),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        store(bus.as_ref(), &batch, &metrics).await;
        batch.clear();
    }
}

async fn store(bus: &dyn Bus, batch: &[AttemptRecord], metrics: &RelayMetrics) {
    let mut tries = BACKOFF.iter();
    loop {
        match bus.record_attempts(batch).await {
            Ok(()) => {
                metrics.recorded(batch.len());
                return;
            }
            Err(error) => match tries.next() {
                Some(wait) => tokio::time::sleep(*wait).await,
                None => {
                    tracing::warn!(%error, attempts = batch.len(), "cannot store delivery attempts in the delivery record; dropping them");
                    metrics.unrecorded("bus_unavailable", batch.len());
                    return;
                }
            },
        }
    }
}
