//! How many events of each type the log holds, checkpointed every
//! [`EVERY`] seqs, so a group's backlog is counted without reading it.
//!
//! A row of `TYPE_COUNTS` at seq `k` (a multiple of [`EVERY`]) holds, per
//! event type, how many events with a seq below `k` the writer appended
//! since the table was started. The events of the types a group matches
//! between its position `p` and the head are then: those read from `p` to
//! the first row at or after it (under [`EVERY`] records), the difference
//! between that row and the last one, and those read after the last row
//! (under [`EVERY`] again). Counting a ten-million-event backlog this way
//! reads at most two short ranges and the rows; reading the backlog took
//! nine seconds of a core each `relay.status_interval` and halved the
//! drain rate while it ran.
//!
//! Row layout: `[type_len: u16 BE][type][count: u64 BE]…`.

use std::collections::BTreeMap;

use redb::{ReadableTable, ReadableTableMetadata, StorageError, WriteTransaction};

use super::record;
use super::tables::{LOG, TYPE_COUNTS};

/// Seqs between two rows: what a count reads at most at either end.
#[cfg(not(test))]
pub(crate) const EVERY: u64 = 4096;
#[cfg(test)]
pub(crate) const EVERY: u64 = 8;

/// Per type, the events appended below the next row's seq.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TypeCounts {
    counts: BTreeMap<String, u64>,
}

impl TypeCounts {
    /// The writer's counts at `next_seq`: the last row plus the events after
    /// it. A log written before the table existed gets its rows here, once.
    pub(crate) fn load(txn: &WriteTransaction, next_seq: u64) -> Result<Self, redb::Error> {
        let log = txn.open_table(LOG)?;
        let mut rows = txn.open_table(TYPE_COUNTS)?;
        let (from, mut counts) = match rows.last()? {
            Some((k, row)) => (k.value(), decode(row.value())),
            None => (log.first()?.map_or(next_seq, |(k, _)| k.value()), Self::default()),
        };
        let building = rows.is_empty()? && !log.is_empty()?;
        if building {
            tracing::info!(events = log.len()?, "embedded bus: counting the log's event types once");
        }
        for entry in log.range(from..)? {
            let (seq, bytes) = entry?;
            if let Some(rec) = record::decode(bytes.value()) {
                if building {
                    counts.add(rec.ty, seq.value(), &mut rows)?;
                } else {
                    counts.bump(rec.ty);
                }
            }
        }
        Ok(counts)
    }

    /// Counts the event appended at `seq`, and writes a row when the next
    /// seq is a multiple of [`EVERY`].
    pub(crate) fn add(
        &mut self,
        ty: &str,
        seq: u64,
        rows: &mut redb::Table<u64, &'static [u8]>,
    ) -> Result<(), StorageError> {
        self.bump(ty);
        if (seq + 1).is_multiple_of(EVERY) {
            rows.insert(seq + 1, encode(self).as_slice())?;
        }
        Ok(())
    }

    fn bump(&mut self, ty: &str) {
        match self.counts.get_mut(ty) {
            Some(n) => *n += 1,
            None => {
                self.counts.insert(ty.to_owned(), 1);
            }
        }
    }

    /// The events of matching types counted here and not in `earlier`.
    fn matching_since(&self, earlier: &Self, is_match: &impl Fn(&str) -> bool) -> u64 {
        self.counts
            .iter()
            .filter(|(ty, _)| is_match(ty))
            .map(|(ty, n)| n.saturating_sub(earlier.counts.get(ty.as_str()).copied().unwrap_or(0)))
            .sum()
    }
}

fn encode(counts: &TypeCounts) -> Vec<u8> {
    let mut out = Vec::new();
    for (ty, n) in &counts.counts {
        let ty = record::truncate(ty);
        out.extend_from_slice(&(ty.len() as u16).to_be_bytes());
        out.extend_from_slice(ty.as_bytes());
        out.extend_from_slice(&n.to_be_bytes());
    }
    out
}

fn decode(mut bytes: &[u8]) -> TypeCounts {
    let mut counts = TypeCounts::default();
    while let Some((ty, rest)) = record::take_str(bytes) {
        let Some(n) = rest.get(..8) else { break };
        counts.counts.insert(ty.to_owned(), u64::from_be_bytes(n.try_into().expect("8 bytes")));
        bytes = &rest[8..];
    }
    counts
}

/// The events of matching types from `from` to the head, and the append
/// time of the first of them.
pub(crate) fn matching_from(
    log: &impl ReadableTable<u64, &'static [u8]>,
    rows: &impl ReadableTable<u64, &'static [u8]>,
    from: u64,
    is_match: impl Fn(&str) -> bool,
) -> Result<(u64, Option<u64>), StorageError> {
    let mut count = 0;
    let mut first_ms = None;
    let read = |range: std::ops::Range<u64>, count: &mut u64, first_ms: &mut Option<u64>| {
        for entry in log.range(range)? {
            let (_, bytes) = entry?;
            if let Some(rec) = record::decode(bytes.value()).filter(|r| is_match(r.ty)) {
                *count += 1;
                first_ms.get_or_insert(rec.appended_ms);
            }
        }
        Ok::<_, StorageError>(())
    };
    let Some((at, at_counts)) = rows.range(from..)?.next().transpose()?.map(|(k, v)| (k.value(), decode(v.value())))
    else {
        read(from..u64::MAX, &mut count, &mut first_ms)?;
        return Ok((count, first_ms));
    };
    read(from..at, &mut count, &mut first_ms)?;
    let (last, last_counts) =
        rows.last()?.map(|(k, v)| (k.value(), decode(v.value()))).expect("a row at or after from");
    count += last_counts.matching_since(&at_counts, &is_match);
    if first_ms.is_none() && last > at {
        // The first span between two rows where a matching type's count
        // rose holds the first matching event.
        let (mut prev, mut prev_counts) = (at, at_counts);
        for row in rows.range(at + 1..=last)? {
            let (k, v) = row?;
            let counts = decode(v.value());
            if counts.matching_since(&prev_counts, &is_match) > 0 {
                let mut ignored = 0;
                read(prev..k.value(), &mut ignored, &mut first_ms)?;
                break;
            }
            (prev, prev_counts) = (k.value(), counts);
        }
    }
    read(last..u64::MAX, &mut count, &mut first_ms)?;
    Ok((count, first_ms))
}

