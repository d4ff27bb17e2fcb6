//! The invariant, checked after the quiet period, and the figures.
//!
//! Every event answered 200 was delivered (answered 2xx by the subscriber,
//! with a valid signature) to every subscriber whose `events` and
//! `providers` match it, or is in that subscriber's dead letters with its
//! failure; nothing reached a subscriber it does not match; every delivery of
//! an event carries the same body; a repeat to one subscriber carries the
//! same `webhook-id`.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::sender::Accepted;
use crate::subscriber::{Received, Subscriber};

/// One dead letter as the admin API lists it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub at: DateTime<Utc>,
    pub attempts: u64,
    pub last_error: String,
}

/// A subscriber, whether it is part of the system, when it was born, and
/// what it received.
pub type Seen<'a> = (&'a Subscriber, bool, Option<DateTime<Utc>>, Vec<Received>);

/// What the run saw at one moment.
#[derive(Debug)]
pub struct Snapshot<'a> {
    pub accepted: &'a HashMap<String, Accepted>,
    /// Each subscriber with whether it is part of the system now and when it
    /// was born (events before that are not its).
    pub subscribers: Vec<Seen<'a>>,
    pub dead_letters: HashMap<&'static str, HashMap<String, DeadLetter>>,
    /// Whether a webhook resent to another ingress process is published
    /// again (Kafka: duplicates are dropped per process).
    pub republishes: bool,
}

/// What differs between two publications of one webhook.
const REPUBLISHED: [&str; 2] = ["ingesttime", "traceparent"];

