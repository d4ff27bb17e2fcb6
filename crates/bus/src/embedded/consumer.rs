//! Consumer groups of the embedded log.
//!
//! A group's consumers in this process share one [`Group`]: a read cursor
//! over the log, the set of events handed out and not yet settled, and the
//! scheduled retries. The committed position is the lowest seq not yet
//! settled, so a restart redelivers at most what was in flight.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use hookbridge_event::{Event, EventPattern};
use redb::ReadableDatabase;
use tokio::sync::{Notify, watch};

use super::hot::Record;
use super::record::{self, decode_delayed, encode_delayed};
use super::tables::DELAYED;
use super::writer::Settle;
use super::{Shared, now_ms, storage};
use crate::{Acker, Consumer, Delivery, Error, Failure, Result, SubscribeOptions};

/// How many log records one read pulls into the group's buffer.
const READ_AHEAD: usize = 256;

#[derive(Debug)]
pub(crate) struct Group {
    name: String,
    pub(crate) patterns: Vec<EventPattern>,
    state: Mutex<GroupState>,
    /// Woken when a retry is scheduled or a delivery is handed back.
    wake: Notify,
}

#[derive(Debug)]
struct GroupState {
    /// Next log seq to read into `buffer`.
    cursor: u64,
    /// Records read from the log, not handed out yet.
    buffer: VecDeque<Record>,
    /// Log seqs handed out and not settled.
    in_flight: BTreeSet<u64>,
    /// The position last sent to storage.
    committed: u64,
    /// Scheduled retries not handed out: (due ms, seq).
    delayed: BTreeSet<(u64, u64)>,
    delayed_in_flight: HashSet<(u64, u64)>,
    /// Deliveries dropped unsettled, to hand out again.
    returned: VecDeque<Pending>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Log(u64),
    Delayed(u64, u64),
}

#[derive(Debug)]
struct Pending {
    origin: Origin,
    attempt: u32,
    record: Arc<[u8]>,
}

impl GroupState {
    /// Lowest seq not settled: nothing below it needs delivering again.
    fn watermark(&self) -> u64 {
        let unread = self.buffer.front().map_or(self.cursor, |(seq, _)| *seq);
        self.in_flight.first().map_or(unread, |&seq| seq.min(unread))
    }

    /// Raises `committed` to the watermark; the new position if it moved.
    fn advance(&mut self) -> Option<u64> {
        let watermark = self.watermark();
        (watermark > self.committed).then(|| {
            self.committed = watermark;
            watermark
        })
    }
}

impl Group {
    pub(crate) fn open(shared: &Shared, options: &SubscribeOptions, position: u64) -> Result<Self> {
        let txn = shared.db.begin_read().map_err(storage)?;
        let table = txn.open_table(DELAYED).map_err(storage)?;
        let mut delayed = BTreeSet::new();
        let name = options.group.as_str();
        for entry in table.range((name, 0, 0)..=(name, u64::MAX, u64::MAX)).map_err(storage)? {
            let (key, _) = entry.map_err(storage)?;
            let (_, due, seq) = key.value();
            delayed.insert((due, seq));
        }
        Ok(Self {
            name: options.group.clone(),
            patterns: options.patterns.clone(),
            state: Mutex::new(GroupState {
                cursor: position,
                buffer: VecDeque::new(),
                in_flight: BTreeSet::new(),
                committed: position,
                delayed,
                delayed_in_flight: HashSet::new(),
                returned: VecDeque::new(),
            }),
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().expect("group state lock")
    }

    fn wants(&self, ty: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(ty))
    }

    /// The position last committed.
    pub(crate) fn committed(&self) -> u64 {
        self.lock().committed
    }

    /// Makes retries stored by someone else (a dead-letter replay) known.
    pub(crate) fn schedule(&self, entries: &[(u64, u64)]) {
        self.lock().delayed.extend(entries.iter().copied());
        self.wake.notify_waiters();
    }
}

#[derive(Debug)]
pub(crate) struct EmbeddedConsumer {
    shared: Arc<Shared>,
    group: Arc<Group>,
    head: watch::Receiver<u64>,
}

impl EmbeddedConsumer {
    pub(crate) fn new(shared: Arc<Shared>, group: Arc<Group>) -> Self {
        let head = shared.head.clone();
        Self { shared, group, head }
    }

