//! The providers: tasks sending signed Mailpipe and MailPace webhooks to the
//! ingress processes, retrying like a provider does until one answers 200,
//! and the ledger of what was answered 200.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookbridge_providers::Provider;
use hookbridge_providers::SourceMeta;
use hookbridge_providers::samples::{self, Signer};
use hookbridge_testkit::keys;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::world::World;

/// A webhook answered 200, and what its event must be.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub ty: String,
    pub provider: &'static str,
    /// When the first 200 came.
    pub at: DateTime<Utc>,
    /// When it was first sent: it may have been published from then on
    /// (an ingress killed before it could answer).
    pub sent: DateTime<Utc>,
    /// Of a series (the subject it shares, its place): sent only after
    /// the one before it was answered 200, so published after it.
    pub series: Option<(String, u32)>,
    source: &'static str,
    body: Vec<u8>,
    header: (&'static str, String),
}

impl Accepted {
    /// One accepted at `at`, for the checker's own tests.
    #[cfg(test)]
    pub fn at(ty: &str, provider: &'static str, at: DateTime<Utc>) -> Self {
        Self {
            ty: ty.into(),
            provider,
            at,
            sent: at,
            series: None,
            source: "mailpipe",
            body: Vec::new(),
            header: ("x", String::new()),
        }
    }
}