#[derive(Debug, Default)]
pub struct Verdict {
    /// `(subscriber, event id)` that are neither delivered nor dead-lettered.
    pub missing: Vec<(&'static str, String)>,
    /// Everything else that broke the promise, by kind.
    pub violations: BTreeMap<&'static str, Vec<(String, Option<String>)>>,
    /// When each `(subscriber, event)` was first settled.
    pub settled: HashMap<(&'static str, String), DateTime<Utc>>,
    pub deliveries: usize,
    /// Deliveries taken more than once by one subscriber.
    pub repeats: usize,
    pub dead_lettered: usize,
    /// Deliveries of events never answered 200 (their webhook was
    /// published, then its answer was lost to a kill).
    pub unacknowledged: usize,
    /// Deliveries of a second publication of one webhook (same id and
    /// `webhook-id`, another `ingesttime`), where the backend republishes.
    pub republished: usize,
}

impl Verdict {
    pub fn violation_count(&self) -> usize {
        self.missing.len() + self.violations.values().map(Vec::len).sum::<usize>()
    }

    fn violate(&mut self, kind: &'static str, what: String, event: Option<String>) {
        self.violations.entry(kind).or_default().push((what, event));
    }
}

pub fn evaluate(snapshot: &Snapshot<'_>) -> Verdict {
    let mut verdict = Verdict::default();
    let mut bodies: HashMap<&str, &serde_json::Value> = HashMap::new();
    for (subscriber, _, _, received) in &snapshot.subscribers {
        let mut webhook_ids: HashMap<&str, &str> = HashMap::new();
        let mut taken: HashSet<&str> = HashSet::new();
        for r in received {
            verdict.deliveries += 1;
            if !r.signature_ok {
                verdict.violate(
                    "a delivery's signature does not verify",
                    format!("to {}", subscriber.name),
                    Some(r.event_id.clone()),
                );
                continue;
            }
            let (ty, provider) = match snapshot.accepted.get(&r.event_id) {
                Some(a) => (a.ty.clone(), a.provider.to_owned()),
                None => {
                    if r.taken {
                        verdict.unacknowledged += 1;
                    }
                    (
                        r.body["type"].as_str().unwrap_or_default().to_owned(),
                        r.body["provider"].as_str().unwrap_or_default().to_owned(),
                    )
                }
            };
            if !subscriber.matches(&ty, &provider) {
                verdict.violate(
                    "delivered to a subscriber it does not match",
                    format!("{ty} from {provider} to {}", subscriber.name),
                    Some(r.event_id.clone()),
                );
            }
            if r.body["type"].as_str() != Some(ty.as_str()) {
                verdict.violate(
                    "delivered with another type",
                    format!("{} instead of {ty}", r.body["type"]),
                    Some(r.event_id.clone()),
                );
            }
            match bodies.get(r.event_id.as_str()) {
                Some(first) if **first != r.body => {
                    let changed: Vec<&String> = r
                        .body
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(k, v)| first.get(k.as_str()) != Some(*v))
                        .map(|(k, _)| k)
                        .collect();
                    if snapshot.republishes && changed.iter().all(|k| REPUBLISHED.contains(&k.as_str())) {
                        verdict.republished += 1;
                    } else {
                        verdict.violate(
                            "a delivery's body changed",
                            format!("to {} ({changed:?} changed)", subscriber.name),
                            Some(r.event_id.clone()),
                        );
                    }
                }
                Some(_) => {}
                None => {
                    bodies.insert(&r.event_id, &r.body);
                }
            }
            match webhook_ids.get(r.event_id.as_str()) {
                Some(first) if *first != r.webhook_id => verdict.violate(
                    "a repeat carries another webhook-id",
                    format!("{first} then {} to {}", r.webhook_id, subscriber.name),
                    Some(r.event_id.clone()),
                ),
                Some(_) => {}
                None => {
                    webhook_ids.insert(&r.event_id, &r.webhook_id);
                }
            }
            if r.taken {
                if !taken.insert(&r.event_id) {
                    verdict.repeats += 1;
                }
                verdict.settled.entry((subscriber.name, r.event_id.clone())).or_insert(r.at);
            }
        }
    }
    for (subscriber, present, born, _) in &snapshot.subscribers {
        let letters = snapshot.dead_letters.get(subscriber.name);
        verdict.dead_lettered += letters.map_or(0, HashMap::len);
        if let Some(letters) = letters {
            for (id, letter) in letters {
                if letter.attempts == 0 || letter.last_error.is_empty() {
                    verdict.violate(
                        "a dead letter without its failure",
                        format!("of {}", subscriber.name),
                        Some(id.clone()),
                    );
                }
                verdict.settled.entry((subscriber.name, id.clone())).or_insert(letter.at);
            }
        }
        if !present {
            continue;
        }
        for (id, accepted) in snapshot.accepted {
            // Sent before the subscriber was born: it may have been
            // published before, and then it is not the subscriber's.
            if !subscriber.matches(&accepted.ty, accepted.provider) || born.is_none_or(|b| accepted.sent <= b) {
                continue;
            }
            if !verdict.settled.contains_key(&(subscriber.name, id.clone())) {
                verdict.missing.push((subscriber.name, id.clone()));
            }
        }
    }
    verdict.missing.sort();
    verdict
}

/// The `p`th percentile of `values` (sorted in place).
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: &str, ty: &str, provider: &str, webhook_id: &str, taken: bool) -> Received {
        Received {
            at: Utc::now(),
            event_id: id.into(),
            webhook_id: webhook_id.into(),
            body: serde_json::json!({"id": id, "type": ty, "provider": provider}),
            signature_ok: true,
            taken,
        }
    }

    #[tokio::test]
    async fn the_invariant_finds_what_is_missing_misdelivered_or_changed() {
        let bounces = Subscriber::spawn("bounces", vec!["email.bounced"], vec![]).await;
        let all = Subscriber::spawn("all", vec!["*"], vec![]).await;
        let born = Utc::now() - chrono::Duration::seconds(10);
        let accepted = HashMap::from([
            ("a".to_owned(), Accepted::at("email.bounced", "mailpipe", Utc::now())),
            ("b".to_owned(), Accepted::at("email.sent", "mailpipe", Utc::now())),
            ("c".to_owned(), Accepted::at("email.bounced", "mailpipe", Utc::now())),
        ]);
        // a: delivered to both; b: to `all` and wrongly to `bounces`; c: to
        // `all` twice with two webhook-ids, never to `bounces` (missing).
        bounces.record(delivery("a", "email.bounced", "mailpipe", "a", true));
        bounces.record(delivery("b", "email.sent", "mailpipe", "b", true));
        all.record(delivery("a", "email.bounced", "mailpipe", "a", true));
        all.record(delivery("b", "email.sent", "mailpipe", "b", true));
        all.record(delivery("c", "email.bounced", "mailpipe", "c", false));
        all.record(delivery("c", "email.bounced", "mailpipe", "other", true));
        let snapshot = Snapshot {
            accepted: &accepted,
            subscribers: vec![
                (bounces.as_ref(), true, Some(born), bounces.received()),
                (all.as_ref(), true, Some(born), all.received()),
            ],
            dead_letters: HashMap::new(),
            republishes: false,
        };
        let verdict = evaluate(&snapshot);
        assert_eq!(verdict.missing, vec![("bounces", "c".to_owned())]);
        assert_eq!(verdict.violations["delivered to a subscriber it does not match"].len(), 1);
        assert_eq!(verdict.violations["a repeat carries another webhook-id"].len(), 1);
        assert_eq!(verdict.violation_count(), 3);

        // A dead letter with its failure settles the missing one.
        let mut letters = HashMap::new();
        letters.insert("c".to_owned(), DeadLetter { at: Utc::now(), attempts: 3, last_error: "HTTP 503".into() });
        let snapshot = Snapshot { dead_letters: HashMap::from([("bounces", letters)]), ..snapshot };
        assert!(evaluate(&snapshot).missing.is_empty());
    }

    #[test]
    fn percentiles() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&mut v, 50.0), 3.0);
        assert_eq!(percentile(&mut v, 100.0), 5.0);
        assert_eq!(percentile(&mut [], 50.0), 0.0);
    }
}
