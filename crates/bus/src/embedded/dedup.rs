//! The dedup window in memory: eight bytes per key.
//!
//! Every key of the window is in the journal (`DEDUP_KEYS`: seq → 16-byte
//! key hash and append time). The index holds, per key, four bytes of its
//! hash (the tag) and the low 32 bits of its journal seq. A lookup finds the
//! entries with the key's tag and confirms each against its journal row,
//! comparing all 16 bytes: a tag shared by two keys costs one read, never a
//! wrong answer, and an entry whose row is gone is no longer a key.
//!
//! The newest keys are in a hash table; every [`RUN`] of them is sorted and
//! merged into one sorted array, searched by bisection. A 10-million-key
//! window takes 80 MB this way: a hash table of all of them took 150 MB (its
//! buckets double, and each has a control byte), a map of full hashes to
//! seqs 420 MB. Expired keys leave the hash table at once and the array at
//! the next compaction, when they are a quarter of it.

use hashbrown::HashTable;
use redb::{ReadableTable, ReadableTableMetadata};

use super::tables::DEDUP_KEYS;
use super::writer::KeyHash;

/// Keys gathered in the hash table before they are merged into the array:
/// a merge rewrites the array (about 40 ms at 10 million keys), so this
/// many publishes share one; the table holds at most 4.7 MB.
const RUN: usize = 1 << 18;

/// The 16-bit prefixes of a tag that `DedupIndex::starts` indexes.
const PREFIXES: usize = 1 << 16;

/// One key of the window: a tag of its hash, the low half of its seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    tag: u32,
    seq_lo: u32,
}

impl Entry {
    /// Sorted by tag first, so a tag's entries are adjacent.
    fn packed(self) -> u64 {
        u64::from(self.tag) << 32 | u64::from(self.seq_lo)
    }
}

/// The dedup window: which key hashes were published, and under which seq.
#[derive(Debug)]
pub(crate) struct DedupIndex {
    /// Older keys, as [`Entry::packed`], sorted.
    sorted: Vec<u64>,
    /// Where the entries whose tag begins with each 16-bit prefix start in
    /// `sorted` (and, last, its length): a lookup bisects one prefix's
    /// entries (about 150 at 10 million keys), two or three cache misses
    /// instead of a dozen.
    starts: Vec<u32>,
    /// Entries of `sorted` whose keys have expired.
    stale: usize,
    /// The newest keys.
    recent: HashTable<Entry>,
    /// Keys the hash table gathers before a merge.
    run: usize,
}

impl Default for DedupIndex {
    fn default() -> Self {
        Self::with_run(RUN)
    }
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
    fn with_run(run: usize) -> Self {
        Self { sorted: Vec::new(), starts: Vec::new(), stale: 0, recent: HashTable::new(), run }
    }

    /// Rebuilds the index from the journal.
    pub(crate) fn load(txn: &redb::WriteTransaction) -> Result<Self, redb::Error> {
        let journal = txn.open_table(DEDUP_KEYS)?;
        let mut sorted = Vec::with_capacity(journal.len()? as usize);
        for row in journal.iter()? {
            let (seq, value) = row?;
            if let Some(hash) = value.value().get(..16) {
                sorted
                    .push(Entry { tag: tag(&hash.try_into().expect("16 bytes")), seq_lo: seq.value() as u32 }.packed());
            }
        }
        sorted.sort_unstable();
        let mut index = Self { sorted, ..Self::default() };
        index.index_prefixes();
        Ok(index)
    }

    /// Rebuilds `starts` from `sorted`, in one pass over it.
    fn index_prefixes(&mut self) {
        self.starts.clear();
        if self.sorted.is_empty() {
            return;
        }
        self.starts.resize(PREFIXES + 1, 0);
        for &packed in &self.sorted {
            self.starts[(packed >> 48) as usize + 1] += 1;
        }
        for prefix in 1..=PREFIXES {
            self.starts[prefix] += self.starts[prefix - 1];
        }
    }

