//! Partition ranges, reading records, and a group's committed offsets.

#[allow(clippy::wildcard_imports)]
use super::*;

impl KafkaBus {
    /// `(topic, partition, low, high)` of every partition of `topics`.
    pub(super) async fn ranges(&self, topics: &[String]) -> Result<Vec<(String, i32, i64, i64)>> {
        let inner = self.inner.clone();
        let topics = topics.to_vec();
        blocking(move || {
            let reader = inner.reader.lock().expect("reader lock");
            let mut out = Vec::new();
            for topic in &topics {
                let metadata = reader
                    .fetch_metadata(Some(topic), LOOKUP_TIMEOUT)
                    .map_err(|e| kafka_error("cannot read Kafka metadata", &e))?;
                for t in metadata.topics() {
                    if t.error().is_some() {
                        continue;
                    }
                    for p in t.partitions() {
                        let (low, high) = reader
                            .fetch_watermarks(topic, p.id(), LOOKUP_TIMEOUT)
                            .map_err(|e| kafka_error("cannot read Kafka offsets", &e))?;
                        out.push((topic.clone(), p.id(), low, high));
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Reads the records in `[from, to)` of each partition.
    pub(super) async fn read(&self, ranges: Vec<(String, i32, i64, i64)>) -> Result<Vec<OwnedMessage>> {
        let wanted: Vec<_> = ranges.into_iter().filter(|(_, _, from, to)| from < to).collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let inner = self.inner.clone();
        blocking(move || {
            let reader = inner.reader.lock().expect("reader lock");
            let mut tpl = TopicPartitionList::new();
            let mut left: HashMap<(String, i32), i64> = HashMap::new();
            for (topic, partition, from, to) in &wanted {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*from))
                    .map_err(|e| kafka_error("bad offset", &e))?;
                left.insert((topic.clone(), *partition), *to);
            }
            reader.assign(&tpl).map_err(|e| kafka_error("cannot read Kafka", &e))?;
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            let mut out = Vec::new();
            // librdkafka reports a lost connection as an error and then
            // reconnects: only a read still failing at the deadline fails.
            let mut last_error = None;
            let result = loop {
                if left.is_empty() {
                    break Ok(out);
                }
                if std::time::Instant::now() > deadline {
                    break Err(match last_error {
                        Some(e) => kafka_error("cannot read Kafka", &e),
                        None => Error::Unavailable("reading Kafka took longer than 15s".into()),
                    });
                }
                match reader.poll(Duration::from_millis(100)) {
                    Some(Ok(message)) => {
                        let key = (message.topic().to_owned(), message.partition());
                        if let Some(to) = left.get(&key) {
                            if message.offset() < *to {
                                out.push(message.detach());
                            }
                            if message.offset() + 1 >= *to {
                                left.remove(&key);
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "a Kafka read failed; retrying");
                        last_error = Some(e);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    None => {}
                }
            };
            let _ = reader.unassign();
            result
        })
        .await
    }

    /// The client that reads and commits `group`'s offsets outside the group.
    /// Kept for the groups asked about often (each subscriber's, every status
    /// interval); bounded, since every replay has a group of its own.
    pub(super) fn group_client(&self, group: &str) -> Result<Arc<BaseConsumer<Context>>> {
        let mut clients = self.inner.group_clients.lock().expect("clients lock");
        if let Some(client) = clients.get(group) {
            return Ok(client.clone());
        }
        if clients.len() >= MAX_GROUP_CLIENTS {
            // Closing a client waits for librdkafka: not on the async threads.
            let old: Vec<_> = clients.drain().map(|(_, c)| c).collect();
            std::thread::spawn(move || drop(old));
        }
        let mut config = reader_config(&self.inner.options);
        config.set("group.id", group);
        let client: Arc<BaseConsumer<Context>> =
            Arc::new(config.create_with_context(Context).map_err(|e| kafka_error("cannot create a Kafka client", &e))?);
        clients.insert(group.to_owned(), client.clone());
        Ok(client)
    }

    /// `group`'s committed offsets for `ranges` (`None` where it has none).
    pub(super) async fn committed(&self, group: &str, ranges: &[(String, i32, i64, i64)]) -> Result<Vec<Option<i64>>> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.group_client(group)?;
        let ranges = ranges.to_vec();
        blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for (topic, partition, ..) in &ranges {
                tpl.add_partition(topic, *partition);
            }
            let committed = client
                .committed_offsets(tpl, LOOKUP_TIMEOUT)
                .map_err(|e| kafka_error("cannot read the group's Kafka offsets", &e))?;
            Ok(ranges
                .iter()
                .map(|(topic, partition, ..)| match committed.find_partition(topic, *partition).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                })
                .collect())
        })
        .await
    }

    /// Commits offsets for `group` from outside it (a group with no member
    /// yet, or one being reset).
    pub(super) async fn commit_for(&self, group: &str, offsets: Vec<(String, i32, i64)>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let client = self.group_client(group)?;
        blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for (topic, partition, offset) in &offsets {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                    .map_err(|e| kafka_error("bad offset", &e))?;
            }
            client.commit(&tpl, rdkafka::consumer::CommitMode::Sync).map_err(|e| {
                Error::Unavailable(format!(
                    "cannot set the Kafka group's position (a group being reset must have no running member): {e}"
                ))
            })
        })
        .await
    }

    /// The first offset at or after `time` in each of `ranges` (the end
    /// where there is none).
    pub(super) async fn offsets_at(&self, ranges: &[(String, i32, i64, i64)], time: DateTime<Utc>) -> Result<Vec<i64>> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let inner = self.inner.clone();
        let ranges = ranges.to_vec();
        blocking(move || {
            let reader = inner.reader.lock().expect("reader lock");
            let mut tpl = TopicPartitionList::new();
            for (topic, partition, ..) in &ranges {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(time.timestamp_millis()))
                    .map_err(|e| kafka_error("bad offset", &e))?;
            }
            let found = reader
                .offsets_for_times(tpl, LOOKUP_TIMEOUT)
                .map_err(|e| kafka_error("cannot look up Kafka offsets by time", &e))?;
            Ok(ranges
                .iter()
                .map(|(topic, partition, low, high)| {
                    match found.find_partition(topic, *partition).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o.clamp(*low, *high),
                        _ => *high,
                    }
                })
                .collect())
        })
        .await
    }
}
