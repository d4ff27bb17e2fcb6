//! The embedded bus's delivery record: a redb file of its own
//! (`hookbridge-attempts.redb`, beside the log) with a writer thread of its
//! own, so recording attempts never waits for, nor delays, the log's
//! group commits of events and acknowledgements.
//!
//! Batches are committed without fsync (`Durability::None`), with one
//! durable commit at least every [`SYNC_EVERY`]: a crash of the process or
//! the machine can lose the attempts of the last second or so, never an
//! event. Expiry by age runs on the same thread.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::tables::{ATTEMPTS, ATTEMPTS_BY_EVENT, ATTEMPTS_BY_SUBSCRIBER};
use super::{now_ms, storage};
use crate::attempts::{AttemptQuery, AttemptRecord, Newest};
use crate::{Error, Result};

/// File name of the delivery record inside the bus directory.
pub const FILE_NAME: &str = "hookbridge-attempts.redb";
/// A durable commit at least this often.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// Most attempts expired per transaction.
const MAX_EXPIRE: usize = 20_000;
/// `next` → the number of the next attempt recorded.
const COUNTER: TableDefinition<&str, u64> = TableDefinition::new("attempts_meta");

enum Command {
    Record(Vec<AttemptRecord>, oneshot::Sender<Result<()>>),
    /// Expire now, durably (`EmbeddedBus::maintain`).
    Maintain(oneshot::Sender<Result<()>>),
}

#[derive(Debug)]
pub(crate) struct AttemptLog {
    db: Arc<Database>,
    /// Taken on drop, which ends the writer thread.
    tx: Option<std_mpsc::Sender<Command>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Record(..) => "Record",
            Self::Maintain(_) => "Maintain",
        })
    }
}

impl Drop for AttemptLog {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl AttemptLog {
    pub(crate) fn open(dir: &Path, max_age: Duration, maintain_every: Duration) -> Result<Self> {
        let file = dir.join(FILE_NAME);
        // The record is written far more than it is read: a small cache.
        let db = Database::builder()
            .set_cache_size(16 * 1024 * 1024)
            .create(&file)
            .map_err(|e| Error::Storage(format!("cannot open {}: {e}", file.display())))?;
        let next = {
            let txn = db.begin_write().map_err(storage)?;
            txn.open_table(ATTEMPTS).map_err(storage)?;
            txn.open_table(ATTEMPTS_BY_SUBSCRIBER).map_err(storage)?;
            txn.open_table(ATTEMPTS_BY_EVENT).map_err(storage)?;
            let next = txn.open_table(COUNTER).map_err(storage)?.get("next").map_err(storage)?.map_or(0, |v| v.value());
            txn.commit().map_err(storage)?;
            next
        };
        let db = Arc::new(db);
        let (tx, rx) = std_mpsc::channel();
        let writer = Writer { db: db.clone(), next, max_age, last_sync: Instant::now(), dirty: false };
        let thread = std::thread::Builder::new()
            .name("hookbridge-attempts-writer".into())
            .spawn(move || writer.run(&rx, maintain_every))
            .map_err(|e| Error::Storage(format!("cannot start the attempts writer: {e}")))?;
        Ok(Self { db, tx: Some(tx), thread: Some(thread) })
    }

    async fn ask(&self, command: impl FnOnce(oneshot::Sender<Result<()>>) -> Command) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx.as_ref().ok_or(Error::Closed)?.send(command(reply)).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    pub(crate) async fn record(&self, attempts: Vec<AttemptRecord>) -> Result<()> {
        self.ask(|reply| Command::Record(attempts, reply)).await
    }

    pub(crate) async fn maintain(&self) -> Result<()> {
        self.ask(Command::Maintain).await
    }

    pub(crate) fn query(&self, query: &AttemptQuery) -> Result<Vec<AttemptRecord>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let records = txn.open_table(ATTEMPTS).map_err(storage)?;
        let since = query.since.map_or(0, |t| u64::try_from(t.timestamp_millis()).unwrap_or(0));
        let read = |key: (u64, u64)| -> Result<Option<AttemptRecord>> {
            let value = records.get(key).map_err(storage)?;
            Ok(value.and_then(|v| AttemptRecord::from_json(v.value())).filter(|r| query.matches(r)))
        };
        if let Some(event) = &query.event {
            // Few per event: read them all.
            let mut newest = Newest::new(query);
            let index = txn.open_table(ATTEMPTS_BY_EVENT).map_err(storage)?;
            for entry in
                index.range((event.as_str(), since, 0)..=(event.as_str(), u64::MAX, u64::MAX)).map_err(storage)?
            {
                let entry = entry.map_err(storage)?;
                let (_, at, n) = entry.0.value();
                if let Some(record) = read((at, n))? {
                    newest.offer(record);
                }
            }
            return Ok(newest.into_newest_first());
        }
        // Newest first, until enough answer.
        let limit = query.capped_limit();
        let mut found = Vec::new();
        if let Some(subscriber) = &query.subscriber {
            let index = txn.open_table(ATTEMPTS_BY_SUBSCRIBER).map_err(storage)?;
            let range = (subscriber.as_str(), since, 0)..=(subscriber.as_str(), u64::MAX, u64::MAX);
            for entry in index.range(range).map_err(storage)?.rev() {
                let entry = entry.map_err(storage)?;
                let (_, at, n) = entry.0.value();
                if let Some(record) = read((at, n))? {
                    found.push(record);
                    if found.len() == limit {
                        break;
                    }
                }
            }
        } else {
            for entry in records.range((since, 0)..).map_err(storage)?.rev() {
                let (_, value) = entry.map_err(storage)?;
                if let Some(record) = AttemptRecord::from_json(value.value()).filter(|r| query.matches(r)) {
                    found.push(record);
                    if found.len() == limit {
                        break;
                    }
                }
            }
        }
        Ok(found)
    }
}

