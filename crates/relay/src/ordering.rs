//! `ordering = "subject"`: the events of one subject (the provider's
//! message id) delivered one at a time, in the order the bus hands them
//! out.
//!
//! Each subject with events in hand has a *lane*: a queue worked by one
//! task. The head is delivered, retried in place on the subscriber's
//! schedule (never handed back to the bus, which would let a later event
//! of its subject pass it), and settled; then the next. Events of other
//! subjects have their own lanes and go on meanwhile. Events without a
//! subject are not ordered: each has a lane of its own.
//!
//! Held events are not settled on the bus: a relay that stops or dies
//! leaves them to come again, in order where the backend redelivers in
//! order (docs/relay.md states it per backend).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use hookbridge_bus::Delivery;
use hookbridge_event::Event;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;

/// How a subscriber's events are ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// As fast as `max_in_flight` allows, in any order.
    #[default]
    None,
    /// One in flight per subject, in publish order.
    Subject,
}

/// Events held per subscriber at most (in flight, retrying in place, or
/// waiting behind an earlier event of their subject) before the relay
/// stops taking more from the bus.
pub const MAX_HELD: usize = 10_000;

/// An event in a lane, with its place among the subscriber's held events.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) delivery: Delivery,
    pub(crate) _held: OwnedSemaphorePermit,
}

/// The lanes of one subscriber, by key.
#[derive(Debug, Default)]
pub(crate) struct Lanes {
    waiting: Mutex<HashMap<String, VecDeque<Queued>>>,
}

impl Lanes {
    /// The lane of an event: its subject, or its own when it has none.
    pub(crate) fn key(event: &Event) -> String {
        match &event.subject {
            Some(subject) => format!("s:{subject}"),
            None => format!("i:{}", event.id),
        }
    }

    /// Queues `queued` behind the events of its lane. Returns it when the
    /// lane was idle: the caller then starts the lane's task with it.
    pub(crate) fn enqueue(&self, key: &str, queued: Queued) -> Option<Queued> {
        let mut waiting = self.waiting.lock().expect("lanes lock");
        match waiting.get_mut(key) {
            Some(queue) => {
                queue.push_back(queued);
                None
            }
            None => {
                waiting.insert(key.to_owned(), VecDeque::new());
                Some(queued)
            }
        }
    }

    /// The next event of a lane whose head is settled; `None` (and the lane
    /// is closed) when it has no more.
    pub(crate) fn next(&self, key: &str) -> Option<Queued> {
        let mut waiting = self.waiting.lock().expect("lanes lock");
        let next = waiting.get_mut(key).and_then(VecDeque::pop_front);
        if next.is_none() {
            waiting.remove(key);
        }
        next
    }

    /// Closes a lane whose head was handed back (shutdown, subscriber
    /// disabled): its waiting events, to be dropped in order.
    pub(crate) fn abandon(&self, key: &str) -> VecDeque<Queued> {
        self.waiting.lock().expect("lanes lock").remove(key).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_without_a_subject_has_a_lane_of_its_own() {
        let mut a = hookbridge_bus::conformance::event("email.sent");
        let mut b = hookbridge_bus::conformance::event("email.sent");
        a.subject = Some("m-1".into());
        b.subject = Some("m-1".into());
        assert_eq!(Lanes::key(&a), Lanes::key(&b));
        a.subject = None;
        b.subject = None;
        assert_ne!(Lanes::key(&a), Lanes::key(&b));
        // A subject that looks like an id never shares an id's lane.
        let mut c = b.clone();
        c.subject = Some(format!("i:{}", b.id));
        assert_ne!(Lanes::key(&c), Lanes::key(&b));
    }
}
