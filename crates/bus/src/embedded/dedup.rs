//! The dedup window in memory: eight bytes per key (nine to eighteen with
//! the hash table's control bytes and free slots).
//!
//! Every key of the window is in the journal (`DEDUP_KEYS`: seq → 16-byte
//! key hash and append time). The index holds, per key, four bytes of its
//! hash (the tag) and the low 32 bits of its journal seq. A lookup finds the
//! entries with the key's tag and confirms each against its journal row,
//! comparing all 16 bytes: a tag shared by two keys costs one read, never a
//! wrong answer. A 10-million-key window takes 150 MB here, where a map of
//! full hashes to seqs took 420 MB.

use hashbrown::HashTable;
use redb::{ReadableTable, ReadableTableMetadata};

use super::tables::DEDUP_KEYS;
use super::writer::KeyHash;

/// One key of the window: a tag of its hash, the low half of its seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    tag: u32,
    seq_lo: u32,
}

/// The dedup window: which key hashes were published, and under which seq.
#[derive(Debug, Default)]
pub(crate) struct DedupIndex {
    table: HashTable<Entry>,
}

fn tag(hash: &KeyHash) -> u32 {
    u32::from_le_bytes(hash[..4].try_into().expect("4 of 16 bytes"))
}

/// The table's hash of a tag: the tag is already uniform (SHA-256); the
/// multiplication spreads it over the 64 bits the table looks at.
fn spread(tag: u32) -> u64 {
    u64::from(tag).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The newest seq below `next_seq` whose low 32 bits are `seq_lo`. A window
/// spans far fewer than 2^32 seqs, so that is the only candidate.
fn full_seq(seq_lo: u32, next_seq: u64) -> Option<u64> {
    let newest = next_seq.checked_sub(1)?;
    newest.checked_sub(u64::from((newest as u32).wrapping_sub(seq_lo)))
}

/// Whether the journal row at `seq` holds `hash`.
fn journal_holds(journal: &impl ReadableTable<u64, &'static [u8]>, seq: u64, hash: &KeyHash) -> bool {
    matches!(journal.get(seq), Ok(Some(row)) if row.value().get(..16) == Some(hash.as_slice()))
}

impl DedupIndex {
    /// Rebuilds the index from the journal.
    pub(crate) fn load(txn: &redb::WriteTransaction) -> Result<Self, redb::Error> {
        let journal = txn.open_table(DEDUP_KEYS)?;
        let mut index = Self { table: HashTable::with_capacity(journal.len()? as usize) };
        for row in journal.iter()? {
            let (seq, value) = row?;
            if let Some(hash) = value.value().get(..16) {
                index.insert(&hash.try_into().expect("16 bytes"), seq.value());
            }
        }
        Ok(index)
    }

    /// Whether `hash` is in the window; `journal` is read to confirm a tag.
    pub(crate) fn contains(
        &self,
        hash: &KeyHash,
        next_seq: u64,
        journal: &impl ReadableTable<u64, &'static [u8]>,
    ) -> bool {
        let tag = tag(hash);
        self.table.iter_hash(spread(tag)).any(|entry| {
            entry.tag == tag && full_seq(entry.seq_lo, next_seq).is_some_and(|seq| journal_holds(journal, seq, hash))
        })
    }

    pub(crate) fn insert(&mut self, hash: &KeyHash, seq: u64) {
        let entry = Entry { tag: tag(hash), seq_lo: seq as u32 };
        self.table.insert_unique(spread(entry.tag), entry, |e| spread(e.tag));
    }

    /// Forgets the key published under `seq`; whether it was there.
    pub(crate) fn remove(&mut self, hash: &KeyHash, seq: u64) -> bool {
        let wanted = Entry { tag: tag(hash), seq_lo: seq as u32 };
        match self.table.find_entry(spread(wanted.tag), |e| *e == wanted) {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Bytes the index holds.
    #[cfg(test)]
    pub(crate) fn allocation_size(&self) -> usize {
        self.table.allocation_size()
    }
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase};

    use super::*;

    fn hash(first: u32, rest: u8) -> KeyHash {
        let mut hash = [rest; 16];
        hash[..4].copy_from_slice(&first.to_le_bytes());
        hash
    }

    fn journal(db: &Database, rows: &[(u64, KeyHash)]) {
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(DEDUP_KEYS).unwrap();
            for (seq, hash) in rows {
                let mut row = [0u8; 24];
                row[..16].copy_from_slice(hash);
                table.insert(*seq, row.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    /// Two keys with the same tag are both known, each under its own seq,
    /// and forgetting one keeps the other.
    #[test]
    fn keys_sharing_a_tag_are_told_apart_by_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("d.redb")).unwrap();
        let (a, b, c) = (hash(7, 1), hash(7, 2), hash(7, 3));
        journal(&db, &[(10, a), (11, b)]);
        let mut index = DedupIndex::default();
        index.insert(&a, 10);
        index.insert(&b, 11);
        let read = db.begin_read().unwrap();
        let rows = read.open_table(DEDUP_KEYS).unwrap();
        assert!(index.contains(&a, 12, &rows));
        assert!(index.contains(&b, 12, &rows));
        assert!(!index.contains(&c, 12, &rows), "a third key with the same tag is not a duplicate");
        assert!(!index.contains(&hash(8, 1), 12, &rows));
        assert!(index.remove(&a, 10));
        assert!(!index.remove(&a, 10));
        assert!(!index.contains(&a, 12, &rows));
        assert!(index.contains(&b, 12, &rows));
        assert_eq!(index.len(), 1);
    }

    /// Seqs past 2^32 are found by their low half.
    #[test]
    fn seqs_above_four_billion_are_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("d.redb")).unwrap();
        let seq = (5u64 << 32) + 3;
        let key = hash(1, 9);
        journal(&db, &[(seq, key)]);
        let mut index = DedupIndex::default();
        index.insert(&key, seq);
        let read = db.begin_read().unwrap();
        let rows = read.open_table(DEDUP_KEYS).unwrap();
        assert!(index.contains(&key, seq + 1, &rows));
        assert!(index.contains(&key, seq + 1_000_000, &rows));
        assert_eq!(full_seq(3, seq + 1), Some(seq));
        assert_eq!(full_seq(3, 3), None);
        assert_eq!(full_seq(0, 0), None);
    }

    /// A million keys take under 10 bytes each.
    #[test]
    fn an_index_of_a_million_keys_is_compact() {
        let mut index = DedupIndex::default();
        for seq in 0..1_000_000u64 {
            let digest: [u8; 32] =
                sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), seq.to_le_bytes())).into();
            index.insert(&digest[..16].try_into().unwrap(), seq);
        }
        assert_eq!(index.len(), 1_000_000);
        let per_key = index.allocation_size() as f64 / 1e6;
        assert!(per_key < 20.0, "{per_key} bytes per key");
    }
}
