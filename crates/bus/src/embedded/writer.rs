//! The single writer of the embedded log. Every change (publishes, position
//! commits, scheduled retries, retention) goes through one thread that
//! drains whatever is queued into one redb write transaction and commits it
//! with one fsync: concurrent publishers share the sync (group commit), and
//! each is answered only after the commit returned.

use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot, watch};

use super::counts::{self, TypeCounts};
use super::dedup::DedupIndex;
use super::hot::HotRecords;
use super::record;
use super::tables::{DEAD_LETTERS, DEDUP_KEYS, DELAYED, GROUPS, LOG, META, STATE, TIME_INDEX, TYPE_COUNTS, meta_get};
use super::{Retention, now_ms};
use crate::{Error, PublishOutcome, Result};

/// Most commands applied in one transaction.
const MAX_BATCH: usize = 4096;
/// Most records retention removes per transaction, so a large expiry does
/// not stall publishers.
const MAX_EXPIRE: usize = if cfg!(test) { 500 } else { 20_000 };

pub(crate) enum Command {
    Publish {
        key: String,
        ty: String,
        json: Vec<u8>,
        reply: oneshot::Sender<Result<PublishOutcome>>,
    },
    /// Settles deliveries of a group: raise its position, drop a scheduled
    /// retry, schedule a new one — atomically.
    Settle {
        group: String,
        settle: Settle,
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    /// Sets a group's position exactly (a new group, or a replay).
    Reset {
        group: String,
        position: u64,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Moves dead letters (one seq, or all) back into the group's retries, due now.
    ReplayDeadLetters {
        group: String,
        seq: Option<u64>,
        reply: oneshot::Sender<Result<Vec<(u64, u64)>>>,
    },
    DiscardDeadLetters {
        group: String,
        seq: Option<u64>,
        reply: oneshot::Sender<Result<u64>>,
    },
    PutState {
        key: String,
        value: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Retention and dedup expiry; the answer says whether more is due
    /// than one pass removes.
    Maintain(Option<oneshot::Sender<Result<bool>>>),
}

#[derive(Debug, Default)]
pub(crate) struct Settle {
    /// New committed position; the stored one only ever rises.
    pub position: Option<u64>,
    /// A scheduled retry `(due_ms, seq)` that is done.
    pub remove_delayed: Option<(u64, u64)>,
    /// A retry to schedule: `(due_ms, seq, encoded delayed value)`.
    pub add_delayed: Option<(u64, u64, Vec<u8>)>,
    /// A dead letter to keep: `(group, seq, encoded dead letter)`.
    pub add_dead_letter: Option<(String, u64, Vec<u8>)>,
}

/// Counters the writer keeps in META.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogState {
    pub next_seq: u64,
    pub total_bytes: u64,
}

/// 16 bytes of SHA-256 of a dedup key: what the dedup index holds.
pub(crate) type KeyHash = [u8; 16];

pub(crate) fn key_hash(key: &str) -> KeyHash {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    digest[..16].try_into().expect("16 of 32 bytes")
}

impl LogState {
    pub fn load(txn: &WriteTransaction) -> std::result::Result<Self, redb::Error> {
        let meta = txn.open_table(META)?;
        Ok(Self { next_seq: meta_get(&meta, "next_seq")?, total_bytes: meta_get(&meta, "total_bytes")? })
    }

    fn store(&self, txn: &WriteTransaction) -> std::result::Result<(), redb::Error> {
        let mut meta = txn.open_table(META)?;
        meta.insert("next_seq", self.next_seq)?;
        meta.insert("total_bytes", self.total_bytes)?;
        Ok(())
    }
}

pub(crate) struct Writer {
    pub db: Arc<Database>,
    pub state: LogState,
    pub head: watch::Sender<u64>,
    pub retention: Retention,
    pub dedup: DedupIndex,
    /// Events per type, checkpointed into `TYPE_COUNTS`.
    pub counts: TypeCounts,
    /// The last maintenance pass stopped at its limit: more is due, and the
    /// next transaction runs another pass without waiting for the interval.
    pub behind: bool,
    /// The window of newest records readers share, which forgets what
    /// retention removed once that is committed.
    pub hot: Arc<HotRecords>,
    /// The first seq retention kept, set by a pass that removed records and
    /// taken once its transaction has committed.
    pub retained_from: Option<u64>,
}

/// Changes to the in-memory dedup index made by a transaction, undone if
/// it fails to commit.
#[derive(Default)]
struct DedupChanges {
    inserted: Vec<(KeyHash, u64)>,
    expired: Vec<(KeyHash, u64)>,
}

enum Reply {
    Publish(oneshot::Sender<Result<PublishOutcome>>, PublishOutcome),
    Unit(Option<oneshot::Sender<Result<()>>>),
    Moved(oneshot::Sender<Result<Vec<(u64, u64)>>>, Vec<(u64, u64)>),
    Count(oneshot::Sender<Result<u64>>, u64),
    More(oneshot::Sender<Result<bool>>, bool),
}

impl Reply {
    fn send(self) {
        match self {
            Self::Publish(tx, outcome) => drop(tx.send(Ok(outcome))),
            Self::Unit(Some(tx)) => drop(tx.send(Ok(()))),
            Self::Unit(None) => {}
            Self::Moved(tx, moved) => drop(tx.send(Ok(moved))),
            Self::Count(tx, n) => drop(tx.send(Ok(n))),
            Self::More(tx, more) => drop(tx.send(Ok(more))),
        }
    }

    fn fail(self, message: &str) {
        let error = || Error::Storage(message.to_owned());
        match self {
            Self::Publish(tx, _) => drop(tx.send(Err(error()))),
            Self::Unit(Some(tx)) => drop(tx.send(Err(error()))),
            Self::Unit(None) => {}
            Self::Moved(tx, _) => drop(tx.send(Err(error()))),
            Self::Count(tx, _) => drop(tx.send(Err(error()))),
            Self::More(tx, _) => drop(tx.send(Err(error()))),
        }
    }
}

impl Writer {
    /// Runs until every sender is gone.
    pub fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::new();
        let mut open = true;
        while open {
            if self.behind {
                // Retention that fell behind catches up pass by pass, each
                // in a transaction shared with whatever else is queued.
                batch.push(Command::Maintain(None));
            } else {
                match rx.blocking_recv() {
                    Some(first) => batch.push(first),
                    None => break,
                }
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            self.apply(&mut batch);
        }
        tracing::debug!("embedded bus writer stopped");
    }

    fn apply(&mut self, batch: &mut Vec<Command>) {
        let before = self.state;
        let mut replies = Vec::with_capacity(batch.len());
        let mut changes = DedupChanges::default();
        let result = self.write(batch.drain(..), &mut replies, &mut changes);
        let retained_from = self.retained_from.take();
        match result {
            Ok(()) => {
                if let Some(first) = retained_from {
                    self.hot.forget_below(first);
                }
                self.head.send_if_modified(|head| {
                    let changed = *head != self.state.next_seq;
                    *head = self.state.next_seq;
                    changed
                });
                replies.into_iter().for_each(Reply::send);
            }
            Err(error) => {
                tracing::error!(%error, "embedded bus write failed; nothing in the batch was acknowledged");
                self.state = before;
                self.behind = false;
                for (hash, seq) in &changes.inserted {
                    self.dedup.remove(hash, *seq);
                }
                for (hash, seq) in &changes.expired {
                    self.dedup.insert(hash, *seq);
                }
                self.reload_counts();
                let message = error.to_string();
                replies.into_iter().for_each(|reply| reply.fail(&message));
            }
        }
    }

    fn write(
        &mut self,
        batch: impl Iterator<Item = Command>,
        replies: &mut Vec<Reply>,
        changes: &mut DedupChanges,
    ) -> std::result::Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        let now = now_ms();
        let mut maintain = false;
        let mut maintain_replies = Vec::new();
        {
            let mut log = txn.open_table(LOG)?;
            let mut dedup_keys = txn.open_table(DEDUP_KEYS)?;
            let mut groups = txn.open_table(GROUPS)?;
            let mut delayed = txn.open_table(DELAYED)?;
            let mut dead_letters = txn.open_table(DEAD_LETTERS)?;
            let mut state = txn.open_table(STATE)?;
            let mut time_index = txn.open_table(TIME_INDEX)?;
            let mut type_counts = txn.open_table(TYPE_COUNTS)?;
            let mut indexed_ms = None;
            for command in batch {
                match command {
                    Command::Publish { key, ty, json, reply } => {
                        let hash = key_hash(&key);
                        if self.dedup.contains(&hash, self.state.next_seq, &dedup_keys) {
                            replies.push(Reply::Publish(reply, PublishOutcome::Duplicate));
                            continue;
                        }
                        let seq = self.state.next_seq;
                        let bytes = record::encode(now, &ty, &key, &json);
                        self.state.next_seq += 1;
                        self.state.total_bytes += bytes.len() as u64;
                        log.insert(seq, bytes.as_slice())?;
                        self.counts.add(&ty, seq, &mut type_counts)?;
                        let mut journal = [0u8; 24];
                        journal[..16].copy_from_slice(&hash);
                        journal[16..].copy_from_slice(&now.to_be_bytes());
                        dedup_keys.insert(seq, journal.as_slice())?;
                        self.dedup.insert(&hash, seq);
                        changes.inserted.push((hash, seq));
                        if indexed_ms != Some(now) {
                            indexed_ms = Some(now);
                            if time_index.get(now)?.is_none() {
                                time_index.insert(now, seq)?;
                            }
                        }
                        replies.push(Reply::Publish(reply, PublishOutcome::Published));
                    }
                    Command::Settle { group, settle, reply } => {
                        if let Some(position) = settle.position {
                            let stored = groups.get(group.as_str())?.map(|g| g.value()).unwrap_or(0);
                            if position > stored {
                                groups.insert(group.as_str(), position)?;
                            }
                        }
                        if let Some((due, seq)) = settle.remove_delayed {
                            delayed.remove((group.as_str(), due, seq))?;
                        }
                        if let Some((due, seq, value)) = &settle.add_delayed {
                            delayed.insert((group.as_str(), *due, *seq), value.as_slice())?;
                        }
                        if let Some((into, seq, value)) = &settle.add_dead_letter {
                            dead_letters.insert((into.as_str(), *seq), value.as_slice())?;
                        }
                        replies.push(Reply::Unit(reply));
                    }
                    Command::ReplayDeadLetters { group, seq, reply } => {
                        let range = seq.map_or((0, u64::MAX), |s| (s, s));
                        let letters: Vec<(u64, Vec<u8>)> = dead_letters
                            .range((group.as_str(), range.0)..=(group.as_str(), range.1))?
                            .map(|e| e.map(|(k, v)| (k.value().1, v.value().to_vec())))
                            .collect::<std::result::Result<_, _>>()?;
                        let mut moved = Vec::with_capacity(letters.len());
                        for (seq, value) in letters {
                            dead_letters.remove((group.as_str(), seq))?;
                            if let Some((_, _, record)) = record::decode_dead_letter(&value) {
                                delayed
                                    .insert((group.as_str(), now, seq), record::encode_delayed(1, record).as_slice())?;
                                moved.push((now, seq));
                            }
                        }
                        replies.push(Reply::Moved(reply, moved));
                    }
                    Command::DiscardDeadLetters { group, seq, reply } => {
                        let range = seq.map_or((0, u64::MAX), |s| (s, s));
                        let keys: Vec<u64> = dead_letters
                            .range((group.as_str(), range.0)..=(group.as_str(), range.1))?
                            .map(|e| e.map(|(k, _)| k.value().1))
                            .collect::<std::result::Result<_, _>>()?;
                        for seq in &keys {
                            dead_letters.remove((group.as_str(), *seq))?;
                        }
                        replies.push(Reply::Count(reply, keys.len() as u64));
                    }
                    Command::PutState { key, value, reply } => {
                        match value {
                            Some(value) => state.insert(key.as_str(), value.as_slice())?,
                            None => state.remove(key.as_str())?,
                        };
                        replies.push(Reply::Unit(Some(reply)));
                    }
                    Command::Reset { group, position, reply } => {
                        groups.insert(group.as_str(), position)?;
                        replies.push(Reply::Unit(Some(reply)));
                    }
                    Command::Maintain(reply) => {
                        maintain = true;
                        maintain_replies.extend(reply);
                    }
                }
            }
        }
        if maintain {
            self.behind = self.maintain(&txn, now, changes)?;
            let more = self.behind;
            replies.extend(maintain_replies.into_iter().map(|tx| Reply::More(tx, more)));
        }
        self.state.store(&txn)?;
        txn.commit()?;
        Ok(())
    }

    /// Puts the type counts back to what is committed, after a batch that
    /// failed to commit had counted its events.
    fn reload_counts(&mut self) {
        let loaded = self.db.begin_write().map_err(redb::Error::from).and_then(|txn| {
            let counts = TypeCounts::load(&txn, self.state.next_seq)?;
            txn.abort()?;
            Ok(counts)
        });
        match loaded {
            Ok(counts) => self.counts = counts,
            Err(error) => {
                tracing::error!(%error, "embedded bus: cannot reload the type counts; backlog gauges may be off")
            }
        }
    }

    /// Retention by age and size, and expiry of dedup entries past the
    /// window, up to [`MAX_EXPIRE`] of each; whether more is due.
    fn maintain(
        &mut self,
        txn: &WriteTransaction,
        now: u64,
        changes: &mut DedupChanges,
    ) -> std::result::Result<bool, redb::Error> {
        let mut log = txn.open_table(LOG)?;
        let mut time_index = txn.open_table(TIME_INDEX)?;
        let age_floor = self.retention.max_age.map(|age| now.saturating_sub(age.as_millis() as u64));
        let mut expired = 0;
        while expired < MAX_EXPIRE {
            let Some((seq, bytes)) = log.first()?.map(|(k, v)| (k.value(), v.value().to_vec())) else { break };
            let appended_ms = record::decode(&bytes).map_or(0, |r| r.appended_ms);
            let too_old = age_floor.is_some_and(|floor| appended_ms < floor);
            let too_big = self.retention.max_bytes.is_some_and(|max| self.state.total_bytes > max);
            if !too_old && !too_big {
                break;
            }
            log.remove(seq)?;
            self.state.total_bytes = self.state.total_bytes.saturating_sub(bytes.len() as u64);
            expired += 1;
        }
        if expired > 0 {
            tracing::info!(expired, "embedded bus retention removed old events");
            let first = log.first()?.map_or(self.state.next_seq, |(k, _)| k.value());
            // Keep the index entry that points at the first retained record.
            let stale: Vec<u64> = time_index
                .iter()?
                .map_while(|e| e.ok().map(|(k, v)| (k.value(), v.value())))
                .take_while(|&(_, seq)| seq < first)
                .map(|(ms, _)| ms)
                .collect();
            for ms in stale {
                time_index.remove(ms)?;
            }
            counts::forget_below(txn, first)?;
            self.retained_from = Some(first);
        }
        // The dedup window is independent of retention: an id seen within
        // the window is a duplicate even if its event was already removed.
        let window_floor = now.saturating_sub(self.retention.dedup_window.as_millis() as u64);
        let mut dedup_keys = txn.open_table(DEDUP_KEYS)?;
        let mut forgotten = 0;
        while forgotten < MAX_EXPIRE {
            let Some((seq, value)) = dedup_keys.first()?.map(|(k, v)| (k.value(), v.value().to_vec())) else { break };
            let appended_ms = value.get(16..24).map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
            if appended_ms >= window_floor {
                break;
            }
            dedup_keys.remove(seq)?;
            if let Some(hash) = value.get(..16).map(|h| <KeyHash>::try_from(h).expect("16 bytes"))
                && self.dedup.remove(&hash, seq)
            {
                changes.expired.push((hash, seq));
            }
            forgotten += 1;
        }
        let first = dedup_keys.first()?.map_or(self.state.next_seq, |(k, _)| k.value());
        self.dedup.compact(first, self.state.next_seq);
        Ok(expired == MAX_EXPIRE || forgotten == MAX_EXPIRE)
    }
}

/// Sends `Maintain` every `every` until the writer is gone.
pub(crate) async fn maintenance_loop(tx: mpsc::WeakSender<Command>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(tx) = tx.upgrade() else { return };
        if tx.send(Command::Maintain(None)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::{Command, MAX_EXPIRE, Settle};
    use crate::Publisher;
    use crate::embedded::{EmbeddedBus, EmbeddedOptions};

    async fn publish(bus: &Arc<EmbeddedBus>, n: usize) {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let bus = bus.clone();
                tokio::spawn(async move { bus.publish(&crate::conformance::event("email.sent")).await.unwrap() })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }

    /// A backlog past retention larger than one pass removes is removed
    /// pass after pass, without waiting for the next interval.
    #[tokio::test]
    async fn retention_that_falls_behind_catches_up_before_the_next_interval() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = EmbeddedOptions::new(dir.path());
        options.retention.max_age = Some(Duration::from_millis(1));
        options.maintenance_interval = Duration::from_secs(3600);
        let bus = Arc::new(EmbeddedBus::open(options).unwrap());
        publish(&bus, MAX_EXPIRE * 4 + 10).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        // One pass asked for, as the interval would; its commit answers the settle behind it.
        bus.shared.tx().send(Command::Maintain(None)).await.unwrap();
        bus.shared.send_settle("", Settle::default()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = bus.read_all().unwrap().len();
            if left == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{left} events still in the log");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // And an explicit maintenance returns only when nothing more is due.
        publish(&bus, MAX_EXPIRE * 3).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        bus.maintain().await.unwrap();
        assert_eq!(bus.read_all().unwrap().len(), 0);
    }
}
