//! What a group may commit: per partition, up to the lowest offset still
//! in flight, and committing it in rounds.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The settlement state of one assigned partition.
#[derive(Debug)]
pub(super) struct Track {
    /// Changes on every assignment: settlements of an older one are ignored.
    pub(super) epoch: u64,
    pub(super) in_flight: BTreeSet<i64>,
    /// One past the highest offset handed out.
    pub(super) next: Option<i64>,
    pub(super) committed: Option<i64>,
}

impl Track {
    /// The offset the group can commit: nothing before it is unsettled.
    pub(super) fn committable(&self) -> Option<i64> {
        self.in_flight.first().copied().or(self.next)
    }

    pub(super) fn needs_commit(&self) -> bool {
        self.committable().is_some_and(|c| self.committed.is_none_or(|done| c > done))
    }
}

#[derive(Debug, Default)]
pub(super) struct Tracks {
    pub(super) partitions: HashMap<Partition, Track>,
    pub(super) epoch: u64,
    /// The group's current consumer: one more each time a consumer that
    /// failed fatally is replaced.
    pub(super) member: u64,
}

impl Tracks {
    pub(super) fn assign(&mut self, partition: Partition) {
        self.epoch += 1;
        let epoch = self.epoch;
        self.partitions.insert(partition, Track { epoch, in_flight: BTreeSet::new(), next: None, committed: None });
    }

    /// The epoch of an assigned partition: a record read now belongs to it.
    pub(super) fn epoch_of(&self, topic: &str, partition: i32) -> Option<u64> {
        // Keyed by an owned pair; the look-up allocates only the topic.
        self.partitions.get(&(topic.to_owned(), partition)).map(|t| t.epoch)
    }

    /// Registers a record handed out, read while its partition was at
    /// `epoch`; false (the record is dropped untracked, and comes again to
    /// whoever reads the partition next) if the partition was revoked or
    /// assigned again since: its position may be behind the record, and
    /// settling the record would commit past events not yet read.
    pub(super) fn seen(&mut self, partition: &Partition, epoch: u64, offset: i64) -> bool {
        let Some(track) = self.partitions.get_mut(partition).filter(|t| t.epoch == epoch) else {
            return false;
        };
        track.in_flight.insert(offset);
        track.next = Some(track.next.map_or(offset + 1, |n| n.max(offset + 1)));
        true
    }

    /// Forgets every partition for a new consumer of the group: what the
    /// old one handed out settles without committing, and comes again.
    pub(super) fn renew(&mut self) -> u64 {
        self.partitions.clear();
        self.member += 1;
        self.member
    }

    pub(super) fn is_current(&self, partition: &Partition, epoch: u64) -> bool {
        self.partitions.get(partition).is_some_and(|t| t.epoch == epoch)
    }

    /// Settles a record; whether its partition now has something to commit.
    pub(super) fn settle(&mut self, partition: &Partition, epoch: u64, offset: i64) -> bool {
        match self.partitions.get_mut(partition) {
            Some(track) if track.epoch == epoch => {
                track.in_flight.remove(&offset);
                track.needs_commit()
            }
            _ => false,
        }
    }

    /// The offsets to commit for `only` (or every partition).
    pub(super) fn to_commit(&self, only: Option<&TopicPartitionList>) -> Vec<(Partition, i64)> {
        self.partitions
            .iter()
            .filter(|(p, _)| only.is_none_or(|tpl| tpl.find_partition(&p.0, p.1).is_some()))
            .filter(|(_, t)| t.needs_commit())
            .filter_map(|(p, t)| Some((p.clone(), t.committable()?)))
            .collect()
    }

    pub(super) fn committed(&mut self, done: &[(Partition, i64)]) {
        for (partition, offset) in done {
            if let Some(track) = self.partitions.get_mut(partition) {
                track.committed = Some(track.committed.map_or(*offset, |c| c.max(*offset)));
            }
        }
    }
}

pub(super) fn commit_list(offsets: &[(Partition, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    tpl
}

/// Commits in rounds on a thread of its own: every settlement waiting when
/// a round starts is stored by it. Ends when no settlement can come.
pub(super) fn commit_rounds(
    current: Arc<Mutex<Arc<StreamConsumer<GroupContext>>>>,
    tracks: Arc<Mutex<Tracks>>,
    mut requests: mpsc::UnboundedReceiver<oneshot::Sender<Result<()>>>,
    group: String,
) {
    while let Some(first) = requests.blocking_recv() {
        let mut waiters = vec![first];
        while let Ok(more) = requests.try_recv() {
            waiters.push(more);
        }
        // Not held across the commit: a rebalance needs the lock to finish,
        // and a commit waits for a rebalance in progress. A commit for
        // partitions revoked meanwhile is fenced by the broker (its
        // generation is over), so it cannot move another member's position.
        let offsets = tracks.lock().expect("tracks lock").to_commit(None);
        // The group's consumer now: a replaced one's tracks are gone.
        let consumer = current.lock().expect("consumer lock").clone();
        let result = if offsets.is_empty() {
            Ok(())
        } else {
            match consumer.commit(&commit_list(&offsets), CommitMode::Sync) {
                Ok(()) => {
                    tracks.lock().expect("tracks lock").committed(&offsets);
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(%group, error = %e, "Kafka commit failed; the events come again");
                    Err(Error::Unavailable(format!("cannot commit Kafka offsets: {e}")))
                }
            }
        };
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}
