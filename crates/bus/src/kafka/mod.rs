//! The Kafka backend, on librdkafka (through `rdkafka`).
//!
//! - An event goes to the topic `<prefix>.<type>`, keyed by its subject (the
//!   provider's message id) so one message's events stay in order on one
//!   partition; the value is the structured CloudEvent with the Kafka
//!   binding's `content-type` header and `ce_id`, `ce_type`, `ce_source`
//!   headers. The producer is idempotent with `acks=all`; a publish resolves
//!   on the delivery report. A full queue or a timeout is
//!   [`Error::Unavailable`].
//! - A consumer group is a Kafka consumer group subscribed to the topics its
//!   patterns match (new types are found on the next metadata refresh).
//!   Offsets are committed only for settled events: up to the lowest offset
//!   of each partition still in flight.
//! - A retry is written to the group's topic `<prefix>-retry.<group>` with
//!   its due time and attempt in headers, then the original is settled; the
//!   consumer holds a retry in memory until it is due, so it never blocks a
//!   partition. Dead letters go to `<prefix>-dlq.<group>` (one partition);
//!   replaying or discarding one appends a marker, since Kafka cannot delete
//!   a single record. Shared state is the compacted topic `<prefix>-state`.
//! - Kafka has no index by event id: duplicates are dropped within one
//!   publishing process for `duplicate_window`.

mod consumer;
mod dedupe;
mod start;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone as _, Utc};
use hookbridge_event::{Event, EventPattern, TopicName};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use secrecy::{ExposeSecret, SecretString};

use crate::{
    Bus, Consumer, DeadLetter, Error, Failure, GroupStatus, PublishOutcome, Publisher, Result, SubscribeOptions,
};
use dedupe::{Claim, Dedupe};

/// The CloudEvents Kafka binding's content type for a structured event.
pub const CONTENT_TYPE: &str = "application/cloudevents+json; charset=UTF-8";
/// Header of a retry record: when it is due (milliseconds since the epoch).
const DUE_HEADER: &str = "hookbridge_due";
/// Header of a retry record: the attempt it is.
const ATTEMPT_HEADER: &str = "hookbridge_attempt";
/// Header of a retry record: when the bus first accepted the event (ms).
const PUBLISHED_HEADER: &str = "hookbridge_published";
/// Header of a dead letter: why it failed (JSON `Failure`).
const FAILURE_HEADER: &str = "hookbridge_failure";
/// Header of a marker in a dead-letter topic: the id it removes, or `*`
/// for every dead letter before it.
const REMOVED_HEADER: &str = "hookbridge_removed";

/// Settings of the Kafka backend.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// Bootstrap servers, `host:port`.
    pub brokers: Vec<String>,
    pub topic_prefix: String,
    /// librdkafka properties passed through untouched (`security.protocol`,
    /// `sasl.*`, `ssl.*`, tuning), applied to every client. The few that
    /// hookbridge sets per client (`group.id`, `acks`, …) win; the config
    /// refuses them.
    pub properties: Vec<(String, SecretString)>,
    /// Create missing topics with the settings below.
    pub create_topics: bool,
    /// Partitions of a created event or retry topic; `-1` for the broker's default.
    pub partitions: i32,
    /// Replication factor of a created topic; `-1` for the broker's default.
    pub replication_factor: i32,
    /// `retention.ms` of created event and retry topics (`None`: the broker's default).
    pub retention: Option<Duration>,
    /// `retention.ms` of created dead-letter topics (`None`: kept forever).
    pub dead_letter_retention: Option<Duration>,
    /// How long a publish may wait for its delivery report (`message.timeout.ms`).
    pub publish_timeout: Duration,
    /// How long a published id is remembered to drop duplicates.
    pub duplicate_window: Duration,
    /// How many ids are remembered at most.
    pub duplicate_capacity: usize,
    /// How often consumers look for new topics matching their patterns.
    pub metadata_refresh: Duration,
}

impl KafkaOptions {
    /// Defaults for `brokers` and `topic_prefix`.
    pub fn new(brokers: Vec<String>, topic_prefix: &str) -> Self {
        Self {
            brokers,
            topic_prefix: topic_prefix.into(),
            properties: Vec::new(),
            create_topics: true,
            partitions: 6,
            replication_factor: -1,
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            dead_letter_retention: None,
            publish_timeout: Duration::from_secs(10),
            duplicate_window: Duration::from_secs(120),
            duplicate_capacity: 100_000,
            metadata_refresh: Duration::from_secs(10),
        }
    }

