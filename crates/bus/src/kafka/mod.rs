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
mod dead_letters;
mod dedupe;
mod offsets;
mod options;
mod records;
mod start;
mod tail;
mod topics;

use dead_letters::parse_id;
pub use options::KafkaOptions;
pub use records::CONTENT_TYPE;
use records::msg_id;
pub(crate) use records::{
    ATTEMPT_HEADER, DUE_HEADER, FAILURE_HEADER, PUBLISHED_HEADER, REMOVED_HEADER, event_headers, event_key, header,
    millis_to_time,
};
pub(crate) use topics::TopicKind;

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

use crate::attempts::{AttemptQuery, AttemptRecord, Newest};
use crate::{
    Bus, Consumer, DeadLetter, Error, Failure, GroupStatus, PublishOutcome, Publisher, Result, SubscribeOptions,
};
use dedupe::{Claim, Dedupe};

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

/// The lookup clients': the shared reader and the groups' offset clients.
/// They read bounded ranges, so a fetch that finds nothing is not worth
/// waiting for: a broker holds it for `fetch.wait.max.ms`, and every lookup
/// sent after it on the same connection (a state read, a group's status)
/// waits behind it (500 ms each by librdkafka's default).
fn reader_config(options: &KafkaOptions) -> ClientConfig {
    let mut config = options.client_config();
    config
        .set("group.id", "hookbridge-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", READER_FETCH_WAIT_MS);
    config
}

/// How long a lookup client's fetch may be held (see [`reader_config`]).
const READER_FETCH_WAIT_MS: &str = "10";

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

    async fn tail(&self, patterns: Vec<EventPattern>, from: crate::TailFrom) -> Result<Box<dyn crate::Tail>> {
        Ok(Box::new(tail::KafkaTail::open(self, patterns, from).await?))
    }

    async fn put_state(&self, key: &str, value: Option<Vec<u8>>) -> Result<()> {
        let topic = self.inner.options.state_topic();
        self.produce(&topic, Some(key), value.as_deref(), OwnedHeaders::new(), Some(0)).await.map(|_| ())
    }

    async fn record_attempts(&self, attempts: &[AttemptRecord]) -> Result<()> {
        let topic = self.inner.options.attempts_topic();
        self.ensure_topics(&[(topic.clone(), TopicKind::Attempts)]).await?;
        let payloads: Vec<Vec<u8>> = attempts.iter().map(AttemptRecord::to_json).collect();
        let produced = attempts.iter().zip(&payloads).map(|(record, payload)| {
            self.produce(&topic, Some(&record.subscriber), Some(payload.as_slice()), OwnedHeaders::new(), None)
        });
        for result in futures_util::future::join_all(produced).await {
            result?;
        }
        Ok(())
    }

    async fn attempts(&self, query: &AttemptQuery) -> Result<Vec<AttemptRecord>> {
        let topic = self.inner.options.attempts_topic();
        let ranges = self.ranges(std::slice::from_ref(&topic)).await?;
        let starts = crate::attempts::scan_starts(query, Utc::now());
        let last = starts.len() - 1;
        for (i, start) in starts.into_iter().enumerate() {
            let from = match start {
                Some(time) => self.offsets_at(&ranges, time).await?,
                None => ranges.iter().map(|r| r.2).collect(),
            };
            let window = ranges.iter().zip(from).map(|((t, p, _, high), from)| (t.clone(), *p, from, *high)).collect();
            let mut newest = Newest::new(query);
            for record in self.read(window).await? {
                // By key first: most records of the topic are other subscribers'.
                if let (Some(subscriber), Some(key)) = (&query.subscriber, record.key())
                    && key != subscriber.as_bytes()
                {
                    continue;
                }
                if let Some(record) = record.payload().and_then(AttemptRecord::from_json).filter(|r| query.matches(r)) {
                    newest.offer(record);
                }
            }
            let found = newest.into_newest_first();
            if i == last || found.len() >= query.capped_limit() {
                return Ok(found);
            }
        }
        unreachable!("the last start returns")
    }
}
