//! The embedded bus: a durable log on local disk in one redb file, for
//! running hookbridge on one machine with no broker.
//!
//! - An acknowledged publish has been committed with fsync; concurrent
//!   publishes share one commit ([`writer`]).
//! - Consumer groups keep a committed position; nacked events wait in a
//!   durable retry table until due, without holding back newer events.
//! - A time index serves replay from a point in time; retention removes
//!   the oldest events by age and total size; an event id already held
//!   within the dedup window is not stored again.
//!
//! One process owns the file (redb locks it); consumers in that process
//! share groups.

mod attempts;
mod consumer;
mod counts;
mod dedup;
mod hot;
pub(crate) mod record;
mod tables;
mod tail;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hookbridge_event::Event;
use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::sync::{mpsc, oneshot, watch};

use self::consumer::Group;
use self::tables::{DEAD_LETTERS, DEDUP_KEYS, DELAYED, GROUPS, LOG, META, STATE, TIME_INDEX, TYPE_COUNTS};
use self::writer::{Command, LogState, Writer};
use crate::attempts::{AttemptQuery, AttemptRecord};
use crate::{
    Bus, Consumer, DeadLetter, Error, GroupStatus, NewGroup, PublishOutcome, Publisher, Result, StartFrom,
    SubscribeOptions,
};
use chrono::{DateTime, TimeZone, Utc};
use hookbridge_event::EventPattern;

/// File name of the log inside the bus directory.
pub const FILE_NAME: &str = "hookbridge-bus.redb";

/// redb's page cache for the log. redb's default (1 GiB) grows with every
/// page a backlog's drain reads; the log is read forward once per group, so
/// a small cache costs nothing the operating system's page cache does not
/// already hold, and keeps the process's memory flat. Measured on a drain of
/// 300,000 events: 16 MiB drains as fast as 64 MiB, at 96 MiB RSS instead of
/// 193 MiB (the cache's page buffers also fragment the allocator's heap).
const LOG_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Settings of the embedded bus.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Directory holding the log file; created if missing.
    pub path: PathBuf,
    pub retention: Retention,
    /// How often retention and dedup expiry run.
    pub maintenance_interval: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Events older than this are removed.
    pub max_age: Option<Duration>,
    /// The oldest events are removed while the log holds more than this.
    pub max_bytes: Option<u64>,
    /// A republished event id is ignored for this long after the first.
    pub dedup_window: Duration,
    /// Delivery attempts are kept this long (the delivery record).
    pub attempts_max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            max_bytes: None,
            dedup_window: Duration::from_secs(24 * 3600),
            attempts_max_age: crate::attempts::DEFAULT_RETENTION,
        }
    }
}

impl EmbeddedOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), retention: Retention::default(), maintenance_interval: Duration::from_secs(10) }
    }
}

