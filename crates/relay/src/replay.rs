//! Replay: re-deliver to one subscriber what the bus still retains from a
//! point in time, through a consumer group of its own (the subscriber's
//! live position is untouched). Each event gets one attempt; one that fails
//! goes to the subscriber's dead letters, so nothing is lost.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookbridge_bus::{Bus, Consumer, StartFrom, SubscribeOptions};
use hookbridge_event::EventPattern;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Result;
use crate::metrics::RelayMetrics;
use crate::policy::Attempt;
use crate::policy::Verdict;
use crate::record::{Made, Recorder};
use crate::subscriber::{Subscriber, failure};

/// With no event for this long, the replay has caught up with the log.
const CAUGHT_UP_AFTER: Duration = Duration::from_secs(1);
/// How long a replay waits for the first event of a window that is not
/// known to be empty: a new consumer group can take seconds to get it (a
/// Kafka broker makes a new group's first member wait
/// `group.initial.rebalance.delay.ms`, 3 s by default, and a rebalance can
/// take a session timeout).
const FIRST_EVENT_WITHIN: Duration = Duration::from_secs(30);
/// Once as many events of the window were read as the bus counted in it,
/// the wait for one more is this short: the rest of a window already
/// published comes from the log at once, so the replay is done sooner.
const CAUGHT_UP_AFTER_TOTAL: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Replay {
    id: String,
    subscriber: String,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    total: Option<u64>,
    delivered: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    done: AtomicBool,
    started_at: DateTime<Utc>,
    finished_at: Mutex<Option<DateTime<Utc>>>,
}

/// What a replay re-delivers: events published in `[since, until]` of
/// these types (all of the subscriber's when empty).
#[derive(Debug, Clone)]
pub struct Window {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub events: Vec<EventPattern>,
}

