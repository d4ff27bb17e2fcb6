//! The newest records of the log, read from the database once and shared
//! by every group and tail of this process.
//!
//! Groups and tails that keep up with the writer all want the same records
//! at about the same time: the first to ask reads them, the others take
//! them from here. The window holds every log record with a seq in
//! `[from, to)`, so a read that starts inside it or at its end never passes
//! over a record; one that starts below it (a group far behind, a replay)
//! reads the database and leaves the window alone. Records are immutable
//! once written and seqs are never reused, so a record in the window is the
//! record in the log.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase};

use super::storage;
use super::tables::LOG;
use crate::Result;

/// Most records the window keeps.
#[cfg(not(test))]
const MAX_RECORDS: usize = 8192;
#[cfg(test)]
const MAX_RECORDS: usize = 512;
/// Most bytes of records the window keeps.
const MAX_BYTES: usize = 16 << 20;

/// One log record: its seq and its stored bytes.
pub(crate) type Record = (u64, Arc<[u8]>);

#[derive(Debug)]
pub(crate) struct HotRecords {
    db: Arc<Database>,
    window: Mutex<Window>,
    /// Records read from the database, for tests and the docs' claim.
    read_from_log: AtomicU64,
}

#[derive(Debug, Default)]
struct Window {
    /// Every log record with a seq in `[from, to)`, oldest first.
    records: VecDeque<Record>,
    from: u64,
    to: u64,
    bytes: usize,
}

impl Window {
    fn push(&mut self, record: Record) {
        self.bytes += record.1.len();
        self.records.push_back(record);
        while self.records.len() > MAX_RECORDS || (self.bytes > MAX_BYTES && self.records.len() > 1) {
            let (seq, bytes) = self.records.pop_front().expect("more than one record");
            self.bytes -= bytes.len();
            self.from = seq + 1;
        }
    }

    /// Starts again, empty, at `at`.
    fn restart(&mut self, at: u64) {
        self.records.clear();
        self.bytes = 0;
        (self.from, self.to) = (at, at);
    }
}

impl HotRecords {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Self { db, window: Mutex::default(), read_from_log: AtomicU64::new(0) }
    }

    /// Appends to `out` up to `max` records with seqs in `[from, head)`,
    /// oldest first; the seq to read from next time.
    ///
    /// `head` must have been read before this call: the writer moves it
    /// only after its commit, so a snapshot taken here holds every record
    /// below it.
    pub(crate) fn read(&self, from: u64, head: u64, max: usize, out: &mut VecDeque<Record>) -> Result<u64> {
        if from >= head || max == 0 {
            return Ok(from);
        }
        let mut window = self.window.lock().expect("hot records lock");
        if from < window.from {
            // Below the window: read, and leave the window to the readers
            // near the head.
            drop(window);
            return self.read_log(from, head, max, out);
        }
        if from > window.to {
            // Past the window (the writer moved on while nobody read): the
            // window starts again here.
            window.restart(from);
        }
        let start = out.len();
        let skip = window.records.partition_point(|(seq, _)| *seq < from);
        out.extend(window.records.iter().skip(skip).take_while(|(seq, _)| *seq < head).take(max).cloned());
        let taken = out.len() - start;
        if taken == max {
            return Ok(out.back().map_or(head, |(seq, _)| seq + 1));
        }
        if window.to >= head {
            return Ok(head);
        }
        // The rest comes from the database, from the window's end on, and
        // joins the window once the whole read has succeeded (a failed read
        // leaves the window as it was, so nothing in it is there twice).
        let (at, read_from) = (window.to, out.len());
        let next = self.read_log(at, head, max - taken, out)?;
        out.range(read_from..).for_each(|record| window.push(record.clone()));
        window.to = next;
        Ok(next)
    }

    /// Reads from the log into `out`; on an error `out` is left as it was,
    /// so the records are read again next time, not handed out twice.
    fn read_log(&self, from: u64, head: u64, max: usize, out: &mut VecDeque<Record>) -> Result<u64> {
        let before = out.len();
        let read = self.read_log_into(from, head, max, out);
        if read.is_err() {
            out.truncate(before);
        }
        let read = read?;
        self.read_from_log.fetch_add(read as u64, Ordering::Relaxed);
        Ok(if read < max { head } else { out.back().map_or(head, |(seq, _)| seq + 1) })
    }

    fn read_log_into(&self, from: u64, head: u64, max: usize, out: &mut VecDeque<Record>) -> Result<usize> {
        let txn = self.db.begin_read().map_err(storage)?;
        #[cfg(test)]
        super::consumer::tests::AFTER_SNAPSHOT.with(|hook| hook.borrow_mut().take().map(|f| f()));
        let log = txn.open_table(LOG).map_err(storage)?;
        let mut read = 0;
        for entry in log.range(from..head).map_err(storage)?.take(max) {
            let (seq, bytes) = entry.map_err(storage)?;
            out.push_back((seq.value(), Arc::from(bytes.value())));
            read += 1;
        }
        Ok(read)
    }

    /// Drops the records below `first`, which retention removed from the
    /// log: a reader below it then reads the log, as without the window.
    pub(crate) fn forget_below(&self, first: u64) {
        let mut window = self.window.lock().expect("hot records lock");
        while window.records.front().is_some_and(|(seq, _)| *seq < first) {
            let (_, bytes) = window.records.pop_front().expect("a front record");
            window.bytes -= bytes.len();
        }
        window.from = window.from.max(first);
        window.to = window.to.max(window.from);
    }

    /// Records read from the database so far.
    #[cfg(test)]
    pub(crate) fn read_from_log(&self) -> u64 {
        self.read_from_log.load(Ordering::Relaxed)
    }
}
