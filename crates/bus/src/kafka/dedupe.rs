//! Kafka keeps no index by event id, so duplicate publishes (a provider
//! retrying a webhook it already got a 200 for) are caught here, in the
//! publishing process, within a time window and a bounded number of ids.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// What a publisher may do with an id.
pub(crate) enum Claim {
    /// Publish it, then report the outcome through the guard.
    Mine(Guard),
    /// Another publish of the same id is in flight: wait for its outcome.
    Wait(watch::Receiver<Option<bool>>),
    /// Already published within the window.
    Duplicate,
}

enum Entry {
    Pending(watch::Receiver<Option<bool>>),
    Done,
}

#[derive(Debug)]
pub(crate) struct Dedupe {
    window: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Ids in the order they were claimed, for expiry.
    order: VecDeque<(Instant, String)>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("entries", &self.entries.len()).finish()
    }
}

impl Dedupe {
    pub(crate) fn new(window: Duration, capacity: usize) -> Self {
        Self { window, capacity, inner: Mutex::new(Inner::default()) }
    }

    pub(crate) fn claim(&self, key: &str) -> Claim {
        if self.capacity == 0 || self.window.is_zero() {
            let (tx, _) = watch::channel(None);
            return Claim::Mine(Guard { tx, key: None });
        }
        let mut inner = self.inner.lock().expect("dedupe lock");
        let now = Instant::now();
        // Forget what fell out of the window, or past the capacity.
        while let Some((at, _)) = inner.order.front() {
            if now.duration_since(*at) < self.window && inner.order.len() <= self.capacity {
                break;
            }
            let (_, old) = inner.order.pop_front().expect("front exists");
            if matches!(inner.entries.get(&old), Some(Entry::Done)) {
                inner.entries.remove(&old);
            }
        }
        match inner.entries.get(key) {
            Some(Entry::Done) => return Claim::Duplicate,
            // A publisher that went away without an outcome leaves its claim free.
            Some(Entry::Pending(rx)) if rx.has_changed().is_ok() => return Claim::Wait(rx.clone()),
            _ => {}
        }
        let (tx, rx) = watch::channel(None);
        inner.entries.insert(key.to_owned(), Entry::Pending(rx));
        inner.order.push_back((now, key.to_owned()));
        Claim::Mine(Guard { tx, key: Some(key.to_owned()) })
    }

    /// Records the outcome of a claimed publish: kept on success, freed for
    /// another try on failure.
    pub(crate) fn settle(&self, guard: Guard, published: bool) {
        if let Some(key) = &guard.key {
            let mut inner = self.inner.lock().expect("dedupe lock");
            if published {
                inner.entries.insert(key.clone(), Entry::Done);
            } else {
                inner.entries.remove(key);
            }
        }
        let _ = guard.tx.send(Some(published));
    }
}

/// Held by the one publisher of an id.
pub(crate) struct Guard {
    tx: watch::Sender<Option<bool>>,
    key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_claimed_once_and_freed_on_failure() {
        let dedupe = Dedupe::new(Duration::from_secs(60), 10);
        let Claim::Mine(guard) = dedupe.claim("a") else { panic!("first claim") };
        assert!(matches!(dedupe.claim("a"), Claim::Wait(_)));
        dedupe.settle(guard, false);
        let Claim::Mine(guard) = dedupe.claim("a") else { panic!("freed after a failure") };
        dedupe.settle(guard, true);
        assert!(matches!(dedupe.claim("a"), Claim::Duplicate));
    }

    #[test]
    fn an_abandoned_claim_is_free() {
        let dedupe = Dedupe::new(Duration::from_secs(60), 10);
        let Claim::Mine(guard) = dedupe.claim("a") else { panic!("first claim") };
        drop(guard);
        assert!(matches!(dedupe.claim("a"), Claim::Mine(_)));
    }

    #[test]
    fn the_window_is_bounded_by_count() {
        let dedupe = Dedupe::new(Duration::from_secs(60), 2);
        for key in ["a", "b", "c"] {
            let Claim::Mine(guard) = dedupe.claim(key) else { panic!("{key}") };
            dedupe.settle(guard, true);
        }
        assert!(matches!(dedupe.claim("c"), Claim::Duplicate));
        assert!(matches!(dedupe.claim("a"), Claim::Mine(_)), "the oldest id was forgotten");
    }
}
