//! One subscriber: its settings, circuit and on/off state, and the worker
//! that pulls its events from its consumer group and delivers each one.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookbridge_bus::{Bus, Delivery, Failure, NewGroup, StartFrom, SubscribeOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::circuit::{Circuit, CircuitState, Permit, Transition};
use crate::deliver;
use crate::metrics::RelayMetrics;
use crate::ordering::{Lanes, Ordering, Queued};
use crate::policy::{self, Attempt, Verdict};
use crate::settings::SubscriberSettings;

/// Deliveries an unordered subscriber may hold unsettled per request
/// `max_in_flight` allows: answered ones wait for the bus to store their
/// settlement without holding a request slot.
const HELD_PER_REQUEST: usize = 2;

/// Events an unordered subscriber (or a replay) may hold taken from the bus
/// and not yet settled.
pub(crate) fn held_unordered(settings: &SubscriberSettings) -> usize {
    settings.max_in_flight.max(1).saturating_mul(HELD_PER_REQUEST)
}

/// Why a subscriber is off, as kept in the bus's shared state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Disabled {
    pub reason: String,
    pub since: DateTime<Utc>,
}

#[derive(Debug)]
pub(crate) struct Subscriber {
    pub(crate) settings: SubscriberSettings,
    pub(crate) group: String,
    pub(crate) endpoint: deliver::Endpoint,
    pub(crate) circuit: Circuit,
    /// `Some` while disabled.
    pub(crate) disabled: watch::Sender<Option<Disabled>>,
    /// Woken when the circuit changes.
    pub(crate) wake: Notify,
    /// `rate_limit`, when configured.
    pub(crate) limiter: Option<governor::DefaultDirectRateLimiter>,
    /// Set by a 429 with `Retry-After`: no delivery starts before.
    pub(crate) slowed_until: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Requests in flight at once (`max_in_flight`).
    pub(crate) in_flight: Arc<Semaphore>,
    /// `ordering = "subject"`: the events in hand, by subject.
    pub(crate) lanes: Lanes,
}

/// The token bucket of a rate limit.
pub(crate) fn limiter(limit: crate::settings::RateLimit) -> governor::DefaultDirectRateLimiter {
    let period = Duration::from_secs_f64(1.0 / limit.per_second).max(Duration::from_nanos(1));
    let burst = std::num::NonZeroU32::new(limit.burst).unwrap_or(std::num::NonZeroU32::MIN);
    let quota = governor::Quota::with_period(period).expect("a positive period").allow_burst(burst);
    governor::RateLimiter::direct(quota)
}

impl Subscriber {
    /// Waits until this subscriber may start a delivery: past a 429's
    /// `Retry-After`, and within its rate limit. `false` on shutdown.
    async fn wait_turn(&self, shutdown: &CancellationToken, metrics: &RelayMetrics) -> bool {
        loop {
            let until = *self.slowed_until.lock().expect("slowed_until lock");
            match until {
                Some(until) if until > tokio::time::Instant::now() => tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep_until(until) => {}
                },
                _ => break,
            }
        }
        if let Some(limiter) = &self.limiter
            && limiter.check().is_err()
        {
            metrics.slowed(&self.settings.name, "rate_limit");
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = limiter.until_ready() => {}
            }
        }
        true
    }
}

impl Subscriber {
    pub(crate) fn subscribe_options(&self) -> SubscribeOptions {
        SubscribeOptions {
            group: self.group.clone(),
            patterns: self.settings.events.clone(),
            start: StartFrom::Committed { if_new: NewGroup::Latest },
        }
    }
}

pub(crate) fn state_key(subscriber: &str) -> String {
    format!("relay.subscriber.{subscriber}.disabled")
}

/// What a subscriber's worker needs of the relay: the bus, the metrics, and
/// the relay's task tracker and shutdown token.
/// Shared by a subscriber's loop and its deliveries behind one `Arc`: a
/// delivery clones one pointer, not the metrics' and the bus's handles.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) metrics: RelayMetrics,
    pub(crate) recorder: crate::record::Recorder,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

impl Worker {
    pub(crate) fn set_health_gauges(&self, sub: &Subscriber) {
        let name = sub.settings.name.as_str();
        let circuit = match sub.circuit.state() {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        };
        self.metrics.circuit_state.with_label_values(&[name]).set(circuit);
        self.metrics.enabled.with_label_values(&[name]).set(i64::from(sub.disabled.borrow().is_none()));
    }