/// The embedded bus. Cheap to clone; all clones share one log.
#[derive(Debug, Clone)]
pub struct EmbeddedBus {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    db: Arc<Database>,
    /// Taken on drop, which ends the writer thread.
    tx: Option<mpsc::Sender<Command>>,
    writer: Option<std::thread::JoinHandle<()>>,
    head: watch::Receiver<u64>,
    groups: Mutex<HashMap<String, Weak<Group>>>,
    /// Serializes group creation, so one group is opened once.
    subscribing: tokio::sync::Mutex<()>,
    path: PathBuf,
    /// The delivery record, in a file of its own.
    attempts: attempts::AttemptLog,
    /// The newest log records, read once for every group and tail.
    hot: Arc<hot::HotRecords>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the queue ends the writer after its current batch; joining
        // it releases the file, so the bus can be reopened at once.
        self.tx.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn storage(e: impl Into<redb::Error>) -> Error {
    Error::Storage(e.into().to_string())
}

impl EmbeddedBus {
    /// Opens (or creates) the log in `options.path`, recovering it after a
    /// crash, and starts its writer thread. Must be called within a Tokio
    /// runtime.
    ///
    /// # Errors
    /// [`Error::Storage`] when the directory or file cannot be opened, for
    /// example because another process holds it.
    pub fn open(options: EmbeddedOptions) -> Result<Self> {
        std::fs::create_dir_all(&options.path)
            .map_err(|e| Error::Storage(format!("cannot create {}: {e}", options.path.display())))?;
        let file = options.path.join(FILE_NAME);
        let db = Database::builder()
            .set_cache_size(LOG_CACHE_BYTES)
            .create(&file)
            .map_err(|e| Error::Storage(format!("cannot open {}: {e}", file.display())))?;
        let state = {
            let txn = db.begin_write().map_err(storage)?;
            txn.open_table(LOG).map_err(storage)?;
            txn.open_table(TIME_INDEX).map_err(storage)?;
            txn.open_table(DEDUP_KEYS).map_err(storage)?;
            txn.open_table(GROUPS).map_err(storage)?;
            txn.open_table(DELAYED).map_err(storage)?;
            txn.open_table(META).map_err(storage)?;
            txn.open_table(DEAD_LETTERS).map_err(storage)?;
            txn.open_table(STATE).map_err(storage)?;
            let state = LogState::load(&txn).map_err(storage)?;
            let dedup = dedup::DedupIndex::load(&txn).map_err(storage)?;
            let counts = counts::TypeCounts::load(&txn, state.next_seq).map_err(storage)?;
            txn.commit().map_err(storage)?;
            (state, dedup, counts)
        };
        let (state, dedup, counts) = state;
        let db = Arc::new(db);
        let (head_tx, head) = watch::channel(state.next_seq);
        let (tx, rx) = mpsc::channel(16 * 1024);
        let hot = Arc::new(hot::HotRecords::new(db.clone()));
        let writer = Writer {
            db: db.clone(),
            state,
            head: head_tx,
            retention: options.retention,
            dedup,
            counts,
            behind: false,
            hot: hot.clone(),
            retained_from: None,
        };
        let writer = std::thread::Builder::new()
            .name("hookbridge-bus-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::Storage(format!("cannot start the bus writer: {e}")))?;
        tokio::spawn(writer::maintenance_loop(tx.downgrade(), options.maintenance_interval));
        let attempts = attempts::AttemptLog::open(
            &options.path,
            options.retention.attempts_max_age,
            options.maintenance_interval,
        )?;
        tracing::info!(path = %file.display(), next_seq = state.next_seq, "embedded bus opened");
        Ok(Self {
            shared: Arc::new(Shared {
                hot,
                db,
                tx: Some(tx),
                writer: Some(writer),
                head,
                groups: Mutex::default(),
                subscribing: tokio::sync::Mutex::new(()),
                path: options.path,
                attempts,
            }),
        })
    }

    /// The directory this bus lives in.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Runs retention and dedup expiry now rather than at the next interval.
    ///
    /// # Errors
    /// When the writer is gone or the transaction failed.
    pub async fn maintain(&self) -> Result<()> {
        // Pass after pass until nothing more is due.
        loop {
            let (reply, more) = oneshot::channel();
            self.shared.tx().send(Command::Maintain(Some(reply))).await.map_err(|_| Error::Closed)?;
            if !more.await.map_err(|_| Error::Closed)?? {
                break;
            }
        }
        self.shared.attempts.maintain().await
    }

    /// Every event still in the log, oldest first, with its append time: for
    /// tests and tools, not a hot path.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn read_all(&self) -> Result<Vec<Event>> {
        let txn = self.shared.db.begin_read().map_err(storage)?;
        let log = txn.open_table(LOG).map_err(storage)?;
        let mut events = Vec::new();
        for entry in log.iter().map_err(storage)? {
            let (_, bytes) = entry.map_err(storage)?;
            if let Some(rec) = record::decode(bytes.value()) {
                events.push(Event::from_json(rec.json).map_err(|e| Error::Storage(e.to_string()))?);
            }
        }
        Ok(events)
    }
}

impl Shared {
    fn tx(&self) -> &mpsc::Sender<Command> {
        self.tx.as_ref().expect("sender lives until drop")
    }

    pub(crate) async fn send_settle(&self, group: &str, settle: writer::Settle) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx()
            .send(Command::Settle { group: group.to_owned(), settle, reply: Some(reply) })
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    pub(crate) fn settle_in_background(&self, group: &str, settle: writer::Settle) {
        let _ = self.tx().try_send(Command::Settle { group: group.to_owned(), settle, reply: None });
    }

    async fn request<T>(&self, command: impl FnOnce(oneshot::Sender<Result<T>>) -> Command) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx().send(command(reply)).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    fn open_group(&self, group: &str) -> Option<Arc<Group>> {
        self.groups.lock().expect("groups lock").get(group).and_then(Weak::upgrade)
    }