    /// Hands out the next pending event, or says when to look again.
    fn poll(&self) -> Result<Poll> {
        let mut state = self.group.lock();
        if let Some(pending) = state.returned.pop_front() {
            return Ok(Poll::Ready(pending));
        }
        let now = now_ms();
        if let Some(&(due, seq)) = state.delayed.first().filter(|(due, _)| *due <= now) {
            state.delayed.remove(&(due, seq));
            if let Some((attempt, record)) = self.read_delayed(due, seq)? {
                state.delayed_in_flight.insert((due, seq));
                return Ok(Poll::Ready(Pending { origin: Origin::Delayed(due, seq), attempt, record }));
            }
        }
        loop {
            while let Some((seq, bytes)) = state.buffer.pop_front() {
                let wanted = record::decode(&bytes).is_some_and(|r| self.group.wants(r.ty));
                if wanted {
                    state.in_flight.insert(seq);
                    return Ok(Poll::Ready(Pending { origin: Origin::Log(seq), attempt: 1, record: bytes }));
                }
            }
            if state.cursor >= *self.head.borrow() {
                break;
            }
            self.read_ahead(&mut state)?;
        }
        // Everything read was skipped: let the position follow.
        if let Some(position) = state.advance() {
            self.shared
                .settle_in_background(&self.group.name, Settle { position: Some(position), ..Settle::default() });
        }
        Ok(Poll::Wait(state.delayed.first().map(|&(due, _)| due)))
    }

    fn read_ahead(&self, state: &mut GroupState) -> Result<()> {
        // The head first, then the snapshot (taken by the read): the writer
        // moves the head only after its commit, so the snapshot holds every
        // record below it. The other order passes over records committed in
        // between.
        let head = *self.head.borrow();
        state.cursor = self.shared.hot.read(state.cursor, head, READ_AHEAD, &mut state.buffer)?;
        Ok(())
    }

    fn read_delayed(&self, due: u64, seq: u64) -> Result<Option<(u32, Arc<[u8]>)>> {
        let txn = self.shared.db.begin_read().map_err(storage)?;
        let table = txn.open_table(DELAYED).map_err(storage)?;
        let value = table.get((self.group.name.as_str(), due, seq)).map_err(storage)?;
        Ok(value.and_then(|v| decode_delayed(v.value()).map(|(attempt, record)| (attempt, Arc::from(record)))))
    }