    /// One subscriber's loop: pull an event when the circuit and the
    /// in-flight limit allow, and deliver it in its own task.
    pub(crate) async fn work(
        self: Arc<Self>,
        sub: Arc<Subscriber>,
        consumer: Option<Box<dyn hookbridge_bus::Consumer>>,
    ) {
        let mut consumer = match consumer {
            Some(consumer) => consumer,
            None => loop {
                match self.bus.subscribe(sub.subscribe_options()).await {
                    Ok(consumer) => break consumer,
                    Err(error) => {
                        tracing::warn!(subscriber = %sub.settings.name, %error, "cannot subscribe; retrying");
                        tokio::select! {
                            () = self.shutdown.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                }
            },
        };
        let ordered = sub.settings.ordering == Ordering::Subject;
        // Events taken from the bus and not yet settled: when ordered, as
        // many as may wait in lanes.
        let held = if ordered { crate::ordering::MAX_HELD } else { held_unordered(&sub.settings) };
        let in_hand = Arc::new(Semaphore::new(held));
        let mut disabled = sub.disabled.subscribe();
        loop {
            if disabled.borrow_and_update().is_some() {
                tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    _ = disabled.changed() => continue,
                }
            }
            let permit = tokio::select! {
                () = self.shutdown.cancelled() => return,
                permit = in_hand.clone().acquire_owned() => permit.expect("never closed"),
            };
            let delivery = tokio::select! {
                () = self.shutdown.cancelled() => return,
                _ = disabled.changed() => continue,
                next = consumer.next() => match next {
                    Ok(delivery) => delivery,
                    Err(error) => {
                        tracing::warn!(subscriber = %sub.settings.name, %error, "cannot read events; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                },
            };
            // An event this subscriber filters out is settled without the
            // circuit: only the endpoint's answers may close it.
            if let Err(reason) = sub.settings.admit(&delivery.event) {
                self.metrics.filtered(&sub.settings.name, reason);
                let name = sub.settings.name.clone();
                self.tracker.spawn(async move {
                    let id = delivery.event.id.clone();
                    settle(&name, &id, delivery.ack().await);
                    drop(permit);
                });
                continue;
            }
            if ordered {
                let key = Lanes::key(&delivery.event);
                self.metrics.held(&sub.settings.name, 1);
                if let Some(first) = sub.lanes.enqueue(&key, Queued { delivery, _held: permit }) {
                    self.tracker.spawn(self.clone().lane(sub.clone(), key, first));
                }
                continue;
            }
            // A request slot, held until the endpoint has answered; the
            // settlement after it is bounded by `in_hand` only.
            let request = tokio::select! {
                () = self.shutdown.cancelled() => return,
                request = sub.in_flight.clone().acquire_owned() => request.expect("never closed"),
            };
            if !sub.wait_turn(&self.shutdown, &self.metrics).await {
                return;
            }
            // The circuit is asked with an event in hand: a retry that fell
            // due while the circuit opened waits here like any other event.
            // Dropping a delivery (shutdown, disabled) hands it back.
            let probe = loop {
                match sub.circuit.permit() {
                    Permit::Deliver => break Some(false),
                    Permit::Probe => break Some(true),
                    Permit::WaitUntil(until) => tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = tokio::time::sleep_until(until) => {}
                        () = sub.wake.notified() => {}
                        _ = disabled.changed() => if disabled.borrow().is_some() { break None },
                    },
                }
            };
            let Some(probe) = probe else { continue };
            let worker = self.clone();
            let sub = sub.clone();
            self.tracker.spawn(async move {
                worker.deliver(&sub, delivery, probe, request).await;
                drop(permit);
            });
        }
    }

    /// Delivers one event the subscriber accepts and settles it: ack,
    /// durable retry, or dead letter. `request` is let go once the endpoint
    /// has answered, so the bus storing the settlement (a commit round on
    /// Kafka, the log's sync on the embedded bus) holds no request slot.
    async fn deliver(&self, sub: &Subscriber, delivery: Delivery, probe: bool, request: OwnedSemaphorePermit) {
        let name = &sub.settings.name;
        let (verdict, attempt) = self.try_once(sub, &delivery, delivery.attempt, probe).await;
        drop(request);
        let id = delivery.event.id.clone();
        let n = delivery.attempt;
        match verdict {
            Verdict::Delivered => settle(name, &id, delivery.ack().await),
            Verdict::SlowDown { delay } => settle(name, &id, delivery.nack(delay).await),
            Verdict::Retry { delay } => {
                tracing::info!(subscriber = %name, event_id = %id, attempt = n, outcome = %describe(&attempt), ?delay, "delivery failed; retry scheduled");
                settle(name, &id, delivery.nack(delay).await);
            }
            Verdict::DeadLetter | Verdict::Gone => self.dead_letter(sub, delivery, n, &attempt, &verdict).await,
        }
    }

    /// Files a delivery that failed for good under the subscriber's dead
    /// letters (and disables the subscriber on a 410).
    async fn dead_letter(&self, sub: &Subscriber, delivery: Delivery, n: u32, attempt: &Attempt, verdict: &Verdict) {
        let name = &sub.settings.name;
        let id = delivery.event.id.clone();
        tracing::warn!(subscriber = %name, event_id = %id, attempt = n, outcome = %describe(attempt), "delivery failed; dead-lettered");
        settle(name, &id, delivery.dead_letter(&sub.group, failure(n, attempt)).await);
        if *verdict == Verdict::Gone {
            self.disable(sub, "the endpoint answered 410 Gone").await;
        }
    }

    /// The `n`th attempt at `event`: the request, its metrics, what it does
    /// to the circuit, and a 429's pause. Settles nothing.
    async fn try_once(&self, sub: &Subscriber, delivery: &Delivery, n: u32, probe: bool) -> (Verdict, Attempt) {
        let name = &sub.settings.name;
        let event = &delivery.event;
        let (started_at, started) = (Utc::now(), std::time::Instant::now());
        let attempt = sub.endpoint.attempt(&sub.settings, event).await;
        let took = started.elapsed();
        let verdict = sub.settings.retry.verdict(n, &attempt, policy::jitter());
        self.metrics.attempt(name, crate::record::outcome(&verdict), took);
        self.recorder.record(&crate::record::Made {
            subscriber: name,
            event,
            published_at: delivery.published_at,
            n,
            started: started_at,
            took,
            attempt: &attempt,
            verdict: &verdict,
            replay: None,
        });
        if verdict == Verdict::Delivered {
            tracing::debug!(subscriber = %name, event_id = %event.id, attempt = n, "delivered");
            let now = Utc::now();
            let age = |t: DateTime<Utc>| (now - t).to_std().unwrap_or_default();
            self.metrics.delivered(name, age(event.time), age(event.ingesttime));
        }
        // A 429 asking to slow down is an answer from a working endpoint.
        let success = matches!(verdict, Verdict::Delivered | Verdict::SlowDown { .. });
        let transition = sub.circuit.record(success, probe);
        match transition {
            Some(Transition::Opened) => {
                tracing::warn!(subscriber = %name, "circuit opened: deliveries paused, probing")
            }
            Some(Transition::Closed) => tracing::info!(subscriber = %name, "circuit closed: deliveries resumed"),
            Some(Transition::Disable) => {
                self.disable(sub, "failing continuously for longer than disable_after").await;
            }
            None => {}
        }
        if transition.is_some() {
            self.set_health_gauges(sub);
        }
        sub.wake.notify_waiters();
        if let Verdict::SlowDown { delay } = verdict {
            let until = tokio::time::Instant::now() + delay;
            {
                let mut slowed = sub.slowed_until.lock().expect("slowed_until lock");
                *slowed = Some(slowed.map_or(until, |t| t.max(until)));
            }
            self.metrics.slowed(name, "retry_after");
            tracing::info!(subscriber = %name, event_id = %event.id, attempt = n, ?delay, "the subscriber asked to slow down (429); deliveries paused");
        }
        (verdict, attempt)
    }

    /// Works one lane of an ordered subscriber: its events one at a time,
    /// each settled before the next starts. When one is handed back
    /// (shutdown, disabled), so are the rest, in order.
    async fn lane(self: Arc<Self>, sub: Arc<Subscriber>, key: String, mut queued: Queued) {
        loop {
            let Queued { delivery, _held } = queued;
            let settled = self.deliver_in_order(&sub, delivery).await;
            drop(_held);
            self.metrics.held(&sub.settings.name, -1);
            if !settled {
                let rest = sub.lanes.abandon(&key);
                self.metrics.held(&sub.settings.name, -(rest.len() as i64));
                drop(rest);
                return;
            }
            match sub.lanes.next(&key) {
                Some(next) => queued = next,
                None => return,
            }
        }
    }

    /// Delivers the head of a lane until it is settled: a failed attempt
    /// is retried here on the subscriber's schedule, so the events behind
    /// it wait. `false` when it was handed back instead (shutdown, or the
    /// subscriber disabled): the bus delivers it again.
    async fn deliver_in_order(&self, sub: &Subscriber, delivery: Delivery) -> bool {
        let name = &sub.settings.name;
        let mut disabled = sub.disabled.subscribe();
        let mut n = delivery.attempt;
        loop {
            if disabled.borrow_and_update().is_some() {
                return false;
            }
            let permit = tokio::select! {
                () = self.shutdown.cancelled() => return false,
                permit = sub.in_flight.clone().acquire_owned() => permit.expect("never closed"),
            };
            if !sub.wait_turn(&self.shutdown, &self.metrics).await {
                return false;
            }
            let probe = loop {
                match sub.circuit.permit() {
                    Permit::Deliver => break false,
                    Permit::Probe => break true,
                    Permit::WaitUntil(until) => tokio::select! {
                        () = self.shutdown.cancelled() => return false,
                        () = tokio::time::sleep_until(until) => {}
                        () = sub.wake.notified() => {}
                        _ = disabled.changed() => if disabled.borrow().is_some() { return false },
                    },
                }
            };
            let (verdict, attempt) = self.try_once(sub, &delivery, n, probe).await;
            drop(permit);
            let id = delivery.event.id.clone();
            match verdict {
                Verdict::Delivered => {
                    settle(name, &id, delivery.ack().await);
                    return true;
                }
                // Paused by `slowed_until`; tried again, as the same attempt.
                Verdict::SlowDown { .. } => {}
                Verdict::Retry { delay } => {
                    tracing::info!(subscriber = %name, event_id = %id, attempt = n, outcome = %describe(&attempt), ?delay, "delivery failed; retried in order, the later events of its subject wait");
                    tokio::select! {
                        () = self.shutdown.cancelled() => return false,
                        _ = disabled.changed() => if disabled.borrow().is_some() { return false },
                        () = tokio::time::sleep(delay) => {}
                    }
                    n = n.saturating_add(1);
                }
                Verdict::DeadLetter | Verdict::Gone => {
                    self.dead_letter(sub, delivery, n, &attempt, &verdict).await;
                    return true;
                }
            }
        }
    }

    pub(crate) async fn disable(&self, sub: &Subscriber, reason: &str) {
        let disabled = Disabled { reason: reason.to_owned(), since: Utc::now() };
        tracing::warn!(subscriber = %sub.settings.name, reason, "subscriber disabled");
        if let Err(error) =
            self.bus.put_state(&state_key(&sub.settings.name), Some(serde_json::to_vec(&disabled).expect("json"))).await
        {
            tracing::error!(subscriber = %sub.settings.name, %error, "could not store the disabled state");
        }
        sub.disabled.send_replace(Some(disabled));
        self.set_health_gauges(sub);
    }
}

pub(crate) fn settle(subscriber: &str, event_id: &str, result: hookbridge_bus::Result<()>) {
    if let Err(error) = result {
        tracing::warn!(subscriber, event_id, %error, "could not settle a delivery; it will be delivered again");
    }
}

pub(crate) fn failure(attempts: u32, attempt: &Attempt) -> Failure {
    match attempt {
        Attempt::Status { status, .. } => {
            Failure { attempts, last_status: Some(*status), last_error: format!("the subscriber answered {status}") }
        }
        Attempt::Failed { error } => Failure { attempts, last_status: None, last_error: error.clone() },
    }
}

fn describe(attempt: &Attempt) -> String {
    match attempt {
        Attempt::Status { status, .. } => format!("HTTP {status}"),
        Attempt::Failed { error } => error.clone(),
    }
}
