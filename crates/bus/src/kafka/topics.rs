//! Which topics exist, which a group reads, and creating them.

#[allow(clippy::wildcard_imports)]
use super::*;

/// What kind of topic to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TopicKind {
    Events,
    Retry,
    DeadLetters,
    State,
    Attempts,
}

impl KafkaBus {
    /// The names of every topic in the cluster.
    pub(super) async fn topic_names(&self) -> Result<Vec<String>> {
        let inner = self.inner.clone();
        blocking(move || {
            let metadata = inner
                .producer
                .client()
                .fetch_metadata(None, LOOKUP_TIMEOUT)
                .map_err(|e| kafka_error("cannot read Kafka metadata", &e))?;
            Ok(metadata.topics().iter().filter(|t| t.error().is_none()).map(|t| t.name().to_owned()).collect())
        })
        .await
    }

    /// The event topics matching `patterns`.
    pub(super) async fn event_topics(&self, patterns: &[EventPattern]) -> Result<Vec<String>> {
        Ok(self.matching(&self.topic_names().await?, patterns))
    }

    /// Of `names`, the event topics matching `patterns`, sorted.
    pub(super) fn matching(&self, names: &[String], patterns: &[EventPattern]) -> Vec<String> {
        let mut topics: Vec<String> =
            names.iter().filter(|t| self.inner.options.matches(t, patterns)).cloned().collect();
        topics.sort();
        topics
    }

    /// Creates the topics that do not exist yet (when `create_topics` is on).
    pub(super) async fn ensure_topics(&self, topics: &[(String, TopicKind)]) -> Result<()> {
        let missing: Vec<(String, TopicKind)> = {
            let known = self.inner.known_topics.lock().expect("topics lock");
            topics.iter().filter(|(name, _)| !known.contains(name)).cloned().collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let existing: HashSet<String> = self.topic_names().await?.into_iter().collect();
        let to_create: Vec<(String, TopicKind)> =
            missing.iter().filter(|(name, _)| !existing.contains(name)).cloned().collect();
        if !to_create.is_empty() && self.inner.options.create_topics {
            self.create_topics(&to_create).await?;
        }
        let mut known = self.inner.known_topics.lock().expect("topics lock");
        for (name, _) in missing {
            if existing.contains(&name) || self.inner.options.create_topics {
                known.insert(name);
            }
        }
        Ok(())
    }

    pub(super) async fn create_topics(&self, topics: &[(String, TopicKind)]) -> Result<()> {
        let o = &self.inner.options;
        let ms = |d: Option<Duration>| d.map_or_else(|| "-1".to_owned(), |d| d.as_millis().max(1).to_string());
        let (retention, dlq_retention) = (ms(o.retention), ms(o.dead_letter_retention));
        // Retention removes whole segments: roll them within the retention
        // (at most daily) so an expired event goes within about a day.
        let segment = ms(o.retention.map(|r| r.min(Duration::from_secs(24 * 3600))));
        let attempts_retention = ms(Some(o.attempts_retention));
        let attempts_segment = ms(Some(o.attempts_retention.min(Duration::from_secs(24 * 3600))));
        let new_topics: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(name, kind)| {
                let replication = TopicReplication::Fixed(o.replication_factor);
                match kind {
                    TopicKind::Events | TopicKind::Retry => {
                        let topic = NewTopic::new(name, o.partitions, replication);
                        if o.retention.is_some() {
                            topic.set("retention.ms", &retention).set("segment.ms", &segment)
                        } else {
                            topic
                        }
                    }
                    TopicKind::DeadLetters => NewTopic::new(name, 1, replication).set("retention.ms", &dlq_retention),
                    TopicKind::State => NewTopic::new(name, 1, replication).set("cleanup.policy", "compact"),
                    TopicKind::Attempts => NewTopic::new(name, o.partitions, replication)
                        .set("retention.ms", &attempts_retention)
                        .set("segment.ms", &attempts_segment),
                }
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(LOOKUP_TIMEOUT));
        let results = self
            .inner
            .admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(|e| kafka_error("cannot create Kafka topics", &e))?;
        for result in results {
            match result {
                Ok(name) => tracing::info!(topic = %name, "created a Kafka topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Error::Unavailable(format!("cannot create the Kafka topic {name}: {code}")));
                }
            }
        }
        Ok(())
    }
}
