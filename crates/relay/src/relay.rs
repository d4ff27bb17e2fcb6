//! The running relay: one worker per subscriber, each with its own consumer
//! group, so a slow, failing or disabled subscriber never holds up another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookbridge_bus::{Bus, Delivery, Failure, GroupStatus, NewGroup, StartFrom, SubscribeOptions};
use hookbridge_event::EventPattern;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::circuit::{Circuit, CircuitState, Permit, Transition};
use crate::deliver;
use crate::metrics::RelayMetrics;
use crate::policy::{self, Attempt, Verdict};
use crate::replay::{Replay, ReplayView, Window};
use crate::settings::{RelaySettings, SubscriberSettings};
use crate::{Error, Result};

/// Why a subscriber is off, as kept in the bus's shared state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Disabled {
    pub reason: String,
    pub since: DateTime<Utc>,
}

impl Subscriber {
    fn subscribe_options(&self) -> SubscribeOptions {
        SubscribeOptions {
            group: self.group.clone(),
            patterns: self.settings.events.clone(),
            start: StartFrom::Committed { if_new: NewGroup::Latest },
        }
    }
}

#[derive(Debug)]
pub(crate) struct Subscriber {
    pub(crate) settings: SubscriberSettings,
    pub(crate) group: String,
    pub(crate) client: reqwest::Client,
    circuit: Circuit,
    /// `Some` while disabled.
    disabled: watch::Sender<Option<Disabled>>,
    /// Woken when the circuit changes.
    wake: Notify,
}

/// A subscriber as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriberView {
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    /// `healthy`, `circuit_open`, `probing` or `disabled`.
    pub state: &'static str,
    pub disabled: Option<Disabled>,
    #[serde(flatten)]
    pub status: GroupStatus,
}

/// The relay. Control operations are what the admin API exposes.
#[derive(Debug)]
pub struct Relay {
    bus: Arc<dyn Bus>,
    settings: RelaySettings,
    subscribers: HashMap<String, Arc<Subscriber>>,
    replays: Mutex<HashMap<String, Arc<Replay>>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    pub(crate) metrics: RelayMetrics,
}

fn state_key(subscriber: &str) -> String {
    format!("relay.subscriber.{subscriber}.disabled")
}

impl Relay {
    /// Starts one worker per subscriber on `bus`. They stop pulling events
    /// when `shutdown` fires; [`Relay::wait`] then waits for deliveries in
    /// flight.
    ///
    /// # Errors
    /// When a subscriber's HTTP client cannot be built or its state read.
    pub async fn start(
        bus: Arc<dyn Bus>,
        settings: RelaySettings,
        shutdown: CancellationToken,
        registry: &prometheus::Registry,
    ) -> Result<Arc<Self>> {
        let names: Vec<&str> = settings.subscribers.iter().map(|s| s.name.as_str()).collect();
        let metrics = RelayMetrics::register(registry, &names).map_err(|e| Error::Invalid(format!("metrics: {e}")))?;
        let mut subscribers = HashMap::new();
        for s in &settings.subscribers {
            let client = deliver::client(s).map_err(|e| Error::Invalid(format!("subscriber `{}`: {e}", s.name)))?;
            let disabled = if s.enabled {
                match bus.get_state(&state_key(&s.name)).await? {
                    Some(bytes) => serde_json::from_slice(&bytes).ok(),
                    None => None,
                }
            } else {
                Some(Disabled { reason: "disabled in the configuration".into(), since: Utc::now() })
            };
            let subscriber = Subscriber {
                group: settings.group(&s.name),
                client,
                circuit: Circuit::new(s.circuit),
                disabled: watch::Sender::new(disabled),
                wake: Notify::new(),
                settings: s.clone(),
            };
            subscribers.insert(s.name.clone(), Arc::new(subscriber));
        }
        let relay = Arc::new(Self {
            bus,
            settings,
            subscribers,
            replays: Mutex::default(),
            shutdown,
            tracker: TaskTracker::new(),
            metrics,
        });
        // Subscribe before returning: every event published after start()
        // returns reaches every subscriber (a new group starts at the latest
        // event). A bus that is down now is retried by the worker.
        for subscriber in relay.subscribers.values() {
            let consumer = match relay.bus.subscribe(subscriber.subscribe_options()).await {
                Ok(consumer) => Some(consumer),
                Err(error) => {
                    tracing::warn!(subscriber = %subscriber.settings.name, %error, "cannot subscribe yet; retrying");
                    None
                }
            };
            relay.tracker.spawn(relay.clone().work(subscriber.clone(), consumer));
        }
        relay.tracker.spawn(relay.clone().refresh_status());
        tracing::info!(subscribers = relay.subscribers.len(), "relay started");
        Ok(relay)
    }

    /// Waits until every worker, delivery and replay has finished (after
    /// the shutdown token fired).
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    fn subscriber(&self, name: &str) -> Result<&Arc<Subscriber>> {
        self.subscribers.get(name).ok_or_else(|| Error::UnknownSubscriber(name.to_owned()))
    }

