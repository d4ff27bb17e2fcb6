//! The running relay: one worker per subscriber, each with its own consumer
//! group, so a slow, failing or disabled subscriber never holds up another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use hookbridge_bus::attempts::MAX_ATTEMPTS_LISTED;
use hookbridge_bus::{AttemptQuery, AttemptRecord, Bus, GroupStatus};
use hookbridge_event::EventPattern;
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::circuit::{Circuit, CircuitState};
use crate::deliver;
use crate::metrics::RelayMetrics;
use crate::replay::{Replay, ReplayView, Window};
use crate::settings::{RecordAttempts, RelaySettings};
use crate::subscriber::{Disabled, Subscriber, Worker, state_key};
use crate::{Error, Result};

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
    settings: RelaySettings,
    subscribers: HashMap<String, Arc<Subscriber>>,
    replays: Mutex<HashMap<String, Arc<Replay>>>,
    worker: Arc<Worker>,
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
            let endpoint = deliver::Endpoint::with_metrics(s, Some(metrics.token_requests.clone()))
                .map_err(|e| Error::Invalid(format!("subscriber `{}`: {e}", s.name)))?;
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
                endpoint,
                circuit: Circuit::new(s.circuit),
                disabled: watch::Sender::new(disabled),
                wake: Notify::new(),
                limiter: s.rate_limit.map(crate::subscriber::limiter),
                slowed_until: std::sync::Mutex::new(None),
                in_flight: Arc::new(tokio::sync::Semaphore::new(s.max_in_flight.max(1))),
                lanes: crate::ordering::Lanes::default(),
                settings: s.clone(),
            };
            subscribers.insert(s.name.clone(), Arc::new(subscriber));
        }
        let tracker = TaskTracker::new();
        let recorder = crate::record::Recorder::start(
            bus.clone(),
            settings.record_attempts,
            metrics.clone(),
            &tracker,
            shutdown.clone(),
        );
        let relay = Arc::new(Self {
            settings,
            subscribers,
            replays: Mutex::default(),
            worker: Arc::new(Worker { bus, metrics, recorder, tracker, shutdown }),
        });
        // Subscribe before returning: every event published after start()
        // returns reaches every subscriber (a new group starts at the latest
        // event). A bus that is down now is retried by the worker.
        for subscriber in relay.subscribers.values() {
            let consumer = match relay.worker.bus.subscribe(subscriber.subscribe_options()).await {
                Ok(consumer) => Some(consumer),
                Err(error) => {
                    tracing::warn!(subscriber = %subscriber.settings.name, %error, "cannot subscribe yet; retrying");
                    None
                }
            };
            relay.worker.tracker.spawn(relay.worker.clone().work(subscriber.clone(), consumer));
        }
        relay.worker.tracker.spawn(relay.clone().refresh_status());
        tracing::info!(subscribers = relay.subscribers.len(), "relay started");
        Ok(relay)
    }

    /// Waits until every worker, delivery and replay has finished (after
    /// the shutdown token fired).
    pub async fn wait(&self) {
        self.worker.tracker.close();
        self.worker.tracker.wait().await;
    }

    fn subscriber(&self, name: &str) -> Result<&Arc<Subscriber>> {
        self.subscribers.get(name).ok_or_else(|| Error::UnknownSubscriber(name.to_owned()))
    }

    /// Keeps the per-subscriber gauges current.
    async fn refresh_status(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.status_interval);
        loop {
            tokio::select! {
                () = self.worker.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for sub in self.subscribers.values() {
                let name = sub.settings.name.as_str();
                self.sync_disabled(sub).await;
                self.worker.set_health_gauges(sub);
                match self.worker.bus.group_status(&sub.group, &sub.settings.events).await {
                    Ok(status) => {
                        let m = &self.worker.metrics;
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
        let stored: Option<Disabled> = match self.worker.bus.get_state(&state_key(&sub.settings.name)).await {
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

    /// The configured subscribers' names, in configuration order.
    pub fn subscriber_names(&self) -> Vec<String> {
        self.settings.subscribers.iter().map(|s| s.name.clone()).collect()
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
            status: self.worker.bus.group_status(&sub.group, &sub.settings.events).await?,
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
            self.worker.bus.put_state(&state_key(name), None).await?;
            sub.circuit.reset();
            sub.disabled.send_replace(None);
            self.worker.set_health_gauges(sub);
            tracing::info!(subscriber = %name, "subscriber enabled");
        } else {
            self.worker.disable(sub, "disabled by an operator").await;
        }
        self.view(sub).await
    }

    /// # Errors
    /// Unknown subscriber, or the bus cannot be read.
    pub async fn dead_letters(&self, name: &str) -> Result<Vec<hookbridge_bus::DeadLetter>> {
        Ok(self.worker.bus.dead_letters(&self.subscriber(name)?.group).await?)
    }

    /// Hands dead letters (one, or all) back for delivery.
    ///
    /// # Errors
    /// Unknown subscriber or id, or the bus cannot be written.
    pub async fn replay_dead_letters(&self, name: &str, id: Option<&str>) -> Result<u64> {
        let n = self.worker.bus.replay_dead_letters(&self.subscriber(name)?.group, id).await?;
        tracing::info!(subscriber = %name, count = n, "dead letters handed back for delivery");
        Ok(n)
    }

    /// # Errors
    /// Unknown subscriber or id, or the bus cannot be written.
    pub async fn discard_dead_letters(&self, name: &str, id: Option<&str>) -> Result<u64> {
        let n = self.worker.bus.discard_dead_letters(&self.subscriber(name)?.group, id).await?;
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
            self.worker.bus.clone(),
            sub,
            Window { since, until, events },
            &self.worker.tracker,
            self.worker.shutdown.clone(),
            self.worker.metrics.clone(),
            self.worker.recorder.clone(),
        )
        .await?;
        let view = replay.view();
        self.replays.lock().expect("replays lock").insert(view.id.clone(), replay);
        Ok(view)
    }

    /// A subscriber's recorded delivery attempts answering `query`, newest first.
    ///
    /// # Errors
    /// Unknown subscriber, or the bus cannot be read.
    pub async fn attempts(&self, name: &str, mut query: AttemptQuery) -> Result<Vec<AttemptRecord>> {
        self.subscriber(name)?;
        query.subscriber = Some(name.to_owned());
        Ok(self.worker.bus.attempts(&query).await?)
    }

    /// An event and what happened to it at every subscriber, from the
    /// delivery record: found through its recorded attempts, then read
    /// from the bus where it still is.
    ///
    /// # Errors
    /// No attempt at it is recorded, or the bus cannot be read.
    pub async fn event(&self, id: &str) -> Result<EventView> {
        self.event_near(id, None).await
    }

    /// [`Relay::event`], also finding an event no attempt was recorded for
    /// when its type and publish time are known (a console link from a list
    /// of events).
    ///
    /// # Errors
    /// Neither recorded attempts nor `hint` find it, or the bus cannot be read.
    pub async fn event_near(&self, id: &str, hint: Option<(String, DateTime<Utc>)>) -> Result<EventView> {
        let query = AttemptQuery { event: Some(id.to_owned()), limit: MAX_ATTEMPTS_LISTED, ..AttemptQuery::default() };
        let attempts = self.worker.bus.attempts(&query).await?;
        let (ty, published_at) = match (attempts.last(), hint) {
            (Some(first), _) => (first.event_type.clone(), first.published_at),
            (None, Some(hint)) => hint,
            (None, None) => return Err(Error::UnknownEvent(id.to_owned())),
        };
        let event = self.find_event(id, &ty, published_at).await;
        if attempts.is_empty() && event.is_none() {
            return Err(Error::UnknownEvent(id.to_owned()));
        }
        let subscribers = self
            .settings
            .subscribers
            .iter()
            .map(|s| {
                let mine: Vec<&AttemptRecord> = attempts.iter().filter(|a| a.subscriber == s.name).collect();
                // Newest first: the first is the last attempt made.
                let fate = match mine.first() {
                    _ if !s.events.iter().any(|p| p.matches(&ty)) => "not_subscribed",
                    None if self.settings.record_attempts == RecordAttempts::Failures => "no_failure_recorded",
                    None => "pending",
                    Some(last) => fate_of(&last.outcome),
                };
                EventFate {
                    subscriber: s.name.clone(),
                    fate,
                    attempts: mine.len() as u32,
                    last_attempt_at: mine.first().map(|a| a.at),
                    last_status: mine.first().and_then(|a| a.status),
                }
            })
            .collect();
        Ok(EventView { id: id.to_owned(), ty, published_at, event, subscribers, attempts })
    }

    /// The event `id` of type `ty` published at `published_at`, read from
    /// the bus; `None` once retention removed it (or it cannot be read now).
    async fn find_event(&self, id: &str, ty: &str, published_at: DateTime<Utc>) -> Option<serde_json::Value> {
        let pattern = EventPattern::parse(ty).ok()?;
        let from = hookbridge_bus::TailFrom::Time(published_at - chrono::Duration::seconds(1));
        let mut tail = self.worker.bus.tail(vec![pattern], from).await.ok()?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            match tokio::time::timeout_at(deadline, tail.next()).await {
                Ok(Ok(hookbridge_bus::Tailed::Event { event, published_at: at, .. })) => {
                    if event.id == id {
                        return serde_json::from_slice(&event.to_json()).ok();
                    }
                    if at > published_at + chrono::Duration::seconds(5) {
                        return None;
                    }
                }
                Ok(Ok(hookbridge_bus::Tailed::Resync { .. })) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }

    /// # Errors
    /// No replay with that id.
    pub fn replay(&self, id: &str) -> Result<ReplayView> {
        let replays = self.replays.lock().expect("replays lock");
        replays.get(id).map(|r| r.view()).ok_or_else(|| Error::UnknownReplay(id.to_owned()))
    }
}

/// What the admin API shows of one event (`GET /admin/events/{id}`).
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub id: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub published_at: DateTime<Utc>,
    /// The CloudEvent, while the bus retains it.
    pub event: Option<serde_json::Value>,
    pub subscribers: Vec<EventFate>,
    /// Every recorded attempt at it, newest first.
    pub attempts: Vec<AttemptRecord>,
}

/// What happened to an event at one subscriber.
#[derive(Debug, Clone, Serialize)]
pub struct EventFate {
    pub subscriber: String,
    /// `delivered`, `retrying`, `dead_lettered`, `gone`, `pending` (no
    /// attempt recorded yet, or filtered out), `no_failure_recorded` (the
    /// same when only failures are recorded: delivered at the first
    /// attempt, not attempted yet, or filtered out) or `not_subscribed`.
    pub fate: &'static str,
    pub attempts: u32,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<u16>,
}

fn fate_of(outcome: &str) -> &'static str {
    match outcome {
        "delivered" => "delivered",
        "dead_lettered" => "dead_lettered",
        "gone" => "gone",
        _ => "retrying",
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
