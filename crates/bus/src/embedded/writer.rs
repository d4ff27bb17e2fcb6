//! The single writer of the embedded log. Every change (publishes, position
//! commits, scheduled retries, retention) goes through one thread that
//! drains whatever is queued into one redb write transaction and commits it
//! with one fsync: concurrent publishers share the sync (group commit), and
//! each is answered only after the commit returned.

use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot, watch};

use super::record;
use super::tables::{DEDUP, DELAYED, GROUPS, LOG, META, TIME_INDEX, meta_get};
use super::{Retention, now_ms};
use crate::{Error, PublishOutcome, Result};

/// Most commands applied in one transaction.
const MAX_BATCH: usize = 4096;
/// Most records retention removes per transaction, so a large expiry does
/// not stall publishers.
const MAX_EXPIRE: usize = 20_000;

pub(crate) enum Command {
    Publish { key: String, ty: String, json: Vec<u8>, reply: oneshot::Sender<Result<PublishOutcome>> },
    /// Settles deliveries of a group: raise its position, drop a scheduled
    /// retry, schedule a new one — atomically.
    Settle { group: String, settle: Settle, reply: Option<oneshot::Sender<Result<()>>> },
    /// Sets a group's position exactly (a new group, or a replay).
    Reset { group: String, position: u64, reply: oneshot::Sender<Result<()>> },
    Maintain,
}

#[derive(Debug, Default)]
pub(crate) struct Settle {
    /// New committed position; the stored one only ever rises.
    pub position: Option<u64>,
    /// A scheduled retry `(due_ms, seq)` that is done.
    pub remove_delayed: Option<(u64, u64)>,
    /// A retry to schedule: `(due_ms, seq, encoded delayed value)`.
    pub add_delayed: Option<(u64, u64, Vec<u8>)>,
}

/// Counters the writer keeps in META.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogState {
    pub next_seq: u64,
    pub total_bytes: u64,
    /// Records below this seq have had their dedup entries expired.
    pub dedup_floor: u64,
}

impl LogState {
    pub fn load(txn: &WriteTransaction) -> std::result::Result<Self, redb::Error> {
        let meta = txn.open_table(META)?;
        Ok(Self {
            next_seq: meta_get(&meta, "next_seq")?,
            total_bytes: meta_get(&meta, "total_bytes")?,
            dedup_floor: meta_get(&meta, "dedup_floor")?,
        })
    }

    fn store(&self, txn: &WriteTransaction) -> std::result::Result<(), redb::Error> {
        let mut meta = txn.open_table(META)?;
        meta.insert("next_seq", self.next_seq)?;
        meta.insert("total_bytes", self.total_bytes)?;
        meta.insert("dedup_floor", self.dedup_floor)?;
        Ok(())
    }
}

pub(crate) struct Writer {
    pub db: Arc<Database>,
    pub state: LogState,
    pub head: watch::Sender<u64>,
    pub retention: Retention,
}

enum Reply {
    Publish(oneshot::Sender<Result<PublishOutcome>>, PublishOutcome),
    Unit(Option<oneshot::Sender<Result<()>>>),
}

