//! Where a consumer group starts reading a partition it has no committed
//! offset in.
//!
//! Kafka keeps a position per partition, but hookbridge's promise is about
//! the group: a subscriber that is new starts at the moment it was first
//! started, and a subscriber that exists misses nothing, including events of
//! a type whose topic appeared after it started, or events published before
//! its first commit. So the group's birth is recorded once, in the state
//! topic, as the end of every matching partition at that moment (its *start
//! positions*):
//!
//! - a partition with a committed offset is read from there;
//! - a partition without one that existed at the group's birth is read from
//!   its start position (nothing published after the birth is skipped);
//! - any other partition (its topic, or the partition, appeared later) is
//!   read from its first retained record: everything in it was published
//!   after the group was born.
//!
//! The record is read before the group joins and applied when partitions are
//! assigned (in the rebalance callback), so no start ever commits from
//! outside the group, and a start with other members running, or with a
//! killed member not yet expired, needs nothing from them.
//!
//! Replicas that start a new group at the same moment may each write a
//! record; every reader takes the lowest position per partition over all
//! records (a partition missing from one record counts as its first record),
//! and a writer that finds records other than its own writes that minimum
//! again, so after compaction the surviving record is still the minimum. The
//! minimum is never later than any replica's own birth: merging can only
//! deliver more, never less.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use hookbridge_event::EventPattern;
use serde::{Deserialize, Serialize};

use super::KafkaBus;
use crate::{Bus as _, NewGroup, Result};

/// A topic partition.
pub(super) type Partition = (String, i32);

/// The state key holding `group`'s start positions.
pub(super) fn state_key(group: &str) -> String {
    format!("bus.kafka.group.{group}.start")
}

/// One group's birth record, as kept in the state topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Birth {
    /// When the group was first started (for operators reading the topic).
    created: Option<DateTime<Utc>>,
    /// `(topic, partition, offset)`: the end of each partition at the birth.
    positions: Vec<(String, i32, i64)>,
}

/// Per partition, the lowest position over all `records`; a partition
/// missing from any record is left out (it is read from its start).
fn merge(records: &[Birth]) -> HashMap<Partition, i64> {
    let Some((first, rest)) = records.split_first() else { return HashMap::new() };
    let mut merged: HashMap<Partition, i64> =
        first.positions.iter().map(|(topic, partition, offset)| ((topic.clone(), *partition), *offset)).collect();
    for record in rest {
        let here: HashMap<Partition, i64> =
            record.positions.iter().map(|(topic, partition, offset)| ((topic.clone(), *partition), *offset)).collect();
        merged.retain(|partition, offset| match here.get(partition) {
            Some(other) => {
                *offset = (*offset).min(*other);
                true
            }
            None => false,
        });
    }
    merged
}

fn as_record(positions: &HashMap<Partition, i64>, created: Option<DateTime<Utc>>) -> Birth {
    let mut list: Vec<(String, i32, i64)> = positions.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect();
    list.sort();
    Birth { created, positions: list }
}

impl KafkaBus {
    /// Every birth record kept for `group`, oldest first.
    async fn births(&self, group: &str) -> Result<Vec<Birth>> {
        Ok(self
            .state_values(&state_key(group))
            .await?
            .into_iter()
            .flatten()
            .filter_map(|bytes| match serde_json::from_slice::<Birth>(&bytes) {
                Ok(birth) => Some(birth),
                Err(error) => {
                    tracing::warn!(%group, %error, "ignoring an unreadable Kafka group start record");
                    None
                }
            })
            .collect())
    }

    /// The start positions of `group` (see the module's documentation),
    /// recording its birth if it has none yet.
    ///
    /// A group without a record that already has committed offsets (one
    /// that ran before start positions were recorded) reads every partition
    /// it has no offset in from the start.
    ///
    /// # Errors
    /// When Kafka cannot be read or the record cannot be written.
    pub(super) async fn group_start(
        &self,
        group: &str,
        patterns: &[EventPattern],
        retry_topic: &str,
        if_new: NewGroup,
    ) -> Result<HashMap<Partition, i64>> {
        let known = self.births(group).await?;
        if !known.is_empty() {
            return Ok(merge(&known));
        }
        let event_ranges = self.ranges(&self.event_topics(patterns).await?).await?;
        let mut all = event_ranges.clone();
        all.extend(self.ranges(&[retry_topic.to_owned()]).await?);
        let has_offsets = self.committed(group, &all).await?.iter().any(Option::is_some);
        let mine: HashMap<Partition, i64> = if has_offsets || if_new == NewGroup::Earliest {
            HashMap::new()
        } else {
            event_ranges.into_iter().map(|(topic, partition, _, high)| ((topic, partition), high)).collect()
        };
        let key = state_key(group);
        let record = serde_json::to_vec(&as_record(&mine, Some(Utc::now()))).expect("a birth record serializes");
        self.put_state(&key, Some(record)).await?;
        let written = self.births(group).await?;
        let merged = merge(&written);
        if written.len() > 1 && written.last().map(|last| merge(std::slice::from_ref(last))) != Some(merged.clone()) {
            // Another replica was born at the same moment: leave the minimum
            // as the newest record, the one compaction keeps.
            let record = serde_json::to_vec(&as_record(&merged, written.first().and_then(|b| b.created)))
                .expect("a birth record serializes");
            self.put_state(&key, Some(record)).await?;
        }
        tracing::info!(%group, partitions = merged.len(), "Kafka consumer group born");
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn birth(positions: &[(&str, i32, i64)]) -> Birth {
        Birth { created: None, positions: positions.iter().map(|(t, p, o)| ((*t).to_owned(), *p, *o)).collect() }
    }

    #[test]
    fn merging_takes_the_lowest_position_and_drops_what_one_record_lacks() {
        let merged = merge(&[birth(&[("a", 0, 5), ("a", 1, 7), ("b", 0, 3)]), birth(&[("a", 0, 9), ("a", 1, 2)])]);
        assert_eq!(merged, HashMap::from([(("a".into(), 0), 5), (("a".into(), 1), 2)]));
        assert!(merge(&[birth(&[("a", 0, 5)]), birth(&[])]).is_empty(), "an empty record reads all from the start");
        assert!(merge(&[]).is_empty());
    }

    #[test]
    fn a_record_round_trips() {
        let positions = HashMap::from([(("a".to_owned(), 0), 5)]);
        let record = as_record(&positions, Some(Utc::now()));
        let back: Birth = serde_json::from_slice(&serde_json::to_vec(&record).unwrap()).unwrap();
        assert_eq!(merge(&[back]), positions);
    }
}
