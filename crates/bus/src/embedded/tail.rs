//! Tails of the embedded log: a read position over the log's seqs, no group.
//!
//! A cursor is `e<seq>`: the seq of the next record to read, so it names
//! the position just after the event it came with.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use hookbridge_event::{Event, EventPattern};
use redb::{ReadableDatabase, ReadableTable};
use tokio::sync::watch;

use super::hot::Record;
use super::record;
use super::tables::{LOG, TIME_INDEX};
use super::{Shared, storage, to_time};
use crate::{Error, Result, Tail, TailFrom, Tailed, bad_cursor};

/// How many log records one read takes.
const READ_AHEAD: usize = 256;

pub(crate) fn cursor(next: u64) -> String {
    format!("e{next}")
}

fn parse(cursor: &str) -> Result<u64> {
    cursor.strip_prefix('e').and_then(|n| n.parse().ok()).ok_or_else(|| bad_cursor(cursor))
}

#[derive(Debug)]
pub(crate) struct EmbeddedTail {
    shared: Arc<Shared>,
    head: watch::Receiver<u64>,
    patterns: Vec<EventPattern>,
    /// Seq of the next record to read into `buffer`.
    next: u64,
    buffer: VecDeque<Record>,
}

impl EmbeddedTail {
    /// A cursor older than the log's oldest record is reported as a resync
    /// by the first read.
    pub(crate) fn open(shared: Arc<Shared>, patterns: Vec<EventPattern>, from: &TailFrom) -> Result<Self> {
        let head = *shared.head.borrow();
        let txn = shared.db.begin_read().map_err(storage)?;
        let first = txn.open_table(LOG).map_err(storage)?.first().map_err(storage)?.map_or(head, |(k, _)| k.value());
        let next = match from {
            TailFrom::Now => head,
            TailFrom::After(cursor) => {
                let next = parse(cursor)?;
                if next > head {
                    return Err(Error::Invalid(format!(
                        "cursor `{cursor}` is ahead of this bus (next seq {head}): it is not from this bus"
                    )));
                }
                next
            }
            TailFrom::Time(t) => {
                let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0);
                let index = txn.open_table(TIME_INDEX).map_err(storage)?;
                let at = index.range(ms..).map_err(storage)?.next().transpose().map_err(storage)?;
                at.map_or(head, |(_, seq)| seq.value()).max(first)
            }
        };
        let head_rx = shared.head.clone();
        Ok(Self { shared, head: head_rx, patterns, next, buffer: VecDeque::new() })
    }

    /// Reads the next records into the buffer; `Some(oldest)` when
    /// retention removed records at the read position, which then moves to
    /// the oldest one left.
    fn read_ahead(&mut self, head: u64) -> Result<Option<u64>> {
        let txn = self.shared.db.begin_read().map_err(storage)?;
        let log = txn.open_table(LOG).map_err(storage)?;
        let first = log.first().map_err(storage)?.map_or(head, |(k, _)| k.value());
        let removed = (first > self.next).then_some(first);
        drop((log, txn));
        self.next = self.shared.hot.read(self.next.max(first), head, READ_AHEAD, &mut self.buffer)?;
        Ok(removed)
    }
}

#[async_trait]
impl Tail for EmbeddedTail {
    async fn next(&mut self) -> Result<Tailed> {
        loop {
            while let Some((seq, bytes)) = self.buffer.pop_front() {
                let Some(rec) = record::decode(&bytes) else { continue };
                if !self.patterns.iter().any(|p| p.matches(rec.ty)) {
                    continue;
                }
                let event = Event::from_json(rec.json).map_err(|e| Error::Storage(e.to_string()))?;
                return Ok(Tailed::Event {
                    event: Box::new(event),
                    cursor: cursor(seq + 1),
                    published_at: to_time(rec.appended_ms),
                });
            }
            let head = *self.head.borrow_and_update();
            if self.next >= head {
                self.head.changed().await.map_err(|_| Error::Closed)?;
                continue;
            }
            // The head before the snapshot, which then holds everything below it.
            if let Some(oldest) = self.read_ahead(head)? {
                return Ok(Tailed::Resync { oldest: cursor(oldest) });
            }
        }
    }
}