/// A replay's progress, as the admin API reports it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ReplayView {
    pub id: String,
    pub subscriber: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Events expected (an estimate made at the start), when the bus can tell.
    pub total: Option<u64>,
    pub delivered: u64,
    /// Dead-lettered after their one attempt.
    pub failed: u64,
    /// Filtered out by `events` or the subscriber's filters.
    pub skipped: u64,
    pub done: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Replay {
    pub(crate) async fn start(
        bus: Arc<dyn Bus>,
        sub: Arc<Subscriber>,
        window: Window,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
        metrics: RelayMetrics,
        recorder: Recorder,
    ) -> Result<Arc<Self>> {
        let Window { since, until, events } = window;
        let mut suffix = [0u8; 4];
        let _ = getrandom::fill(&mut suffix);
        let id = format!("{}-{}", Utc::now().format("%Y%m%dT%H%M%S"), u32::from_le_bytes(suffix) % 100_000);
        let counted = if events.is_empty() { &sub.settings.events } else { &events };
        let total = bus.count_between(counted, since, until).await?;
        let consumer = bus
            .subscribe(SubscribeOptions {
                group: format!("{}.replay.{id}", sub.group),
                patterns: sub.settings.events.clone(),
                start: StartFrom::Time(since),
            })
            .await?;
        let replay = Arc::new(Self {
            id,
            subscriber: sub.settings.name.clone(),
            since,
            until,
            total,
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            done: AtomicBool::new(false),
            started_at: Utc::now(),
            finished_at: Mutex::new(None),
        });
        tracing::info!(subscriber = %sub.settings.name, replay = %replay.id, %since, %until, total, "replay started");
        metrics.replays_running.with_label_values(&[&sub.settings.name]).inc();
        tracker.spawn(replay.clone().run(consumer, sub, events, shutdown, metrics, recorder));
        Ok(replay)
    }

    async fn run(
        self: Arc<Self>,
        mut consumer: Box<dyn Consumer>,
        sub: Arc<Subscriber>,
        events: Vec<EventPattern>,
        shutdown: CancellationToken,
        metrics: RelayMetrics,
        recorder: Recorder,
    ) {
        let in_flight = Arc::new(Semaphore::new(sub.settings.max_in_flight.max(1)));
        // Taken and not yet settled: a request slot is let go once the
        // endpoint has answered, before the settlement is stored.
        let in_hand = Arc::new(Semaphore::new(crate::subscriber::held_unordered(&sub.settings)));
        let deliveries = TaskTracker::new();
        // Events of the window read, against the bus's count of them.
        let mut read = 0u64;
        loop {
            let quiet = if self.total.is_some_and(|total| read >= total) {
                CAUGHT_UP_AFTER_TOTAL
            } else if read == 0 {
                FIRST_EVENT_WITHIN
            } else {
                CAUGHT_UP_AFTER
            };
            let next = tokio::select! {
                () = shutdown.cancelled() => break,
                next = tokio::time::timeout(quiet, consumer.next()) => next,
            };
            let delivery = match next {
                Ok(Ok(delivery)) => delivery,
                Ok(Err(error)) => {
                    tracing::warn!(replay = %self.id, %error, "replay cannot read events; stopping");
                    break;
                }
                Err(_) => break,
            };
            if delivery.published_at > self.until {
                let _ = delivery.ack().await;
                break;
            }
            let wanted = events.is_empty() || events.iter().any(|p| p.matches(&delivery.event.ty));
            if wanted && delivery.published_at >= self.since {
                read += 1;
            }
            if !wanted || sub.settings.admit(&delivery.event).is_err() {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                metrics.replayed(&sub.settings.name, "skipped");
                let _ = delivery.ack().await;
                continue;
            }
            // A replay keeps to the subscriber's rate limit too.
            if let Some(limiter) = &sub.limiter {
                limiter.until_ready().await;
            }
            let permit = in_hand.clone().acquire_owned().await.expect("never closed");
            let request = in_flight.clone().acquire_owned().await.expect("never closed");
            let (replay, sub, metrics, recorder) = (self.clone(), sub.clone(), metrics.clone(), recorder.clone());
            deliveries.spawn(async move {
                let (started_at, started) = (Utc::now(), std::time::Instant::now());
                let attempt = sub.endpoint.attempt(&sub.settings, &delivery.event).await;
                drop(request);
                let delivered = matches!(attempt, Attempt::Status { status: 200..=299, .. });
                recorder.record(&Made {
                    subscriber: &sub.settings.name,
                    event: &delivery.event,
                    published_at: delivery.published_at,
                    n: 1,
                    started: started_at,
                    took: started.elapsed(),
                    attempt: &attempt,
                    verdict: if delivered { &Verdict::Delivered } else { &Verdict::DeadLetter },
                    replay: Some(&replay.id),
                });
                let result = if delivered {
                    replay.delivered.fetch_add(1, Ordering::Relaxed);
                    metrics.replayed(&sub.settings.name, "delivered");
                    delivery.ack().await
                } else {
                    replay.failed.fetch_add(1, Ordering::Relaxed);
                    metrics.replayed(&sub.settings.name, "failed");
                    delivery.dead_letter(&sub.group, failure(1, &attempt)).await
                };
                if let Err(error) = result {
                    tracing::warn!(replay = %replay.id, %error, "could not settle a replayed delivery");
                }
                drop(permit);
            });
        }
        deliveries.close();
        deliveries.wait().await;
        *self.finished_at.lock().expect("replay lock") = Some(Utc::now());
        self.done.store(true, Ordering::SeqCst);
        metrics.replays_running.with_label_values(&[&sub.settings.name]).dec();
        let view = self.view();
        tracing::info!(replay = %view.id, subscriber = %view.subscriber, delivered = view.delivered, failed = view.failed, skipped = view.skipped, "replay finished");
    }

    pub fn view(&self) -> ReplayView {
        ReplayView {
            id: self.id.clone(),
            subscriber: self.subscriber.clone(),
            since: self.since,
            until: self.until,
            total: self.total,
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            done: self.done.load(Ordering::SeqCst),
            started_at: self.started_at,
            finished_at: *self.finished_at.lock().expect("replay lock"),
        }
    }
}