impl Writer {
    /// Runs until every sender is gone.
    pub fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.apply(&mut batch);
        }
        tracing::debug!("embedded bus writer stopped");
    }

    fn apply(&mut self, batch: &mut Vec<Command>) {
        let before = self.state;
        let mut replies = Vec::with_capacity(batch.len());
        let result = self.write(batch.drain(..), &mut replies);
        match result {
            Ok(()) => {
                self.head.send_if_modified(|head| {
                    let changed = *head != self.state.next_seq;
                    *head = self.state.next_seq;
                    changed
                });
                for reply in replies {
                    match reply {
                        Reply::Publish(tx, outcome) => drop(tx.send(Ok(outcome))),
                        Reply::Unit(Some(tx)) => drop(tx.send(Ok(()))),
                        Reply::Unit(None) => {}
                    }
                }
            }
            Err(error) => {
                tracing::error!(%error, "embedded bus write failed; nothing in the batch was acknowledged");
                self.state = before;
                let message = error.to_string();
                for reply in replies {
                    match reply {
                        Reply::Publish(tx, _) => drop(tx.send(Err(Error::Storage(message.clone())))),
                        Reply::Unit(Some(tx)) => drop(tx.send(Err(Error::Storage(message.clone())))),
                        Reply::Unit(None) => {}
                    }
                }
            }
        }
    }

    fn write(&mut self, batch: impl Iterator<Item = Command>, replies: &mut Vec<Reply>) -> std::result::Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        let now = now_ms();
        let mut maintain = false;
        {
            let mut log = txn.open_table(LOG)?;
            let mut dedup = txn.open_table(DEDUP)?;
            let mut groups = txn.open_table(GROUPS)?;
            let mut delayed = txn.open_table(DELAYED)?;
            let mut time_index = txn.open_table(TIME_INDEX)?;
            let mut indexed_ms = None;
            for command in batch {
                match command {
                    Command::Publish { key, ty, json, reply } => {
                        if dedup.get(key.as_str())?.is_some() {
                            replies.push(Reply::Publish(reply, PublishOutcome::Duplicate));
                            continue;
                        }
                        let seq = self.state.next_seq;
                        let bytes = record::encode(now, &ty, &key, &json);
                        self.state.next_seq += 1;
                        self.state.total_bytes += bytes.len() as u64;
                        log.insert(seq, bytes.as_slice())?;
                        dedup.insert(key.as_str(), seq)?;
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
                        replies.push(Reply::Unit(reply));
                    }
                    Command::Reset { group, position, reply } => {
                        groups.insert(group.as_str(), position)?;
                        replies.push(Reply::Unit(Some(reply)));
                    }
                    Command::Maintain => maintain = true,
                }
            }
        }
        if maintain {
            self.maintain(&txn, now)?;
        }
        self.state.store(&txn)?;
        txn.commit()?;
        Ok(())
    }

    /// Retention by age and size, and expiry of dedup entries past the window.
    fn maintain(&mut self, txn: &WriteTransaction, now: u64) -> std::result::Result<(), redb::Error> {
        let mut log = txn.open_table(LOG)?;
        let mut dedup = txn.open_table(DEDUP)?;
        let mut time_index = txn.open_table(TIME_INDEX)?;
        let age_floor = self.retention.max_age.map(|age| now.saturating_sub(age.as_millis() as u64));
        let mut expired = 0;
        while expired < MAX_EXPIRE {
            let Some((seq, bytes)) = log.first()?.map(|(k, v)| (k.value(), v.value().to_vec())) else { break };
            let Some(rec) = record::decode(&bytes) else {
                log.remove(seq)?;
                continue;
            };
            let too_old = age_floor.is_some_and(|floor| rec.appended_ms < floor);
            let too_big = self.retention.max_bytes.is_some_and(|max| self.state.total_bytes > max);
            if !too_old && !too_big {
                break;
            }
            log.remove(seq)?;
            self.state.total_bytes = self.state.total_bytes.saturating_sub(bytes.len() as u64);
            if dedup.get(rec.key)?.is_some_and(|held| held.value() == seq) {
                dedup.remove(rec.key)?;
            }
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
        }
        // Dedup window: walk the log from the floor while records are older.
        let window_floor = now.saturating_sub(self.retention.dedup_window.as_millis() as u64);
        let mut walked = 0;
        let mut floor = self.state.dedup_floor;
        for entry in log.range(self.state.dedup_floor..)? {
            let (seq, bytes) = entry?;
            let (seq, bytes) = (seq.value(), bytes.value());
            let Some(rec) = record::decode(bytes) else { floor = seq + 1; continue };
            if rec.appended_ms >= window_floor || walked >= MAX_EXPIRE {
                break;
            }
            if dedup.get(rec.key)?.is_some_and(|held| held.value() == seq) {
                dedup.remove(rec.key)?;
            }
            floor = seq + 1;
            walked += 1;
        }
        self.state.dedup_floor = floor;
        Ok(())
    }
}

/// Sends `Maintain` every `every` until the writer is gone.
pub(crate) async fn maintenance_loop(tx: mpsc::WeakSender<Command>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(tx) = tx.upgrade() else { return };
        if tx.send(Command::Maintain).await.is_err() {
            return;
        }
    }
}