    async fn reset(&self, group: &str, position: u64) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx().send(Command::Reset { group: group.to_owned(), position, reply }).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Where `start` points, and whether the group must be reset to it.
    fn resolve(&self, group: &str, start: StartFrom) -> Result<(u64, bool)> {
        // The head before the snapshot, which then holds everything below it.
        let head = *self.head.borrow();
        let txn = self.db.begin_read().map_err(storage)?;
        let first = txn.open_table(LOG).map_err(storage)?.first().map_err(storage)?.map_or(head, |(k, _)| k.value());
        Ok(match start {
            StartFrom::Committed { if_new } => {
                match txn.open_table(GROUPS).map_err(storage)?.get(group).map_err(storage)? {
                    Some(position) => (position.value(), false),
                    None => (if if_new == NewGroup::Earliest { first } else { head }, true),
                }
            }
            StartFrom::Earliest => (first, true),
            StartFrom::Latest => (head, true),
            StartFrom::Time(t) => {
                let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0);
                let index = txn.open_table(TIME_INDEX).map_err(storage)?;
                let at = index.range(ms..).map_err(storage)?.next().transpose().map_err(storage)?;
                (at.map_or(head, |(_, seq)| seq.value()).max(first), true)
            }
        })
    }
}

#[async_trait]
impl Publisher for EmbeddedBus {
    async fn publish(&self, event: &Event) -> Result<PublishOutcome> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Publish { key: event.dedup_key(), ty: event.ty.clone(), json: event.to_json(), reply };
        self.shared.tx().send(command).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn check_ready(&self) -> Result<()> {
        if self.shared.tx().is_closed() { Err(Error::Closed) } else { Ok(()) }
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Consumer>> {
        if options.group.is_empty() {
            return Err(Error::Invalid("a consumer group needs a name".into()));
        }
        let _creating = self.shared.subscribing.lock().await;
        let existing = self.shared.groups.lock().expect("groups lock").get(&options.group).and_then(Weak::upgrade);
        let group = match existing {
            Some(group) => {
                if group.patterns != options.patterns {
                    return Err(Error::Invalid(format!(
                        "group `{}` is already consuming other event types in this process",
                        options.group
                    )));
                }
                if !matches!(options.start, StartFrom::Committed { .. }) {
                    return Err(Error::Invalid(format!(
                        "group `{}` has active consumers; stop them before moving its position",
                        options.group
                    )));
                }
                group
            }
            None => {
                let (position, reset) = self.shared.resolve(&options.group, options.start)?;
                if reset {
                    self.shared.reset(&options.group, position).await?;
                }
                let group = Arc::new(Group::open(&self.shared, &options, position)?);
                self.shared.groups.lock().expect("groups lock").insert(options.group.clone(), Arc::downgrade(&group));
                group
            }
        };
        Ok(Box::new(consumer::EmbeddedConsumer::new(self.shared.clone(), group)))
    }

    async fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetter>> {
        let txn = self.shared.db.begin_read().map_err(storage)?;
        let table = txn.open_table(DEAD_LETTERS).map_err(storage)?;
        let mut letters = Vec::new();
        for entry in table.range((group, 0)..=(group, u64::MAX)).map_err(storage)? {
            let (key, value) = entry.map_err(storage)?;
            let Some((failure, dead_ms, bytes)) = record::decode_dead_letter(value.value()) else { continue };
            let Some(event) = record::decode(bytes).and_then(|r| Event::from_json(r.json).ok()) else { continue };
            letters.push(DeadLetter {
                id: key.value().1.to_string(),
                event,
                failure,
                dead_lettered_at: to_time(dead_ms),
            });
        }
        Ok(letters)
    }

    async fn replay_dead_letters(&self, group: &str, id: Option<&str>) -> Result<u64> {
        let seq = parse_id(id)?;
        let moved =
            self.shared.request(|reply| Command::ReplayDeadLetters { group: group.to_owned(), seq, reply }).await?;
        if let Some(open) = self.shared.open_group(group) {
            open.schedule(&moved);
        }
        Ok(moved.len() as u64)
    }

    async fn discard_dead_letters(&self, group: &str, id: Option<&str>) -> Result<u64> {
        let seq = parse_id(id)?;
        self.shared.request(|reply| Command::DiscardDeadLetters { group: group.to_owned(), seq, reply }).await
    }

    async fn group_status(&self, group: &str, patterns: &[EventPattern]) -> Result<GroupStatus> {
        let txn = self.shared.db.begin_read().map_err(storage)?;
        let stored = txn.open_table(GROUPS).map_err(storage)?.get(group).map_err(storage)?.map(|v| v.value());
        let open = self.shared.open_group(group).map(|g| g.committed());
        let position = stored.into_iter().chain(open).max().unwrap_or(*self.shared.head.borrow());
        let mut status = GroupStatus::default();
        let log = txn.open_table(LOG).map_err(storage)?;
        let first = log.first().map_err(storage)?.map_or(position, |(k, _)| k.value());
        let rows = txn.open_table(TYPE_COUNTS).map_err(storage)?;
        let (backlog, first_ms) =
            counts::matching_from(&log, &rows, position.max(first), |ty| matches(patterns, ty)).map_err(storage)?;
        status.backlog = backlog;
        status.oldest_undelivered = first_ms.map(to_time);
        let delayed = txn.open_table(DELAYED).map_err(storage)?;
        for entry in delayed.range((group, 0, 0)..=(group, u64::MAX, u64::MAX)).map_err(storage)? {
            let (_, value) = entry.map_err(storage)?;
            status.pending_retries += 1;
            status.backlog += 1;
            if let Some(rec) = record::decode_delayed(value.value()).and_then(|(_, r)| record::decode(r)) {
                let at = to_time(rec.appended_ms);
                status.oldest_undelivered = Some(status.oldest_undelivered.map_or(at, |t| t.min(at)));
            }
        }
        let dead = txn.open_table(DEAD_LETTERS).map_err(storage)?;
        status.dead_letters = dead.range((group, 0)..=(group, u64::MAX)).map_err(storage)?.count() as u64;
        Ok(status)
    }

    async fn count_between(
        &self,
        patterns: &[EventPattern],
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<u64>> {
        let txn = self.shared.db.begin_read().map_err(storage)?;
        let since_ms = u64::try_from(since.timestamp_millis()).unwrap_or(0);
        let until_ms = u64::try_from(until.timestamp_millis()).unwrap_or(0);
        let index = txn.open_table(TIME_INDEX).map_err(storage)?;
        let Some(start) =
            index.range(since_ms..).map_err(storage)?.next().transpose().map_err(storage)?.map(|(_, s)| s.value())
        else {
            return Ok(Some(0));
        };
        let log = txn.open_table(LOG).map_err(storage)?;
        let mut count = 0;
        for entry in log.range(start..).map_err(storage)? {
            let (_, bytes) = entry.map_err(storage)?;
            let Some(rec) = record::decode(bytes.value()) else { continue };
            if rec.appended_ms > until_ms {
                break;
            }
            count += u64::from(matches(patterns, rec.ty));
        }
        Ok(Some(count))
    }

    async fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.shared.db.begin_read().map_err(storage)?;
        let table = txn.open_table(STATE).map_err(storage)?;
        Ok(table.get(key).map_err(storage)?.map(|v| v.value().to_vec()))
    }

    async fn tail(&self, patterns: Vec<EventPattern>, from: crate::TailFrom) -> Result<Box<dyn crate::Tail>> {
        Ok(Box::new(tail::EmbeddedTail::open(self.shared.clone(), patterns, &from)?))
    }

    async fn put_state(&self, key: &str, value: Option<Vec<u8>>) -> Result<()> {
        self.shared.request(|reply| Command::PutState { key: key.to_owned(), value, reply }).await
    }

    async fn record_attempts(&self, attempts: &[AttemptRecord]) -> Result<()> {
        if attempts.is_empty() {
            return Ok(());
        }
        self.shared.attempts.record(attempts.to_vec()).await
    }

    async fn attempts(&self, query: &AttemptQuery) -> Result<Vec<AttemptRecord>> {
        self.shared.attempts.query(query)
    }
}

fn parse_id(id: Option<&str>) -> Result<Option<u64>> {
    id.map(|id| id.parse::<u64>().map_err(|_| Error::Invalid(format!("`{id}` is not a dead-letter id of this bus"))))
        .transpose()
}

pub(crate) fn to_time(ms: u64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms as i64).single().unwrap_or_else(Utc::now)
}

fn matches(patterns: &[EventPattern], ty: &str) -> bool {
    patterns.iter().any(|p| p.matches(ty))
}