    fn delivery(&self, pending: Pending) -> Option<Delivery> {
        let (event, appended_ms) = match record::decode(&pending.record)
            .map(|r| (Event::from_json(r.json), r.appended_ms))
        {
            Some((Ok(event), appended_ms)) => (event, appended_ms),
            _ => {
                tracing::error!(group = %self.group.name, "skipping an unreadable record in the embedded log");
                let acker =
                    EmbeddedAcker { shared: self.shared.clone(), group: self.group.clone(), pending: Some(pending) };
                tokio::spawn(Box::new(acker).ack());
                return None;
            }
        };
        let published_at = Utc.timestamp_millis_opt(appended_ms as i64).single().unwrap_or_else(Utc::now);
        let attempt = pending.attempt;
        let acker = EmbeddedAcker { shared: self.shared.clone(), group: self.group.clone(), pending: Some(pending) };
        Some(Delivery::new(event, attempt, published_at, Box::new(acker)))
    }
}

enum Poll {
    Ready(Pending),
    /// Nothing to hand out; the earliest scheduled retry, if any.
    Wait(Option<u64>),
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn next(&mut self) -> Result<Delivery> {
        loop {
            // Register interest before looking, so no wake-up is missed.
            let woken = self.group.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            self.head.mark_unchanged();
            match self.poll()? {
                Poll::Ready(pending) => match self.delivery(pending) {
                    Some(delivery) => return Ok(delivery),
                    None => continue,
                },
                Poll::Wait(next_due) => {
                    let sleep = next_due.map(|due| Duration::from_millis(due.saturating_sub(now_ms())));
                    tokio::select! {
                        changed = self.head.changed() => if changed.is_err() { return Err(Error::Closed) },
                        () = &mut woken => {}
                        () = async { match sleep { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {}
                    }
                }
            }
        }
    }
}

#[derive(Debug)]
struct EmbeddedAcker {
    shared: Arc<Shared>,
    group: Arc<Group>,
    /// Taken when settled; a drop with it still here hands it back.
    pending: Option<Pending>,
}

impl EmbeddedAcker {
    async fn settle(&mut self, retry_after: Option<Duration>, dead_letter: Option<(&str, Failure)>) -> Result<()> {
        let pending = self.pending.as_ref().expect("settled once");
        let mut settle = Settle::default();
        let seq = match pending.origin {
            Origin::Log(seq) => seq,
            Origin::Delayed(due, seq) => {
                settle.remove_delayed = Some((due, seq));
                seq
            }
        };
        let due = retry_after.map(|delay| now_ms() + delay.as_millis() as u64);
        if let Some(due) = due {
            settle.add_delayed = Some((due, seq, encode_delayed(pending.attempt + 1, &pending.record)));
        }
        if let Some((into, failure)) = dead_letter {
            let value = record::encode_dead_letter(&failure, now_ms(), &pending.record);
            settle.add_dead_letter = Some((into.to_owned(), seq, value));
        }
        if let Origin::Log(seq) = pending.origin {
            let mut state = self.group.lock();
            state.in_flight.remove(&seq);
            settle.position = state.advance();
        }
        let result = self.shared.send_settle(&self.group.name, settle).await;
        let pending = self.pending.take().expect("settled once");
        let mut state = self.group.lock();
        match &result {
            Ok(()) => {
                if let Origin::Delayed(due, seq) = pending.origin {
                    state.delayed_in_flight.remove(&(due, seq));
                }
                if let Some(due) = due {
                    state.delayed.insert((due, seq));
                    drop(state);
                    self.group.wake.notify_waiters();
                }
            }
            Err(_) => {
                // Not stored: hand it out again. A log seq goes back in flight
                // so the position cannot pass it.
                if let Origin::Log(seq) = pending.origin {
                    state.in_flight.insert(seq);
                }
                state.returned.push_back(pending);
                drop(state);
                self.group.wake.notify_waiters();
            }
        }
        result
    }
}

#[async_trait]
impl Acker for EmbeddedAcker {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.settle(None, None).await
    }

    async fn nack(mut self: Box<Self>, delay: Duration) -> Result<()> {
        self.settle(Some(delay), None).await
    }

    async fn dead_letter(mut self: Box<Self>, group: &str, failure: Failure) -> Result<()> {
        self.settle(None, Some((group, failure))).await
    }
}

impl Drop for EmbeddedAcker {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.group.lock().returned.push_back(pending);
            self.group.wake.notify_waiters();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;

    use hookbridge_event::EventPattern;

    use crate::embedded::{EmbeddedBus, EmbeddedOptions};
    use crate::{Bus, NewGroup, Publisher, StartFrom, SubscribeOptions};

    thread_local! {
        /// Runs once in the next read, right after its snapshot was taken.
        pub(crate) static AFTER_SNAPSHOT: RefCell<Option<Box<dyn FnOnce()>>> = RefCell::new(None);
    }

