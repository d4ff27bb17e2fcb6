//! The redb tables of the embedded log.

use redb::{ReadableTable, TableDefinition};

/// seq → record (see `record`). Seqs are assigned in append order.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// Append time in unix ms → first seq appended in that millisecond: replay by time.
pub(crate) const TIME_INDEX: TableDefinition<u64, u64> = TableDefinition::new("time_index");
/// Dedup key (source and event id) → seq of the event that holds it.
pub(crate) const DEDUP: TableDefinition<&str, u64> = TableDefinition::new("dedup");
/// Group → committed position: every seq below it is settled for the group.
pub(crate) const GROUPS: TableDefinition<&str, u64> = TableDefinition::new("groups");
/// (group, due unix ms, seq) → attempt and record of a scheduled retry.
pub(crate) const DELAYED: TableDefinition<(&str, u64, u64), &[u8]> = TableDefinition::new("delayed");
/// Counters: `next_seq`, `total_bytes`, `dedup_floor`.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(crate) fn meta_get(table: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64, redb::StorageError> {
    Ok(table.get(key)?.map_or(0, |v| v.value()))
}
