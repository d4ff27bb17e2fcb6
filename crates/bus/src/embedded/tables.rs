//! The redb tables of the embedded log.

use redb::{ReadableTable, TableDefinition};

/// seq → record (see `record`). Seqs are assigned in append order.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// Append time in unix ms → first seq appended in that millisecond: replay by time.
pub(crate) const TIME_INDEX: TableDefinition<u64, u64> = TableDefinition::new("time_index");
/// seq → 16-byte hash of the dedup key (source and event id) and the
/// append time in ms: an append-only journal of the dedup window. The
/// index itself is a map in the writer's memory, rebuilt from this table on
/// open; appending here dirties only the last page, whereas a B-tree keyed
/// by id would dirty one page per event.
pub(crate) const DEDUP_KEYS: TableDefinition<u64, &[u8]> = TableDefinition::new("dedup_keys");
/// Group → committed position: every seq below it is settled for the group.
pub(crate) const GROUPS: TableDefinition<&str, u64> = TableDefinition::new("groups");
/// (group, due unix ms, seq) → attempt and record of a scheduled retry.
pub(crate) const DELAYED: TableDefinition<(&str, u64, u64), &[u8]> = TableDefinition::new("delayed");
/// (group, seq) → failure, time and record of a dead letter.
pub(crate) const DEAD_LETTERS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("dead_letters");
/// Small shared values (`Bus::put_state`).
pub(crate) const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// (attempt time in unix ms, attempt number) → the attempt's JSON: the
/// delivery record (`AttemptRecord`), expired by `attempts_max_age`.
pub(crate) const ATTEMPTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("attempts");
/// (subscriber, time ms, number) → (): the record by subscriber.
pub(crate) const ATTEMPTS_BY_SUBSCRIBER: TableDefinition<(&str, u64, u64), ()> =
    TableDefinition::new("attempts_by_subscriber");
/// (event id, time ms, number) → (): the record by event.
pub(crate) const ATTEMPTS_BY_EVENT: TableDefinition<(&str, u64, u64), ()> = TableDefinition::new("attempts_by_event");
/// Multiple of `counts::EVERY` → per event type, the events appended
/// below it (`counts`): a group's backlog without reading it.
pub(crate) const TYPE_COUNTS: TableDefinition<u64, &[u8]> = TableDefinition::new("type_counts");
/// Counters: `next_seq`, `total_bytes`, `next_attempt`.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(crate) fn meta_get(table: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64, redb::StorageError> {
    Ok(table.get(key)?.map_or(0, |v| v.value()))
}