    /// Groups and a tail that keep up with the log share one read of each
    /// record (the hot window); a group that starts far behind reads the
    /// log itself and still gets every record, in order.
    #[tokio::test(flavor = "current_thread")]
    async fn groups_near_the_head_read_each_record_from_the_log_once() {
        use crate::{TailFrom, Tailed};
        let dir = tempfile::tempdir().unwrap();
        let bus = EmbeddedBus::open(EmbeddedOptions::new(dir.path())).unwrap();
        let options = |group: &str, if_new| SubscribeOptions {
            group: group.into(),
            patterns: vec![EventPattern::All],
            start: StartFrom::Committed { if_new },
        };
        let mut consumers = Vec::new();
        for group in ["a", "b", "c"] {
            consumers.push(bus.subscribe(options(group, NewGroup::Latest)).await.unwrap());
        }
        let mut tail = bus.tail(vec![EventPattern::All], TailFrom::Now).await.unwrap();
        let events: Vec<_> = (0..600).map(|_| crate::conformance::event("email.sent")).collect();
        for event in &events {
            bus.publish(event).await.unwrap();
        }
        for expected in &events {
            for consumer in &mut consumers {
                let delivery = consumer.next().await.unwrap();
                assert_eq!(delivery.event.id, expected.id);
                delivery.ack().await.unwrap();
            }
            let Tailed::Event { event, .. } = tail.next().await.unwrap() else { panic!("a resync") };
            assert_eq!(event.id, expected.id);
        }
        assert_eq!(bus.shared.hot.read_from_log(), 600, "three groups and a tail, each record read once");

        // Below the window (it keeps the newest 512): read from the log.
        let mut late = bus.subscribe(options("late", NewGroup::Earliest)).await.unwrap();
        for expected in &events {
            let delivery = late.next().await.unwrap();
            assert_eq!(delivery.event.id, expected.id);
            delivery.ack().await.unwrap();
        }
        assert!(bus.shared.hot.read_from_log() > 600, "the late group read the log");
    }

    /// What retention removed is gone from the shared window too: a group
    /// whose position is below the oldest retained record gets none of the
    /// removed ones, though they were in the window when it subscribed.
    #[tokio::test(flavor = "current_thread")]
    async fn retention_removes_records_from_the_window_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = EmbeddedOptions::new(dir.path());
        options.retention.max_age = Some(std::time::Duration::from_millis(300));
        options.maintenance_interval = std::time::Duration::from_secs(3600);
        let bus = EmbeddedBus::open(options).unwrap();
        let subscribe = |group: &str| SubscribeOptions {
            group: group.into(),
            patterns: vec![EventPattern::All],
            start: StartFrom::Committed { if_new: NewGroup::Earliest },
        };
        let old: Vec<_> = (0..20).map(|_| crate::conformance::event("email.sent")).collect();
        for event in &old {
            bus.publish(event).await.unwrap();
        }
        // A reader near the head puts the old records in the window.
        let mut reader = bus.subscribe(subscribe("reader")).await.unwrap();
        for event in &old {
            let delivery = reader.next().await.unwrap();
            assert_eq!(delivery.event.id, event.id);
            delivery.ack().await.unwrap();
        }
        let mut late = bus.subscribe(subscribe("late")).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let new = crate::conformance::event("email.delivered");
        bus.publish(&new).await.unwrap();
        bus.maintain().await.unwrap();
        let delivery = late.next().await.unwrap();
        assert_eq!(delivery.event.id, new.id, "a record retention removed was handed out from the window");
    }

    /// A record committed while a read is under way (after its snapshot)
    /// is read next time, never passed over.
    #[tokio::test(flavor = "current_thread")]
    async fn a_record_committed_during_a_read_is_not_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let bus = std::sync::Arc::new(EmbeddedBus::open(EmbeddedOptions::new(dir.path())).unwrap());
        let options = SubscribeOptions {
            group: "g".into(),
            patterns: vec![EventPattern::All],
            start: StartFrom::Committed { if_new: NewGroup::Latest },
        };
        let mut consumer = bus.subscribe(options).await.unwrap();
        let first = crate::conformance::event("email.sent");
        let second = crate::conformance::event("email.delivered");
        bus.publish(&first).await.unwrap();
        let (racing, event) = (bus.clone(), second.clone());
        AFTER_SNAPSHOT.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move || {
                // Commits on the writer thread while this read holds its snapshot.
                std::thread::scope(|s| {
                    s.spawn(|| {
                        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                        runtime.block_on(racing.publish(&event)).unwrap()
                    })
                    .join()
                    .unwrap();
                });
            }));
        });
        let delivery = consumer.next().await.unwrap();
        assert_eq!(delivery.event.id, first.id);
        delivery.ack().await.unwrap();
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), consumer.next()).await;
        let delivery = next.expect("the record committed during the read is delivered").unwrap();
        assert_eq!(delivery.event.id, second.id);
    }
}