    /// Keeps the per-subscriber gauges current.
    async fn refresh_status(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.status_interval);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for sub in self.subscribers.values() {
                let name = sub.settings.name.as_str();
                self.sync_disabled(sub).await;
                self.set_health_gauges(sub);
                match self.bus.group_status(&sub.group, &sub.settings.events).await {
                    Ok(status) => {
                        let m = &self.metrics;
                        m.backlog.with_label_values(&[name]).set(status.backlog as i64);
                        m.pending_retries.with_label_values(&[name]).set(status.pending_retries as i64);
                        m.dead_letters.with_label_values(&[name]).set(status.dead_letters as i64);
                        let age = status.oldest_undelivered.map_or(0.0, |t| (Utc::now() - t).as_seconds_f64().max(0.0));
                        m.oldest_age.with_label_values(&[name]).set(age);
                    }
                    Err(error) => tracing::warn!(subscriber = %name, %error, "cannot read the subscriber's status"),
                }
            }
        }
    }

    /// Takes up what another relay process stored: a subscriber disabled or
    /// enabled through its admin API (or disabled by its 410) is so on
    /// every replica within `status_interval`.
    async fn sync_disabled(&self, sub: &Subscriber) {
        if !sub.settings.enabled {
            return;
        }
        let stored: Option<Disabled> = match self.bus.get_state(&state_key(&sub.settings.name)).await {
            Ok(bytes) => bytes.and_then(|b| serde_json::from_slice(&b).ok()),
            Err(error) => {
                tracing::warn!(subscriber = %sub.settings.name, %error, "cannot read the subscriber's stored state");
                return;
            }
        };
        if *sub.disabled.borrow() == stored {
            return;
        }
        match &stored {
            None => {
                sub.circuit.reset();
                tracing::info!(subscriber = %sub.settings.name, "subscriber enabled by another relay");
            }
            Some(disabled) => {
                tracing::warn!(subscriber = %sub.settings.name, reason = %disabled.reason, "subscriber disabled by another relay");
            }
        }
        sub.disabled.send_replace(stored);
    }

    fn set_health_gauges(&self, sub: &Subscriber) {
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
    async fn work(self: Arc<Self>, sub: Arc<Subscriber>, consumer: Option<Box<dyn hookbridge_bus::Consumer>>) {
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
        let in_flight = Arc::new(Semaphore::new(sub.settings.max_in_flight.max(1)));
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
                permit = in_flight.clone().acquire_owned() => permit.expect("never closed"),
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
            if !sub.settings.accepts(&delivery.event) {
                self.metrics.filtered(&sub.settings.name);
                let name = sub.settings.name.clone();
                self.tracker.spawn(async move {
                    let id = delivery.event.id.clone();
                    settle(&name, &id, delivery.ack().await);
                    drop(permit);
                });
                continue;
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
            let relay = self.clone();
            let sub = sub.clone();
            self.tracker.spawn(async move {
                relay.deliver(&sub, delivery, probe).await;
                drop(permit);
            });
        }
    }

    /// Delivers one event the subscriber accepts and settles it: ack,
    /// durable retry, or dead letter.
    async fn deliver(&self, sub: &Subscriber, delivery: Delivery, probe: bool) {
        let name = &sub.settings.name;
        let started = std::time::Instant::now();
        let attempt = deliver::attempt(&sub.client, &sub.settings, &delivery.event).await;
        let took = started.elapsed();
        let verdict = sub.settings.retry.verdict(delivery.attempt, &attempt, policy::jitter());
        let outcome = match verdict {
            Verdict::Delivered => "delivered",
            Verdict::Retry { .. } => "retry_scheduled",
            Verdict::DeadLetter => "dead_lettered",
            Verdict::Gone => "gone",
        };
        self.metrics.attempt(name, outcome, took);
        if verdict == Verdict::Delivered {
            let now = Utc::now();
            let age = |t: DateTime<Utc>| (now - t).to_std().unwrap_or_default();
            self.metrics.delivered(name, age(delivery.event.time), age(delivery.event.ingesttime));
        }
        let success = verdict == Verdict::Delivered;
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
        let id = delivery.event.id.clone();
        let n = delivery.attempt;
        match verdict {
            Verdict::Delivered => {
                tracing::debug!(subscriber = %name, event_id = %id, attempt = n, "delivered");
                settle(name, &id, delivery.ack().await);
            }
            Verdict::Retry { delay } => {
                tracing::info!(subscriber = %name, event_id = %id, attempt = n, outcome = %describe(&attempt), ?delay, "delivery failed; retry scheduled");
                settle(name, &id, delivery.nack(delay).await);
            }
            Verdict::DeadLetter | Verdict::Gone => {
                tracing::warn!(subscriber = %name, event_id = %id, attempt = n, outcome = %describe(&attempt), "delivery failed; dead-lettered");
                settle(name, &id, delivery.dead_letter(&sub.group, failure(n, &attempt)).await);
                if verdict == Verdict::Gone {
                    self.disable(sub, "the endpoint answered 410 Gone").await;
                }
            }
        }
    }

    async fn disable(&self, sub: &Subscriber, reason: &str) {
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

    /// Every subscriber with its state and outstanding work.
    ///
    /// # Errors
    /// When the bus cannot be read.
    pub async fn subscribers(&self) -> Result<Vec<SubscriberView>> {
        let mut views = Vec::new();
        for s in &self.settings.subscribers {
            views.push(self.view(self.subscriber(&s.name)?).await?);
        }
        Ok(views)
    }

    async fn view(&self, sub: &Subscriber) -> Result<SubscriberView> {
        let disabled = sub.disabled.borrow().clone();
        let state = match (&disabled, sub.circuit.state()) {
            (Some(_), _) => "disabled",
            (None, CircuitState::Closed) => "healthy",
            (None, CircuitState::Open) => "circuit_open",
            (None, CircuitState::HalfOpen) => "probing",
        };
        Ok(SubscriberView {
            name: sub.settings.name.clone(),
            url: redact_url(&sub.settings.url),
            events: sub.settings.events.iter().map(ToString::to_string).collect(),
            state,
            disabled,
            status: self.bus.group_status(&sub.group, &sub.settings.events).await?,
        })
    }

    /// Turns a subscriber on or off; the state is kept on the bus, so it
    /// holds across restarts and for every relay process.
    ///
    /// # Errors
    /// Unknown subscriber, configured off, or the bus cannot be written.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<SubscriberView> {
        let sub = self.subscriber(name)?;
        if !sub.settings.enabled {
            return Err(Error::DisabledInConfig(name.to_owned()));
        }
        if enabled {
            self.bus.put_state(&state_key(name), None).await?;
            sub.circuit.reset();
            sub.disabled.send_replace(None);
            self.set_health_gauges(sub);
            tracing::info!(subscriber = %name, "subscriber enabled");
        } else {
            self.disable(sub, "disabled by an operator").await;
        }
        self.view(sub).await
    }

    /// # Errors
    /// Unknown subscriber, or the bus cannot be read.
    pub async fn dead_letters(&self, name: &str) -> Result<Vec<hookbridge_bus::DeadLetter>> {
        Ok(self.bus.dead_letters(&self.subscriber(name)?.group).await?)
    }

    /// Hands dead letters (one, or all) back for delivery.
    ///
    /// # Errors
    /// Unknown subscriber or id, or the bus cannot be written.
    pub async fn replay_dead_letters(&self, name: &str, id: Option<&str>) -> Result<u64> {
        let n = self.bus.replay_dead_letters(&self.subscriber(name)?.group, id).await?;
        tracing::info!(subscriber = %name, count = n, "dead letters handed back for delivery");
        Ok(n)
    }

    /// # Errors
    /// Unknown subscriber or id, or the bus cannot be written.
    pub async fn discard_dead_letters(&self, name: &str, id: Option<&str>) -> Result<u64> {
        let n = self.bus.discard_dead_letters(&self.subscriber(name)?.group, id).await?;
        tracing::info!(subscriber = %name, count = n, "dead letters discarded");
        Ok(n)
    }

    /// Starts re-delivering to `name` what the bus retains from `since`
    /// (to `until`, default now), optionally only `events` matching.
    ///
    /// # Errors
    /// Unknown subscriber, bad window, or the bus cannot be read.
    pub async fn start_replay(
        self: &Arc<Self>,
        name: &str,
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
        events: Vec<EventPattern>,
    ) -> Result<ReplayView> {
        let sub = self.subscriber(name)?.clone();
        let until = until.unwrap_or_else(Utc::now);
        if until < since {
            return Err(Error::Invalid("`until` is before `since`".into()));
        }
        let replay = Replay::start(
            self.bus.clone(),
            sub,
            Window { since, until, events },
            &self.tracker,
            self.shutdown.clone(),
            self.metrics.clone(),
        )
        .await?;
        let view = replay.view();
        self.replays.lock().expect("replays lock").insert(view.id.clone(), replay);
        Ok(view)
    }

    /// # Errors
    /// No replay with that id.
    pub fn replay(&self, id: &str) -> Result<ReplayView> {
        let replays = self.replays.lock().expect("replays lock");
        replays.get(id).map(|r| r.view()).ok_or_else(|| Error::UnknownReplay(id.to_owned()))
    }
}

fn settle(subscriber: &str, event_id: &str, result: hookbridge_bus::Result<()>) {
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

pub(crate) fn describe(attempt: &Attempt) -> String {
    match attempt {
        Attempt::Status { status, .. } => format!("HTTP {status}"),
        Attempt::Failed { error } => error.clone(),
    }
}

/// The URL without credentials or query, for display.
fn redact_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    shown.set_query(None);
    shown.to_string()
}