/// Removes the rows below `first`, the oldest seq retention kept.
pub(crate) fn forget_below(txn: &WriteTransaction, first: u64) -> Result<(), redb::Error> {
    let mut rows = txn.open_table(TYPE_COUNTS)?;
    rows.retain_in(..first, |_, _| false)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::{EmbeddedBus, EmbeddedOptions, FILE_NAME};
    use crate::{Bus, Publisher};
    use hookbridge_event::EventPattern;
    use redb::ReadableDatabase;

    const TYPES: [&str; 3] = ["email.sent", "sms.sent", "email.bounced"];

    /// The type and append time of each event in the log, in seq order.
    fn types(bus: &EmbeddedBus) -> Vec<(String, u64)> {
        let txn = bus.shared.db.begin_read().unwrap();
        let log = txn.open_table(LOG).unwrap();
        log.iter()
            .unwrap()
            .map(|e| {
                let (_, bytes) = e.unwrap();
                let rec = record::decode(bytes.value()).unwrap();
                (rec.ty.to_owned(), rec.appended_ms)
            })
            .collect()
    }

    /// The group's backlog for `email.*` from every position, against a
    /// count of the log itself; `first` is the seq of the log's first event.
    async fn assert_counts(bus: &EmbeddedBus, first: u64) {
        let patterns = [EventPattern::parse("email.*").unwrap()];
        let types = types(bus);
        let end = first + types.len() as u64;
        for position in 0..=end + 1 {
            bus.shared.reset("counted", position).await.unwrap();
            let mut left =
                types.iter().skip(position.saturating_sub(first) as usize).filter(|t| t.0.starts_with("email."));
            let oldest = left.clone().next().map(|t| crate::embedded::to_time(t.1));
            let status = bus.group_status("counted", &patterns).await.unwrap();
            assert_eq!(status.backlog, left.by_ref().count() as u64, "from {position}");
            assert_eq!(status.oldest_undelivered, oldest, "from {position}");
        }
    }

    /// Backlogs counted from the rows equal a count of the log, from every
    /// position, across a reopen, for a log written before the rows existed,
    /// and after retention removed the oldest events.
    #[tokio::test]
    async fn backlogs_from_the_rows_equal_a_count_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let open = || EmbeddedBus::open(EmbeddedOptions::new(dir.path())).unwrap();
        let bus = open();
        // Long runs of one type, so some spans between rows hold no match.
        for i in 0..70 {
            let ty = if (20..45).contains(&i) { "sms.sent" } else { TYPES[i % 3] };
            bus.publish(&crate::conformance::event(ty)).await.unwrap();
            // Distinct append times, so the oldest is told apart.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        assert_counts(&bus, 0).await;
        let rows = bus.shared.db.begin_read().unwrap().open_table(TYPE_COUNTS).unwrap().len().unwrap();
        assert_eq!(rows, 70 / EVERY);
        drop(bus);

        let bus = open();
        for ty in TYPES {
            bus.publish(&crate::conformance::event(ty)).await.unwrap();
        }
        assert_counts(&bus, 0).await;
        drop(bus);

        // A log from before the rows: they are built when it is opened.
        let db = redb::Database::open(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(TYPE_COUNTS).unwrap();
        txn.commit().unwrap();
        drop(db);
        let bus = open();
        assert_counts(&bus, 0).await;
        drop(bus);

        // Retention removes the oldest events and the rows below them.
        let mut options = EmbeddedOptions::new(dir.path());
        options.retention.max_bytes = Some(1);
        let bus = EmbeddedBus::open(options).unwrap();
        let total = types(&bus).len() as u64;
        bus.maintain().await.unwrap();
        assert!(types(&bus).is_empty());
        drop(bus);
        let bus = open();
        for i in 0..30 {
            bus.publish(&crate::conformance::event(TYPES[i % 3])).await.unwrap();
        }
        assert_counts(&bus, total).await;
        let txn = bus.shared.db.begin_read().unwrap();
        let rows = txn.open_table(TYPE_COUNTS).unwrap();
        let lowest = rows.first().unwrap().map(|(k, _)| k.value());
        assert!(lowest.is_some_and(|k| k >= total), "rows below the first event were kept: {lowest:?}");
    }

    #[test]
    fn rows_round_trip() {
        let mut counts = TypeCounts::default();
        counts.bump("email.delivered");
        counts.bump("email.delivered");
        counts.bump("sms.sent");
        assert_eq!(decode(&encode(&counts)), counts);
        assert_eq!(decode(&[0, 9, b'x']), TypeCounts::default());
    }

    #[test]
    fn matching_counts_only_the_matching_types_and_what_is_new() {
        let mut later = TypeCounts::default();
        let mut earlier = TypeCounts::default();
        earlier.bump("a");
        later.bump("a");
        later.bump("a");
        later.bump("b");
        assert_eq!(later.matching_since(&earlier, &|ty| ty == "a"), 1);
        assert_eq!(later.matching_since(&earlier, &|_| true), 2);
    }
}
