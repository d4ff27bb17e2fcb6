//! A group's dead letters: read, and removed by a marker record.

#[allow(clippy::wildcard_imports)]
use super::*;

impl KafkaBus {
    /// The group's dead letters, and the offset of the last record of the
    /// dead-letter topic.
    pub(super) async fn dead_letter_records(&self, group: &str) -> Result<Vec<(i64, OwnedMessage)>> {
        let names = self.topic_names().await?;
        self.dead_letter_records_in(group, &names).await
    }

    /// [`dead_letter_records`](Self::dead_letter_records) with the cluster's
    /// topic names already at hand.
    pub(super) async fn dead_letter_records_in(
        &self,
        group: &str,
        names: &[String],
    ) -> Result<Vec<(i64, OwnedMessage)>> {
        let topic = self.inner.options.dlq_topic(group);
        if !names.contains(&topic) {
            return Ok(Vec::new());
        }
        let ranges = self.ranges(std::slice::from_ref(&topic)).await?;
        let records = self.read(ranges).await?;
        let mut letters: BTreeMap<i64, OwnedMessage> = BTreeMap::new();
        for record in records {
            let offset = record.offset();
            match header(&record, REMOVED_HEADER) {
                Some("*") => letters.retain(|o, _| *o > offset),
                Some(id) => {
                    if let Ok(id) = id.parse::<i64>() {
                        letters.remove(&id);
                    }
                }
                None => {
                    letters.insert(offset, record);
                }
            }
        }
        Ok(letters.into_iter().collect())
    }

    /// Appends a marker that removes dead letter `id` (or every one, `*`).
    pub(super) async fn remove_dead_letter(&self, group: &str, id: &str) -> Result<()> {
        let headers = OwnedHeaders::new().insert(Header { key: REMOVED_HEADER, value: Some(id) });
        self.produce(&self.inner.options.dlq_topic(group), None, None, headers, Some(0)).await.map(|_| ())
    }
}

pub(super) fn parse_id(id: Option<&str>) -> Result<Option<i64>> {
    id.map(|id| id.parse::<i64>().map_err(|_| Error::Invalid(format!("`{id}` is not a dead-letter id of this bus"))))
        .transpose()
}