    /// The client configuration every hookbridge Kafka client starts from.
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.brokers.join(","))
            .set("client.id", "hookbridge")
            .set("topic.metadata.refresh.interval.ms", self.metadata_refresh.as_millis().to_string());
        for (key, value) in &self.properties {
            config.set(key, value.expose_secret());
        }
        config
    }

    fn event_topic(&self, ty: &str) -> String {
        TopicName::new(&self.topic_prefix, ty).to_string()
    }

    fn retry_topic(&self, group: &str) -> String {
        format!("{}-retry.{}", self.topic_prefix, safe_name(group))
    }

    fn dlq_topic(&self, group: &str) -> String {
        format!("{}-dlq.{}", self.topic_prefix, safe_name(group))
    }

    fn state_topic(&self) -> String {
        format!("{}-state", self.topic_prefix)
    }

    /// Whether `topic` is an event topic matching `patterns`.
    fn matches(&self, topic: &str, patterns: &[EventPattern]) -> bool {
        topic
            .strip_prefix(&self.topic_prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|ty| patterns.iter().any(|p| p.matches(ty)))
    }
}

/// A topic name made of what Kafka allows (letters, digits, `.`, `_`, `-`).
fn safe_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect()
}

/// What kind of topic to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopicKind {
    Events,
    Retry,
    DeadLetters,
    State,
}

/// librdkafka's log lines and client errors, into `tracing`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Context;

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility = fac, "{message}");
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility = fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility = fac, "{message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility = fac, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, "{reason}");
    }
}

impl ConsumerContext for Context {}

#[derive(Debug, Clone)]
pub struct KafkaBus {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) options: KafkaOptions,
    pub(crate) producer: FutureProducer<Context>,
    admin: AdminClient<Context>,
    /// Reads partitions by assignment (dead letters, state, one record's
    /// time); one reader at a time.
    reader: Mutex<BaseConsumer<Context>>,
    /// Clients that read a group's committed offsets, by group.
    group_clients: Mutex<HashMap<String, Arc<BaseConsumer<Context>>>>,
    /// Topics known to exist.
    known_topics: Mutex<HashSet<String>>,
    /// How many group consumers are not closed yet.
    pub(crate) open_consumers: Arc<tokio::sync::watch::Sender<usize>>,
    dedupe: Dedupe,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus").field("brokers", &self.options.brokers).finish_non_exhaustive()
    }
}

/// A Kafka error as ours: configuration mistakes are `Invalid`, the rest
/// means "try again later".
fn kafka_error(context: &str, e: &KafkaError) -> Error {
    match e {
        KafkaError::ClientConfig(..) => Error::Invalid(format!("{context}: {e}")),
        _ => Error::Unavailable(format!("{context}: {e}")),
    }
}

/// Group clients kept at most (see `KafkaBus::group_client`).
const MAX_GROUP_CLIENTS: usize = 64;

/// How long metadata and offset look-ups may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a blocking librdkafka call off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Unavailable(format!("a Kafka look-up failed: {e}")))?
}