    /// The seq halves of the array's entries with `tag`.
    fn sorted_with(&self, tag: u32) -> impl Iterator<Item = u32> + '_ {
        let prefix = (tag >> 16) as usize;
        let within = match self.starts.get(prefix..prefix + 2) {
            Some(&[from, to]) => &self.sorted[from as usize..to as usize],
            _ => &[][..],
        };
        let start = within.partition_point(|&packed| packed < u64::from(tag) << 32);
        within[start..].iter().take_while(move |&&packed| (packed >> 32) as u32 == tag).map(|&packed| packed as u32)
    }

    /// Whether `hash` is in the window; `journal` is read to confirm a tag.
    pub(crate) fn contains(
        &self,
        hash: &KeyHash,
        next_seq: u64,
        journal: &impl ReadableTable<u64, &'static [u8]>,
    ) -> bool {
        let tag = tag(hash);
        let confirmed = |seq_lo| full_seq(seq_lo, next_seq).is_some_and(|seq| journal_holds(journal, seq, hash));
        self.recent.iter_hash(spread(tag)).any(|entry| entry.tag == tag && confirmed(entry.seq_lo))
            || self.sorted_with(tag).any(confirmed)
    }

    pub(crate) fn insert(&mut self, hash: &KeyHash, seq: u64) {
        let entry = Entry { tag: tag(hash), seq_lo: seq as u32 };
        self.recent.insert_unique(spread(entry.tag), entry, |e| spread(e.tag));
        if self.recent.len() >= self.run {
            self.merge();
        }
    }

    /// Moves the hash table's keys into the array, merging from its end so
    /// the array is not copied.
    fn merge(&mut self) {
        let mut run: Vec<u64> = self.recent.drain().map(Entry::packed).collect();
        run.sort_unstable();
        // Each prefix's start moves up by the run's entries below it.
        if !self.starts.is_empty() {
            let mut below = 0;
            for (prefix, start) in self.starts.iter_mut().enumerate() {
                while run.get(below).is_some_and(|&packed| ((packed >> 48) as usize) < prefix) {
                    below += 1;
                }
                *start += below as u32;
            }
        }
        let rebuild = self.starts.is_empty();
        let mut i = self.sorted.len();
        self.sorted.resize(i + run.len(), 0);
        for at in (0..self.sorted.len()).rev() {
            let Some(&newest) = run.last() else { break };
            if i > 0 && self.sorted[i - 1] > newest {
                self.sorted[at] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[at] = newest;
                run.pop();
            }
        }
        if rebuild {
            self.index_prefixes();
        }
        debug_assert_eq!(self.starts.last().map(|&n| n as usize), Some(self.sorted.len()));
    }

    /// Forgets the key published under `seq`; whether it was there. A key
    /// in the array stays there, unconfirmable, until [`Self::compact`].
    pub(crate) fn remove(&mut self, hash: &KeyHash, seq: u64) -> bool {
        let wanted = Entry { tag: tag(hash), seq_lo: seq as u32 };
        if let Ok(entry) = self.recent.find_entry(spread(wanted.tag), |e| *e == wanted) {
            entry.remove();
            return true;
        }
        let held = self.sorted_with(wanted.tag).any(|seq_lo| seq_lo == wanted.seq_lo);
        if held {
            self.stale += 1;
        }
        held
    }

    /// Drops the array's entries below `first`, the journal's oldest seq,
    /// once expired keys are a quarter of it.
    pub(crate) fn compact(&mut self, first: u64, next_seq: u64) {
        if self.stale == 0 || self.stale * 4 < self.sorted.len() {
            return;
        }
        self.sorted.retain(|&packed| full_seq(packed as u32, next_seq).is_some_and(|seq| seq >= first));
        self.sorted.shrink_to_fit();
        self.stale = 0;
        self.index_prefixes();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.sorted.len() - self.stale + self.recent.len()
    }

    /// Bytes the index holds.
    #[cfg(test)]
    pub(crate) fn allocation_size(&self) -> usize {
        self.sorted.capacity() * 8 + self.starts.capacity() * 4 + self.recent.allocation_size()
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

    /// Keys merged into the sorted array are found, each confirmed by its
    /// own journal row; expired ones are not, and leave the array when a
    /// quarter of it has expired.
    #[test]
    fn keys_merged_into_the_array_are_found_forgotten_and_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("d.redb")).unwrap();
        // Seven tags, spread over the prefixes, five or six keys each.
        let keys: Vec<(u64, KeyHash)> =
            (0..40u64).map(|seq| (seq, hash(((seq % 7) as u32).wrapping_mul(0x2545_F491), seq as u8))).collect();
        journal(&db, &keys);
        let mut index = DedupIndex::with_run(4);
        for (seq, key) in &keys {
            index.insert(key, *seq);
        }
        assert_eq!((index.sorted.len(), index.recent.len()), (40, 0));
        assert!(index.sorted.is_sorted());
        let moved = index.starts.clone();
        index.index_prefixes();
        assert_eq!(index.starts, moved, "the starts moved by each merge equal those counted afresh");
        {
            let read = db.begin_read().unwrap();
            let rows = read.open_table(DEDUP_KEYS).unwrap();
            assert!(keys.iter().all(|(_, key)| index.contains(key, 40, &rows)));
            assert!(
                !index.contains(&hash(3u32.wrapping_mul(0x2545_F491), 200), 40, &rows),
                "a tag in the array, another key"
            );
            assert!(!index.contains(&hash(9, 1), 40, &rows));
        }
        // Expire the first twelve: gone from the journal, stale in the array.
        let txn = db.begin_write().unwrap();
        {
            let mut rows = txn.open_table(DEDUP_KEYS).unwrap();
            for (seq, key) in &keys[..12] {
                rows.remove(*seq).unwrap();
                assert!(index.remove(key, *seq));
            }
        }
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        let rows = read.open_table(DEDUP_KEYS).unwrap();
        assert!(keys[..12].iter().all(|(_, key)| !index.contains(key, 40, &rows)));
        assert!(keys[12..].iter().all(|(_, key)| index.contains(key, 40, &rows)));
        assert_eq!(index.sorted.len(), 40, "kept until a quarter is stale");
        index.compact(12, 40);
        assert_eq!((index.sorted.len(), index.stale, index.len()), (28, 0, 28));
        assert!(keys[12..].iter().all(|(_, key)| index.contains(key, 40, &rows)));
    }

    /// A million keys take under fourteen bytes each allocated, where a
    /// hash table of them took about eighteen: eight in the array, the rest
    /// its doubling's room (never written, so not resident) and the table's
    /// room for a run.
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
        assert!(per_key < 14.0, "{per_key} bytes per key");
    }
}