struct Writer {
    db: Arc<Database>,
    next: u64,
    max_age: Duration,
    last_sync: Instant,
    /// Something was committed without fsync since the last durable commit.
    dirty: bool,
}

impl Writer {
    fn run(mut self, rx: &std_mpsc::Receiver<Command>, maintain_every: Duration) {
        let mut last_expiry = Instant::now();
        loop {
            let wait = maintain_every.saturating_sub(last_expiry.elapsed()).min(SYNC_EVERY);
            let first = match rx.recv_timeout(wait) {
                Ok(command) => Some(command),
                Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut batch: Vec<Command> = first.into_iter().collect();
            batch.extend(rx.try_iter().take(4096));
            let maintain =
                batch.iter().any(|c| matches!(c, Command::Maintain(_))) || last_expiry.elapsed() >= maintain_every;
            let sync_due = self.dirty && self.last_sync.elapsed() >= SYNC_EVERY;
            if batch.is_empty() && !maintain && !sync_due {
                continue;
            }
            let durable = maintain || self.last_sync.elapsed() >= SYNC_EVERY;
            let result = self.write(&batch, maintain, durable).map_err(|e| Error::Storage(e.to_string()));
            if let Err(error) = &result {
                tracing::error!(%error, "the delivery record could not be written; those attempts are not kept");
            }
            if maintain {
                last_expiry = Instant::now();
            }
            for command in batch {
                let (Command::Record(_, reply) | Command::Maintain(reply)) = command;
                let _ = reply.send(result.clone());
            }
        }
        // A last durable commit of what the batches without fsync wrote.
        if self.dirty {
            let _ = self.write(&[], false, true);
        }
    }

    fn write(&mut self, batch: &[Command], maintain: bool, durable: bool) -> std::result::Result<(), redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None })
            .map_err(|e| redb::Error::from(redb::StorageError::Corrupted(e.to_string())))?;
        let before = self.next;
        {
            let mut attempts = txn.open_table(ATTEMPTS)?;
            let mut by_subscriber = txn.open_table(ATTEMPTS_BY_SUBSCRIBER)?;
            let mut by_event = txn.open_table(ATTEMPTS_BY_EVENT)?;
            for command in batch {
                let Command::Record(records, _) = command else { continue };
                for record in records {
                    let at = u64::try_from(record.at.timestamp_millis()).unwrap_or(0);
                    let n = self.next;
                    self.next += 1;
                    attempts.insert((at, n), record.to_json().as_slice())?;
                    by_subscriber.insert((record.subscriber.as_str(), at, n), ())?;
                    by_event.insert((record.event_id.as_str(), at, n), ())?;
                }
            }
            if maintain {
                let floor = now_ms().saturating_sub(self.max_age.as_millis() as u64);
                let mut expired = 0;
                while expired < MAX_EXPIRE {
                    let Some(((at, n), bytes)) = attempts.first()?.map(|(k, v)| (k.value(), v.value().to_vec())) else {
                        break;
                    };
                    if at >= floor {
                        break;
                    }
                    attempts.remove((at, n))?;
                    if let Some(record) = AttemptRecord::from_json(&bytes) {
                        by_subscriber.remove((record.subscriber.as_str(), at, n))?;
                        by_event.remove((record.event_id.as_str(), at, n))?;
                    }
                    expired += 1;
                }
                if expired > 0 {
                    tracing::debug!(expired, "the delivery record's retention removed old attempts");
                }
            }
            txn.open_table(COUNTER)?.insert("next", self.next)?;
        }
        match txn.commit() {
            Ok(()) => {
                if durable {
                    self.last_sync = Instant::now();
                }
                self.dirty = !durable;
                Ok(())
            }
            Err(e) => {
                self.next = before;
                Err(e.into())
            }
        }
    }
}