#[derive(Debug, Default)]
pub struct Ledger {
    accepted: Mutex<HashMap<String, Accepted>>,
    /// Webhooks given up on after every try failed (never answered 200).
    pub given_up: AtomicU64,
    /// Answers other than 200 (503s while the bus is away, refused connections).
    pub not_ok: AtomicU64,
    /// Webhooks resent after their 200.
    pub resent: AtomicU64,
    /// Problems with resent webhooks (a different id).
    pub resend_problems: Mutex<Vec<String>>,
    types: Mutex<Vec<(Provider, &'static str)>>,
    unused: Mutex<Vec<(Provider, &'static str)>>,
    seq: AtomicU64,
}

fn source(provider: &Provider) -> &'static str {
    match provider {
        Provider::MailPace => "mailpace",
        _ => "mailpipe",
    }
}

impl Ledger {
    pub fn new() -> Self {
        let ledger = Self::default();
        *ledger.types.lock().expect("types lock") =
            vec![(Provider::Mailpipe, "email.sent"), (Provider::MailPace, "email.delivered")];
        let mut unused: Vec<(Provider, &'static str)> = Vec::new();
        for provider in [Provider::Mailpipe, Provider::MailPace] {
            for event in keys::events(provider.clone()) {
                if !matches!(
                    (&provider, *event),
                    (Provider::Mailpipe, "email.sent") | (Provider::MailPace, "email.delivered")
                ) {
                    unused.push((provider.clone(), event));
                }
            }
        }
        // Bounces early: they reach the most subscribers.
        unused.sort_by_key(|(p, e)| (*e != "email.bounced", p.static_name(), *e));
        *ledger.unused.lock().expect("types lock") = unused;
        ledger
    }

    pub fn accepted(&self) -> HashMap<String, Accepted> {
        self.accepted.lock().expect("ledger lock").clone()
    }

    /// Adds an event type providers have not sent yet; which one.
    pub fn new_type(&self) -> Option<String> {
        let mut unused = self.unused.lock().expect("types lock");
        if unused.is_empty() {
            return None;
        }
        let next = unused.remove(0);
        let name = format!("{} {}", next.0, next.1);
        self.types.lock().expect("types lock").push(next);
        Some(name)
    }

    fn pick(&self, rng: &mut ChaCha8Rng) -> (Provider, &'static str) {
        let types = self.types.lock().expect("types lock");
        types[rng.random_range(0..types.len())].clone()
    }
}

fn signer(provider: Provider) -> Signer {
    keys::signer(source(&provider))
}

/// Posts one webhook until an ingress answers 200 (30 s of tries);
/// the event id it answered.
async fn post(
    world: &World,
    ledger: &Ledger,
    source: &str,
    body: &[u8],
    header: &(&'static str, String),
    mut k: usize,
) -> Option<String> {
    let urls = world.webhook_urls();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let url = format!("{}/{source}", urls[k % urls.len()]);
        k += 1;
        let response = world.http.post(&url).header(header.0, &header.1).body(body.to_vec()).send().await;
        match response {
            Ok(r) if r.status().as_u16() == 200 => {
                let value: serde_json::Value = r.json().await.unwrap_or_default();
                if let Some(id) = value["id"].as_str() {
                    return Some(id.to_owned());
                }
            }
            Ok(r) if r.status().is_client_error() => {
                // A 4xx is final for a provider: a finding, not a retry.
                ledger
                    .resend_problems
                    .lock()
                    .expect("problems lock")
                    .push(format!("{url} answered {} to a valid webhook", r.status()));
                return None;
            }
            _ => {}
        }
        ledger.not_ok.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ledger.given_up.fetch_add(1, Ordering::Relaxed);
    None
}

/// Sends new webhooks at `rate` per second over `workers` tasks until `stop`.
pub fn spawn(
    world: Arc<World>,
    ledger: Arc<Ledger>,
    seed: u64,
    rate: u32,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let workers = 8u32;
    let every = Duration::from_secs_f64(f64::from(workers) / f64::from(rate.max(1)));
    (0..workers)
        .map(|worker| {
            let (world, ledger, stop) = (world.clone(), ledger.clone(), stop.clone());
            tokio::spawn(async move {
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (u64::from(worker) << 32));
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::SeqCst) {
                    tick.tick().await;
                    let (provider, event) = ledger.pick(&mut rng);
                    let seq = ledger.seq.fetch_add(1, Ordering::Relaxed);
                    let now = Utc::now();
                    let body = samples::body(&provider, event, seq, now);
                    let header = signer(provider.clone()).header(&body, now);
                    let src = source(&provider);
                    let meta = SourceMeta {
                        event_source: SourceMeta::default_event_source(src),
                        redactor: Default::default(),
                    };
                    let Ok(expected) = hookbridge_providers::normalize(&provider, &body, &meta, now) else {
                        panic!("a sample of {provider} {event} does not normalize");
                    };
                    if let Some(id) = post(&world, &ledger, src, &body, &header, seq as usize).await {
                        let accepted = Accepted {
                            ty: expected.ty,
                            provider: provider.static_name(),
                            at: Utc::now(),
                            sent: now,
                            series: None,
                            source: src,
                            body,
                            header,
                        };
                        ledger.accepted.lock().expect("ledger lock").entry(id).or_insert(accepted);
                    }
                }
            })
        })
        .collect()
}

/// Events of one subject sent in series.
pub const SERIES_LENGTH: u32 = 3;

/// Sends series of Mailpipe `email.sent` webhooks sharing a subject (a
/// message id), each sent once the one before was answered 200, over two
/// tasks until `stop`: what the ordered subscriber's order is checked on.
/// A series whose webhook is given up on ends there.
pub fn spawn_series(world: Arc<World>, ledger: Arc<Ledger>, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..2)
        .map(|task| {
            let (world, ledger, stop) = (world.clone(), ledger.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    tick.tick().await;
                    n += 1;
                    let subject = format!("series-{task}-{n}");
                    for index in 0..SERIES_LENGTH {
                        let seq = ledger.seq.fetch_add(1, Ordering::Relaxed);
                        let now = Utc::now();
                        let mut body: serde_json::Value =
                            serde_json::from_slice(&samples::body(&Provider::Mailpipe, "email.sent", seq, now))
                                .expect("a sample is JSON");
                        body["data"]["message_id"] = serde_json::Value::String(subject.clone());
                        let body = serde_json::to_vec(&body).expect("JSON");
                        let header = signer(Provider::Mailpipe).header(&body, now);
                        let meta = SourceMeta {
                            event_source: SourceMeta::default_event_source("mailpipe"),
                            redactor: Default::default(),
                        };
                        let Ok(expected) = hookbridge_providers::normalize(&Provider::Mailpipe, &body, &meta, now)
                        else {
                            panic!("a series sample does not normalize");
                        };
                        let Some(id) = post(&world, &ledger, "mailpipe", &body, &header, seq as usize).await else {
                            break;
                        };
                        let accepted = Accepted {
                            ty: expected.ty,
                            provider: Provider::Mailpipe.as_str(),
                            at: Utc::now(),
                            sent: now,
                            series: Some((subject.clone(), index)),
                            source: "mailpipe",
                            body,
                            header,
                        };
                        ledger.accepted.lock().expect("ledger lock").entry(id).or_insert(accepted);
                    }
                }
            })
        })
        .collect()
}

/// Resends `count` webhooks already answered 200; each must be answered
/// 200 with the same event id.
pub async fn resend(world: &World, ledger: &Ledger, count: usize, rng: &mut ChaCha8Rng) {
    let mut picked: Vec<(String, Accepted)> = ledger.accepted().into_iter().collect();
    picked.sort_by(|a, b| a.0.cmp(&b.0));
    for _ in 0..count.min(picked.len()) {
        let (id, accepted) = picked.swap_remove(rng.random_range(0..picked.len()));
        ledger.resent.fetch_add(1, Ordering::Relaxed);
        match post(world, ledger, accepted.source, &accepted.body, &accepted.header, rng.random_range(0..8)).await {
            Some(again) if again == id => {}
            Some(again) => ledger
                .resend_problems
                .lock()
                .expect("problems lock")
                .push(format!("{id} resent was answered as {again}")),
            None => {}
        }
    }
}