impl KafkaBus {
    /// Creates the clients and checks the cluster answers; creates the state
    /// topic when `create_topics` is on.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a rejected librdkafka property;
    /// [`Error::Unavailable`] when no broker answers within 10 s.
    pub async fn open(options: KafkaOptions) -> Result<Self> {
        if options.brokers.is_empty() {
            return Err(Error::Invalid("give at least one Kafka broker".into()));
        }
        let mut producer_config = options.client_config();
        producer_config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", options.publish_timeout.as_millis().max(1).to_string());
        let producer: FutureProducer<Context> = producer_config
            .create_with_context(Context)
            .map_err(|e| kafka_error("cannot create the Kafka producer", &e))?;
        let admin: AdminClient<Context> = options
            .client_config()
            .create_with_context(Context)
            .map_err(|e| kafka_error("cannot create the Kafka admin client", &e))?;
        let reader = reader_config(&options)
            .create_with_context(Context)
            .map_err(|e| kafka_error("cannot create the Kafka reader", &e))?;
        let bus = Self {
            inner: Arc::new(Inner {
                dedupe: Dedupe::new(options.duplicate_window, options.duplicate_capacity),
                options,
                producer,
                admin,
                reader: Mutex::new(reader),
                group_clients: Mutex::new(HashMap::new()),
                known_topics: Mutex::new(HashSet::new()),
                open_consumers: Arc::new(tokio::sync::watch::Sender::new(0)),
            }),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match bus.topic_names().await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::Unavailable(format!(
                        "cannot reach Kafka at {} within 10s: {e}",
                        bus.inner.options.brokers.join(",")
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        bus.ensure_topics(&[(bus.inner.options.state_topic(), TopicKind::State)]).await?;
        tracing::info!(brokers = %bus.inner.options.brokers.join(","), prefix = %bus.inner.options.topic_prefix, "Kafka bus connected");
        Ok(bus)
    }

    /// Every event in the event topics, oldest first by publish time: for
    /// tests and tools, not a hot path.
    ///
    /// # Errors
    /// When Kafka cannot be read.
    pub async fn read_all(&self) -> Result<Vec<Event>> {
        let topics = self.event_topics(&[EventPattern::All]).await?;
        let ranges = self.ranges(&topics).await?;
        let mut records = self.read(ranges).await?;
        records.sort_by_key(|m| m.timestamp().to_millis().unwrap_or(0));
        Ok(records.iter().filter_map(|m| m.payload().and_then(|p| Event::from_json(p).ok())).collect())
    }

    /// The names of every topic in the cluster.
    async fn topic_names(&self) -> Result<Vec<String>> {
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
    async fn event_topics(&self, patterns: &[EventPattern]) -> Result<Vec<String>> {
        Ok(self.matching(&self.topic_names().await?, patterns))
    }

    /// Of `names`, the event topics matching `patterns`, sorted.
    fn matching(&self, names: &[String], patterns: &[EventPattern]) -> Vec<String> {
        let mut topics: Vec<String> =
            names.iter().filter(|t| self.inner.options.matches(t, patterns)).cloned().collect();
        topics.sort();
        topics
    }

    /// Creates the topics that do not exist yet (when `create_topics` is on).
    async fn ensure_topics(&self, topics: &[(String, TopicKind)]) -> Result<()> {
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

    async fn create_topics(&self, topics: &[(String, TopicKind)]) -> Result<()> {
        let o = &self.inner.options;
        let ms = |d: Option<Duration>| d.map_or_else(|| "-1".to_owned(), |d| d.as_millis().max(1).to_string());
        let (retention, dlq_retention) = (ms(o.retention), ms(o.dead_letter_retention));
        // Retention removes whole segments: roll them within the retention
        // (at most daily) so an expired event goes within about a day.
        let segment = ms(o.retention.map(|r| r.min(Duration::from_secs(24 * 3600))));
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

    /// Produces one record and waits for its delivery report.
    pub(crate) async fn produce(
        &self,
        topic: &str,
        key: Option<&str>,
        payload: Option<&[u8]>,
        headers: OwnedHeaders,
        partition: Option<i32>,
    ) -> Result<(i32, i64)> {
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        let delivery = match self.inner.producer.send_result(record) {
            Ok(delivery) => delivery,
            Err((e, _)) => {
                return Err(Error::Unavailable(match e {
                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                        "the Kafka producer queue is full".to_owned()
                    }
                    e => format!("cannot queue a Kafka record: {e}"),
                }));
            }
        };
        match delivery.await {
            Ok(Ok(d)) => Ok((d.partition, d.offset)),
            Ok(Err((e, _))) => Err(kafka_error(&format!("Kafka did not acknowledge a record on {topic}"), &e)),
            Err(_) => Err(Error::Closed),
        }
    }

    /// `(topic, partition, low, high)` of every partition of `topics`.
    async fn ranges(&self, topics: &[String]) -> Result<Vec<(String, i32, i64, i64)>> {
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
    async fn read(&self, ranges: Vec<(String, i32, i64, i64)>) -> Result<Vec<OwnedMessage>> {
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
    fn group_client(&self, group: &str) -> Result<Arc<BaseConsumer<Context>>> {
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
    async fn committed(&self, group: &str, ranges: &[(String, i32, i64, i64)]) -> Result<Vec<Option<i64>>> {
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
    async fn commit_for(&self, group: &str, offsets: Vec<(String, i32, i64)>) -> Result<()> {
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
    async fn offsets_at(&self, ranges: &[(String, i32, i64, i64)], time: DateTime<Utc>) -> Result<Vec<i64>> {
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

    /// The group's dead letters, and the offset of the last record of the
    /// dead-letter topic.
    async fn dead_letter_records(&self, group: &str) -> Result<Vec<(i64, OwnedMessage)>> {
        let names = self.topic_names().await?;
        self.dead_letter_records_in(group, &names).await
    }

    /// [`dead_letter_records`](Self::dead_letter_records) with the cluster's
    /// topic names already at hand.
    async fn dead_letter_records_in(&self, group: &str, names: &[String]) -> Result<Vec<(i64, OwnedMessage)>> {
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
    async fn remove_dead_letter(&self, group: &str, id: &str) -> Result<()> {
        let headers = OwnedHeaders::new().insert(Header { key: REMOVED_HEADER, value: Some(id) });
        self.produce(&self.inner.options.dlq_topic(group), None, None, headers, Some(0)).await.map(|_| ())
    }
}

impl KafkaBus {
    /// Every value written under `key` in the state topic, oldest first
    /// (`None` for a removal); compaction may have dropped older ones.
    pub(crate) async fn state_values(&self, key: &str) -> Result<Vec<Option<Vec<u8>>>> {
        let topic = self.inner.options.state_topic();
        let ranges = self.ranges(std::slice::from_ref(&topic)).await?;
        Ok(self
            .read(ranges)
            .await?
            .into_iter()
            .filter(|record| record.key() == Some(key.as_bytes()))
            .map(|record| record.payload().map(<[u8]>::to_vec))
            .collect())
    }
}

/// Counts a group consumer open while it lives.
#[derive(Debug)]
pub(crate) struct OpenConsumer(Arc<tokio::sync::watch::Sender<usize>>);

impl OpenConsumer {
    pub(crate) fn new(count: &Arc<tokio::sync::watch::Sender<usize>>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count.clone())
    }
}

impl Drop for OpenConsumer {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

fn reader_config(options: &KafkaOptions) -> ClientConfig {
    let mut config = options.client_config();
    config
        .set("group.id", "hookbridge-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest");
    config
}

/// A header's value as text.
pub(crate) fn header<'a>(message: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    message.headers()?.iter().find(|h| h.key == name).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
}

pub(crate) fn millis_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_else(Utc::now)
}

/// The identity of an event for duplicate detection.
fn msg_id(event: &Event) -> String {
    format!("{}#{}", event.source, event.id)
}

/// The headers of an event record.
pub(crate) fn event_headers(event: &Event) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(4)
        .insert(Header { key: "content-type", value: Some(CONTENT_TYPE) })
        .insert(Header { key: "ce_id", value: Some(event.id.as_str()) })
        .insert(Header { key: "ce_type", value: Some(event.ty.as_str()) })
        .insert(Header { key: "ce_source", value: Some(event.source.as_str()) })
}

/// The record key of an event: its subject (the provider's message id), so
/// one message's events share a partition.
pub(crate) fn event_key(event: &Event) -> &str {
    event.subject.as_deref().unwrap_or(event.id.as_str())
}

#[async_trait]
impl Publisher for KafkaBus {
    async fn publish(&self, event: &Event) -> Result<PublishOutcome> {
        let id = msg_id(event);
        loop {
            let guard = match self.inner.dedupe.claim(&id) {
                Claim::Duplicate => return Ok(PublishOutcome::Duplicate),
                Claim::Wait(mut rx) => {
                    // The other publish's outcome decides; if it failed, try ourselves.
                    let published = rx.wait_for(Option::is_some).await.map(|v| *v == Some(true)).unwrap_or(false);
                    if published {
                        return Ok(PublishOutcome::Duplicate);
                    }
                    continue;
                }
                Claim::Mine(guard) => guard,
            };
            let topic = self.inner.options.event_topic(&event.ty);
            let result = async {
                self.ensure_topics(&[(topic.clone(), TopicKind::Events)]).await?;
                let payload = event.to_json();
                self.produce(&topic, Some(event_key(event)), Some(payload.as_slice()), event_headers(event), None).await
            }
            .await;
            self.inner.dedupe.settle(guard, result.is_ok());
            return result.map(|_| PublishOutcome::Published);
        }
    }

    async fn check_ready(&self) -> Result<()> {
        let inner = self.inner.clone();
        let topic = inner.options.state_topic();
        blocking(move || {
            let metadata = inner
                .producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(2))
                .map_err(|e| kafka_error("Kafka does not answer", &e))?;
            if metadata.brokers().is_empty() {
                return Err(Error::Unavailable("Kafka reports no brokers".into()));
            }
            Ok(())
        })
        .await
    }

    fn backend(&self) -> &'static str {
        "kafka"
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Consumer>> {
        consumer::subscribe(self, options).await
    }

    async fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetter>> {
        Ok(self
            .dead_letter_records(group)
            .await?
            .into_iter()
            .filter_map(|(offset, record)| {
                let event = Event::from_json(record.payload()?).ok()?;
                let failure = header(&record, FAILURE_HEADER)
                    .and_then(|f| serde_json::from_str::<Failure>(f).ok())
                    .unwrap_or(Failure { attempts: 0, last_status: None, last_error: "unknown".into() });
                let at = record.timestamp().to_millis().map_or_else(Utc::now, millis_to_time);
                Some(DeadLetter { id: offset.to_string(), event, failure, dead_lettered_at: at })
            })
            .collect())
    }

    async fn replay_dead_letters(&self, group: &str, id: Option<&str>) -> Result<u64> {
        let only = parse_id(id)?;
        let retry = self.inner.options.retry_topic(group);
        self.ensure_topics(&[(retry.clone(), TopicKind::Retry)]).await?;
        let mut count = 0;
        for (offset, record) in self.dead_letter_records(group).await? {
            if only.is_some_and(|o| o != offset) {
                continue;
            }
            let Some(payload) = record.payload() else { continue };
            let Ok(event) = Event::from_json(payload) else { continue };
            // Handed back to this group only, due now, as a first attempt.
            let headers = consumer::retry_headers(&event, Utc::now(), 1, Utc::now());
            self.produce(&retry, Some(event_key(&event)), Some(payload), headers, None).await?;
            self.remove_dead_letter(group, &offset.to_string()).await?;
            count += 1;
        }
        Ok(count)
    }

    async fn discard_dead_letters(&self, group: &str, id: Option<&str>) -> Result<u64> {
        let only = parse_id(id)?;
        let letters = self.dead_letter_records(group).await?;
        match only {
            None if letters.is_empty() => Ok(0),
            None => {
                self.remove_dead_letter(group, "*").await?;
                Ok(letters.len() as u64)
            }
            Some(id) if letters.iter().any(|(o, _)| *o == id) => {
                self.remove_dead_letter(group, &id.to_string()).await?;
                Ok(1)
            }
            Some(_) => Ok(0),
        }
    }

    async fn group_status(&self, group: &str, patterns: &[EventPattern]) -> Result<GroupStatus> {
        // One metadata read serves the event, retry and dead-letter topics.
        let names = self.topic_names().await?;
        let mut topics = self.matching(&names, patterns);
        let retry = self.inner.options.retry_topic(group);
        if names.contains(&retry) {
            topics.push(retry.clone());
        }
        let ranges = self.ranges(&topics).await?;
        let committed = self.committed(group, &ranges).await?;
        let mut status = GroupStatus::default();
        let mut oldest = Vec::new();
        for ((topic, partition, low, high), committed) in ranges.iter().zip(committed) {
            // A partition the group has no position in yet is read from its start.
            let position = committed.unwrap_or(*low).clamp(*low, *high);
            let lag = (*high - position) as u64;
            status.backlog += lag;
            if *topic == retry {
                status.pending_retries += lag;
            }
            if lag > 0 {
                oldest.push((topic.clone(), *partition, position, position + 1));
            }
        }
        status.oldest_undelivered = self
            .read(oldest)
            .await?
            .iter()
            .filter_map(|m| {
                header(m, PUBLISHED_HEADER)
                    .and_then(|p| p.parse().ok())
                    .or_else(|| m.timestamp().to_millis())
                    .map(millis_to_time)
            })
            .min();
        status.dead_letters = self.dead_letter_records_in(group, &names).await?.len() as u64;
        Ok(status)
    }

    async fn count_between(
        &self,
        patterns: &[EventPattern],
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<u64>> {
        let topics = self.event_topics(patterns).await?;
        let ranges = self.ranges(&topics).await?;
        let from = self.offsets_at(&ranges, since).await?;
        let to = self.offsets_at(&ranges, until + chrono::Duration::milliseconds(1)).await?;
        Ok(Some(from.iter().zip(&to).map(|(a, b)| (b - a).max(0) as u64).sum()))
    }

    async fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.state_values(key).await?.pop().flatten())
    }

    async fn close(&self) {
        let mut open = self.inner.open_consumers.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }

    async fn put_state(&self, key: &str, value: Option<Vec<u8>>) -> Result<()> {
        let topic = self.inner.options.state_topic();
        self.produce(&topic, Some(key), value.as_deref(), OwnedHeaders::new(), Some(0)).await.map(|_| ())
    }
}

fn parse_id(id: Option<&str>) -> Result<Option<i64>> {
    id.map(|id| id.parse::<i64>().map_err(|_| Error::Invalid(format!("`{id}` is not a dead-letter id of this bus"))))
        .transpose()
}
