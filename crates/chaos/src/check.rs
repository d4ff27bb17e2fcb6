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
    /// Whether the ordered subscriber's order is a promise here (one relay
    /// process on one log: the embedded bus), else a figure (docs/relay.md
    /// says where NATS and Kafka may break it: several relays, restarts,
    /// rebalances).
    pub order_promised: bool,
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
    /// Series (events sharing a subject) the ordered subscriber received.
    pub series: usize,
    /// Events the ordered subscriber was first sent before the event before
    /// them in their series was settled (where that is not a promise).
    pub order_breaks: Vec<String>,
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
    check_order(snapshot, &mut verdict);
    verdict.missing.sort();
    verdict
}

/// An ordered subscriber is first sent an event of a series only after the
/// event before it was settled for it (taken or dead-lettered). A repeat
/// of an earlier event afterwards is at-least-once, not a break.
fn check_order(snapshot: &Snapshot<'_>, verdict: &mut Verdict) {
    let mut series: BTreeMap<&str, Vec<(u32, &str)>> = BTreeMap::new();
    for (id, accepted) in snapshot.accepted {
        if let Some((subject, index)) = &accepted.series {
            series.entry(subject).or_default().push((*index, id));
        }
    }
    for (subscriber, _, _, received) in snapshot.subscribers.iter().filter(|(s, ..)| s.ordered) {
        let mut first_sent: HashMap<&str, DateTime<Utc>> = HashMap::new();
        for r in received {
            let at = first_sent.entry(&r.event_id).or_insert(r.at);
            *at = (*at).min(r.at);
        }
        for events in series.values_mut() {
            events.sort_unstable();
            if events.iter().any(|(_, id)| first_sent.contains_key(id)) {
                verdict.series += 1;
            }
            for pair in events.windows(2) {
                let ((_, before), (_, after)) = (pair[0], pair[1]);
                let Some(sent) = first_sent.get(after) else { continue };
                let settled = verdict.settled.get(&(subscriber.name, before.to_owned()));
                if settled.is_none_or(|settled| sent < settled) {
                    let what = format!("{after} sent to {} before {before} was settled", subscriber.name);
                    if snapshot.order_promised {
                        verdict.violate("an ordered subscriber got an event before the one before it", what, None);
                    } else {
                        verdict.order_breaks.push(what);
                    }
                }
            }
        }
    }
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
            order_promised: true,
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

    #[tokio::test]
    async fn an_event_sent_before_the_one_before_it_was_settled_breaks_the_order() {
        let ordered = Subscriber::spawn_ordered("ordered", vec!["*"]).await;
        let born = Utc::now() - chrono::Duration::seconds(10);
        let mut accepted = HashMap::new();
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            let mut a = Accepted::at("email.sent", "mailpipe", born);
            a.series = Some(("m-1".into(), i as u32));
            accepted.insert(id.to_owned(), a);
        }
        let at = |ms: i64, id: &str, taken: bool| Received {
            at: born + chrono::Duration::milliseconds(ms),
            ..delivery(id, "email.sent", "mailpipe", id, taken)
        };
        // a refused, a taken, b taken, c sent before b was taken, a again.
        for r in [
            at(1, "a", false),
            at(2, "a", true),
            at(3, "b", false),
            at(5, "b", true),
            at(4, "c", true),
            at(6, "a", true),
        ] {
            ordered.record(r);
        }
        let snapshot = |promised: bool| Snapshot {
            accepted: &accepted,
            subscribers: vec![(ordered.as_ref(), true, Some(born), ordered.received())],
            dead_letters: HashMap::new(),
            republishes: false,
            order_promised: promised,
        };
        let verdict = evaluate(&snapshot(true));
        assert_eq!(verdict.series, 1);
        let breaks = &verdict.violations["an ordered subscriber got an event before the one before it"];
        assert_eq!(breaks.len(), 1, "c before b; a's repeat is no break: {breaks:?}");
        assert!(breaks[0].0.starts_with("c sent"));
        let figure = evaluate(&snapshot(false));
        assert_eq!((figure.violation_count(), figure.order_breaks.len()), (0, 1));
    }

    #[test]
    fn percentiles() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&mut v, 50.0), 3.0);
        assert_eq!(percentile(&mut v, 100.0), 5.0);
        assert_eq!(percentile(&mut [], 50.0), 0.0);
    }
}
