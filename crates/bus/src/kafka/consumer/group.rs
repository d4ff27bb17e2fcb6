//! The group member's context: rebalances (placing new partitions at the
//! group's birth offset) and commits on revocation.

use super::commit::commit_list;
#[allow(clippy::wildcard_imports)]
use super::*;

/// The group consumer's context: keeps the tracks right across rebalances
/// and places the partitions the group has no committed offset in.
pub(super) struct GroupContext {
    pub(super) tracks: Arc<Mutex<Tracks>>,
    /// Which of the group's successive consumers this is (see
    /// [`Tracks::member`]): a replaced one's callbacks touch nothing.
    pub(super) member: u64,
    pub(super) group: String,
    /// The group's start positions (see [`super::start`]).
    pub(super) start: HashMap<Partition, i64>,
    /// Reads the group's committed offsets from outside it (never joins).
    pub(super) offsets: Arc<BaseConsumer<Context>>,
    /// Counts this consumer open until it is destroyed (closed).
    pub(super) _open: super::super::OpenConsumer,
}

/// How long a commit may take before the settlements waiting for it fail
/// (their events come again).
pub(super) const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

impl ClientContext for GroupContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        Context.log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        Context.error(error, reason);
    }
}

impl GroupContext {
    /// Sets the offset of each assigned partition that has a start position
    /// and no committed offset; the others keep librdkafka's choice (the
    /// committed offset, or the first retained record).
    pub(super) fn place(&self, assigned: &mut TopicPartitionList) {
        let mut wanted = TopicPartitionList::new();
        for element in assigned.elements() {
            if self.start.contains_key(&(element.topic().to_owned(), element.partition())) {
                wanted.add_partition(element.topic(), element.partition());
            }
        }
        if wanted.count() == 0 {
            return;
        }
        // A separate client: this one is inside its rebalance. Should the
        // look-up fail, every partition falls back to its committed offset
        // or its first record: events come again, none is skipped.
        let committed = match self.offsets.committed_offsets(wanted, super::super::LOOKUP_TIMEOUT) {
            Ok(committed) => committed,
            Err(error) => {
                tracing::warn!(group = %self.group, %error, "cannot read the group's offsets while assigning; reading unplaced partitions from their start");
                return;
            }
        };
        for element in committed.elements() {
            if let Offset::Offset(_) = element.offset() {
                continue;
            }
            let partition = (element.topic().to_owned(), element.partition());
            if let Some(start) = self.start.get(&partition)
                && let Err(error) = assigned.set_partition_offset(&partition.0, partition.1, Offset::Offset(*start))
            {
                tracing::warn!(group = %self.group, %error, "cannot place a Kafka partition; it is read from its start");
            }
        }
    }

    /// Commits what the revoked partitions settled while they are still
    /// ours, and forgets them.
    pub(super) fn revoke(&self, consumer: &BaseConsumer<Self>, revoked: &TopicPartitionList) {
        let mut tracks = self.tracks.lock().expect("tracks lock");
        if tracks.member != self.member {
            return;
        }
        // Asynchronously: a blocking commit inside a rebalance can wait for
        // the rebalance itself.
        let offsets = tracks.to_commit(Some(revoked));
        if !offsets.is_empty()
            && let Err(error) = consumer.commit(&commit_list(&offsets), CommitMode::Async)
        {
            tracing::warn!(group = %self.group, %error, "cannot commit before a rebalance; those events come again");
        }
        for element in revoked.elements() {
            tracks.partitions.remove(&(element.topic().to_owned(), element.partition()));
        }
    }
}

impl ConsumerContext for GroupContext {
    // The whole callback rather than pre/post hooks: only here can the
    // assignment's offsets be set before it takes effect.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        if self.tracks.lock().expect("tracks lock").member != self.member {
            // A consumer replaced after a fatal error, closing: it takes
            // nothing and forgets nothing of its successor's.
            let _ = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
            return;
        }
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.place(tpl);
                let assigned = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                if let Err(error) = assigned {
                    tracing::warn!(group = %self.group, %error, "cannot take the Kafka partitions assigned");
                    return;
                }
                let mut tracks = self.tracks.lock().expect("tracks lock");
                if tracks.member != self.member {
                    return;
                }
                for element in tpl.elements() {
                    tracks.assign((element.topic().to_owned(), element.partition()));
                }
                tracing::debug!(group = %self.group, partitions = tpl.count(), "Kafka partitions assigned");
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(consumer, tpl);
                let _ = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
            }
            other => {
                tracing::warn!(group = %self.group, error = %RDKafkaErrorCode::from(other), "Kafka rebalance error");
                let mut tracks = self.tracks.lock().expect("tracks lock");
                if tracks.member == self.member {
                    tracks.partitions.clear();
                }
                drop(tracks);
                let _ = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
            }
        }
    }
}
