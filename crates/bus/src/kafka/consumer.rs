//! A consumer group on Kafka.
//!
//! A background task polls the group's consumer and hands records over a
//! channel (not reading it while too many wait, and pausing the partitions
//! when that lasts), so the group keeps its membership however slowly
//! deliveries are settled. Every record handed out is tracked per partition
//! until settled; the committed offset is the lowest one still in flight,
//! committed in rounds that gather every ack waiting for one. A rebalance
//! commits what the revoked partitions have settled and forgets their
//! records, so a settlement that arrives later for a partition this member no
//! longer owns commits nothing.

mod commit;
mod group;

use commit::{Tracks, commit_rounds};
use group::{COMMIT_TIMEOUT, GroupContext};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookbridge_event::{Event, EventPattern, TopicName};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, RebalanceProtocol, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use super::{
    ATTEMPT_HEADER, Context, DUE_HEADER, FAILURE_HEADER, KafkaBus, PUBLISHED_HEADER, TopicKind, event_key, header,
    kafka_error, millis_to_time,
};
use crate::{Acker, Consumer, Delivery, Error, Failure, Result, StartFrom, SubscribeOptions};

/// Records waiting in the channel before the group's consumer stops being
/// read (librdkafka's own queue, bounded by `queued.*`, then fills and its
/// fetcher waits).
const MAX_WAITING: usize = 2_000;
/// Records waiting at which reading starts again.
const RESUME_AT: usize = MAX_WAITING / 2;
/// How long the channel may stay full before the partitions are paused
/// and the consumer read again, so its rebalances are served while the
/// deliveries are stuck. Pausing is kept for that: librdkafka throws away
/// what it had fetched for a paused partition and fetches it again on
/// resume, which pausing at every full channel did many times a second.
const PAUSE_AFTER: Duration = Duration::from_secs(2);
/// Retries held in memory before the retry partitions are paused.
const MAX_HELD_RETRIES: usize = 20_000;

use super::start::Partition;

/// The session timeout of a relay's group member unless the configuration's
/// `properties` set `session.timeout.ms`: how long a killed relay holds its
/// partitions before the broker gives them to another member (librdkafka's
/// own default is 45 s).
pub(super) const SESSION_TIMEOUT_MS: &str = "10000";

/// What librdkafka fetches ahead for a group's consumer unless the
/// configuration's `properties` set `queued.max.messages.kbytes` (its own
/// default is 64 MiB): the relay stops reading a consumer whose records
/// wait, and this bounds what its fetcher then holds, per group.
pub(super) const QUEUED_KBYTES: &str = "8192";

/// One record handed out, and where it came from.
#[derive(Debug)]
struct Held {
    partition: Partition,
    offset: i64,
    epoch: u64,
    event: Event,
    attempt: u32,
    published: DateTime<Utc>,
    due: DateTime<Utc>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due, &self.partition, self.offset) == (other.due, &other.partition, other.offset)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, &self.partition, self.offset).cmp(&(other.due, &other.partition, other.offset))
    }
}

/// The records handed over and not yet taken, and the poller's wake-up
/// when they fall to [`RESUME_AT`].
#[derive(Debug, Default)]
struct Waiting {
    count: AtomicUsize,
    room: tokio::sync::Notify,
}

impl Waiting {
    fn load(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Counts one more handed over.
    fn add(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one taken, waking the poller as the count falls to [`RESUME_AT`]
    /// (it moves one at a time, so it passes that value exactly).
    fn take(&self) {
        if self.count.fetch_sub(1, Ordering::Relaxed) == RESUME_AT + 1 {
            self.room.notify_one();
        }
    }
}

/// What the settlement of a delivery needs.
struct Shared {
    bus: KafkaBus,
    group: String,
    retry_topic: String,
    tracks: Arc<Mutex<Tracks>>,
    commits: mpsc::UnboundedSender<oneshot::Sender<Result<()>>>,
    /// Dropped deliveries come back through here.
    redeliver: mpsc::UnboundedSender<Held>,
}

impl Shared {
    /// Settles a record and, if that moves its partition's position, waits
    /// for the commit round that stores it.
    async fn settle(&self, held: &Held) -> Result<()> {
        self.settle_at(&held.partition, held.epoch, held.offset).await
    }

    async fn settle_at(&self, partition: &Partition, epoch: u64, offset: i64) -> Result<()> {
        let dirty = self.tracks.lock().expect("tracks lock").settle(partition, epoch, offset);
        if !dirty {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.commits.send(tx).map_err(|_| Error::Closed)?;
        match tokio::time::timeout(COMMIT_TIMEOUT, rx).await {
            Ok(result) => result.map_err(|_| Error::Closed)?,
            Err(_) => Err(Error::Unavailable("the Kafka commit timed out; the event comes again".into())),
        }
    }
}

pub(crate) struct KafkaConsumer {
    shared: Arc<Shared>,
    patterns: Vec<EventPattern>,
    /// Records read, each with its partition's epoch when read.
    records: mpsc::UnboundedReceiver<(u64, OwnedMessage)>,
    redelivered: mpsc::UnboundedReceiver<Held>,
    waiting: Arc<Waiting>,
    held_retries: Arc<AtomicUsize>,
    /// Retries not yet due, soonest first.
    timers: BinaryHeap<Reverse<Held>>,
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer").field("group", &self.shared.group).finish_non_exhaustive()
    }
}

/// The librdkafka subscription of `patterns`: regular expressions over the
/// event topics (new topics are picked up on the next metadata refresh).
fn subscriptions(prefix: &str, patterns: &[EventPattern], retry_topic: &str) -> Vec<String> {
    let escape = |s: &str| s.replace('.', "\\.");
    let mut alternatives: Vec<String> = patterns
        .iter()
        .map(|p| match p {
            EventPattern::All => format!("{}\\..*", escape(prefix)),
            EventPattern::Prefix(family) => {
                format!("{}\\..*", escape(TopicName::new(prefix, family.trim_end_matches('.')).as_str()))
            }
            EventPattern::Exact(ty) => escape(TopicName::new(prefix, ty).as_str()),
        })
        .collect();
    alternatives.sort();
    alternatives.dedup();
    let mut out: Vec<String> = alternatives.into_iter().map(|a| format!("^{a}$")).collect();
    out.push(retry_topic.to_owned());
    out
}

pub(super) async fn subscribe(bus: &KafkaBus, options: SubscribeOptions) -> Result<Box<dyn Consumer>> {
    if options.group.is_empty() {
        return Err(Error::Invalid("a consumer group needs a name".into()));
    }
    let o = &bus.inner.options;
    let group = options.group.clone();
    let retry_topic = o.retry_topic(&group);
    bus.ensure_topics(&[(retry_topic.clone(), TopicKind::Retry)]).await?;

    // Settle where the group starts before it joins, so nothing published
    // from now on can be skipped. A group that already exists needs nothing
    // from its other members: positions are placed at assignment.
    let start = match options.start {
        StartFrom::Committed { if_new } => bus.group_start(&group, &options.patterns, &retry_topic, if_new).await?,
        reset => {
            // A reset commits from outside the group, which must then have
            // no running member; it drops the retries it had pending.
            let event_ranges = bus.ranges(&bus.event_topics(&options.patterns).await?).await?;
            let retry_ranges = bus.ranges(std::slice::from_ref(&retry_topic)).await?;
            let event_offsets: Vec<i64> = match reset {
                StartFrom::Earliest => event_ranges.iter().map(|r| r.2).collect(),
                StartFrom::Latest => event_ranges.iter().map(|r| r.3).collect(),
                StartFrom::Time(time) => bus.offsets_at(&event_ranges, time).await?,
                StartFrom::Committed { .. } => unreachable!("handled above"),
            };
            let positions = event_ranges
                .iter()
                .zip(event_offsets)
                .map(|((topic, partition, ..), offset)| (topic.clone(), *partition, offset))
                .chain(retry_ranges.iter().map(|(topic, partition, _, high)| (topic.clone(), *partition, *high)))
                .collect();
            bus.commit_for(&group, positions).await?;
            HashMap::new()
        }
    };

    let tracks = Arc::new(Mutex::new(Tracks::default()));
    let mut config = o.client_config();
    for (key, value) in [("session.timeout.ms", SESSION_TIMEOUT_MS), ("queued.max.messages.kbytes", QUEUED_KBYTES)] {
        if !o.properties.iter().any(|(set, _)| set == key) {
            config.set(key, value);
        }
    }
    config
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    if let Some(instance) = &o.instance_id {
        config.set("group.instance.id", instance);
    }
    let joiner = Joiner {
        bus: bus.clone(),
        config,
        topics: subscriptions(&o.topic_prefix, &options.patterns, &retry_topic),
        group: group.clone(),
        tracks: tracks.clone(),
        start,
        offsets: bus.group_client(&group)?,
    };
    let consumer = joiner.join(0)?;
    let current = Arc::new(Mutex::new(consumer.clone()));

    let (records_tx, records) = mpsc::unbounded_channel();
    let (commits_tx, commits_rx) = mpsc::unbounded_channel();
    let (redeliver_tx, redelivered) = mpsc::unbounded_channel();
    let waiting = Arc::new(Waiting::default());
    let held_retries = Arc::new(AtomicUsize::new(0));
    let shared =
        Arc::new(Shared { bus: bus.clone(), group, retry_topic, tracks, commits: commits_tx, redeliver: redeliver_tx });
    tokio::spawn(poll(
        Member { consumer, current: current.clone(), joiner },
        records_tx,
        Arc::downgrade(&shared),
        waiting.clone(),
        held_retries.clone(),
        shared.retry_topic.clone(),
    ));
    let (committed_tracks, committer_group) = (shared.tracks.clone(), shared.group.clone());
    std::thread::Builder::new()
        .name("hookbridge-kafka-commit".into())
        .spawn(move || commit_rounds(current, committed_tracks, commits_rx, committer_group))
        .map_err(|e| Error::Unavailable(format!("cannot start the Kafka committer: {e}")))?;
    Ok(Box::new(KafkaConsumer {
        shared,
        patterns: options.patterns,
        records,
        redelivered,
        waiting,
        held_retries,
        timers: BinaryHeap::new(),
    }))
}

/// Makes the group's consumer: at subscription, and again whenever the
/// one before failed fatally.
struct Joiner {
    bus: KafkaBus,
    config: rdkafka::ClientConfig,
    topics: Vec<String>,
    group: String,
    tracks: Arc<Mutex<Tracks>>,
    start: HashMap<Partition, i64>,
    offsets: Arc<BaseConsumer<super::Context>>,
}

impl Joiner {
    /// A consumer of the group, subscribed, as its `member`-th consumer.
    fn join(&self, member: u64) -> Result<Arc<StreamConsumer<GroupContext>>> {
        let context = GroupContext {
            tracks: self.tracks.clone(),
            member,
            group: self.group.clone(),
            start: self.start.clone(),
            offsets: self.offsets.clone(),
            _open: super::OpenConsumer::new(&self.bus.inner.open_consumers),
        };
        let consumer: StreamConsumer<GroupContext> = self
            .config
            .create_with_context(context)
            .map_err(|e| kafka_error("cannot create the Kafka consumer", &e))?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| kafka_error("cannot subscribe", &e))?;
        Ok(Arc::new(consumer))
    }
}

/// The group's consumer as the poller holds it, and as the committer finds it.
struct Member {
    consumer: Arc<StreamConsumer<GroupContext>>,
    current: Arc<Mutex<Arc<StreamConsumer<GroupContext>>>>,
    joiner: Joiner,
}

impl Member {
    /// Replaces a consumer that failed fatally (librdkafka gives such a
    /// consumer up for good: with a static `group.instance.id`, a broker
    /// answers a member that rejoined after an outage with
    /// `FENCED_INSTANCE_ID`) by a new one in the same group. What the old
    /// one handed out settles without committing and comes again from the
    /// group's committed offsets: nothing is skipped.
    fn rejoin(&mut self, code: RDKafkaErrorCode, reason: &str) {
        let member = self.joiner.tracks.lock().expect("tracks lock").renew();
        tracing::warn!(group = %self.joiner.group, %code, reason, "the Kafka group's consumer failed for good; joining the group with a new one");
        match self.joiner.join(member) {
            Ok(consumer) => {
                *self.current.lock().expect("consumer lock") = consumer.clone();
                close(std::mem::replace(&mut self.consumer, consumer));
            }
            Err(error) => {
                tracing::warn!(group = %self.joiner.group, %error, "cannot make a new Kafka consumer; trying again")
            }
        }
    }
}

/// Polls the group's consumer, handing records over, until the consumer
/// and every delivery of it are gone: deliveries still in flight at shutdown
/// need their commits, and a commit needs a consumer whose rebalances are
/// served. Then the consumer is closed, which revokes its partitions (their
/// settled offsets committed) and leaves the group, so the other members
/// take over at once rather than after the session timeout.
async fn poll(
    mut member: Member,
    records: mpsc::UnboundedSender<(u64, OwnedMessage)>,
    shared: std::sync::Weak<Shared>,
    waiting: Arc<Waiting>,
    held_retries: Arc<AtomicUsize>,
    retry_topic: String,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let (mut events_paused, mut retries_paused) = (false, false);
    // Since when the channel has been full: the consumer is not read then
    // (unless paused), and librdkafka's own bounded queue holds the rest.
    let mut full_since: Option<tokio::time::Instant> = None;
    while shared.strong_count() > 0 {
        let consumer = member.consumer.clone();
        match waiting.load() {
            n if n <= RESUME_AT => full_since = None,
            n if n >= MAX_WAITING => {
                full_since.get_or_insert_with(tokio::time::Instant::now);
            }
            _ => {}
        }
        tokio::select! {
            // Woken as the channel falls to RESUME_AT; the loop's top then reads again.
            () = waiting.room.notified(), if full_since.is_some() => {}
            _ = tick.tick() => {
                let want_events = full_since.is_some_and(|since| since.elapsed() >= PAUSE_AFTER);
                let want_retries = want_events || held_retries.load(Ordering::Relaxed) >= MAX_HELD_RETRIES;
                if want_events != events_paused || want_retries != retries_paused || want_events || want_retries {
                    // Re-applied every tick: a rebalance may have assigned partitions since.
                    if let Ok(assignment) = consumer.assignment() {
                        let (mut events, mut retries) = (TopicPartitionList::new(), TopicPartitionList::new());
                        for e in assignment.elements() {
                            let list = if e.topic() == retry_topic { &mut retries } else { &mut events };
                            list.add_partition(e.topic(), e.partition());
                        }
                        for (list, want) in [(&events, want_events), (&retries, want_retries)] {
                            if list.count() > 0 {
                                let _ = if want { consumer.pause(list) } else { consumer.resume(list) };
                            }
                        }
                    }
                    (events_paused, retries_paused) = (want_events, want_retries);
                }
            }
            // Also serves rebalances.
            message = consumer.recv(), if full_since.is_none() || events_paused => match message {
                Ok(message) => {
                    // A record is dropped untracked once the consumer is
                    // gone, or if its partition is not (or no longer) this
                    // member's: it comes again to whoever reads it next.
                    let epoch = member.joiner.tracks.lock().expect("tracks lock").epoch_of(message.topic(), message.partition());
                    // Counted before it is sent, so a take never comes first.
                    if let Some(epoch) = epoch {
                        waiting.add();
                        if records.send((epoch, message.detach())).is_err() {
                            waiting.take();
                        }
                    }
                }
                Err(error) => {
                    if let Some((code, reason)) = consumer.client().fatal_error() {
                        drop(consumer);
                        member.rejoin(code, &reason);
                        (events_paused, retries_paused) = (false, false);
                    } else {
                        tracing::warn!(%error, "cannot read from Kafka; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
    }
    // The committer may still be inside a commit that needs this
    // consumer's rebalances served: keep serving until it lets go.
    let deadline = tokio::time::Instant::now() + COMMIT_TIMEOUT;
    while Arc::strong_count(&member.current) > 1 && tokio::time::Instant::now() < deadline {
        tokio::select! {
            _ = member.consumer.recv() => {}
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    close(member.consumer);
}

/// Drops a handle of the group's consumer on a thread of its own: the last
/// one closes it, leaving the group, which may wait for an unreachable
/// broker; [`Bus::close`](crate::Bus::close) waits for it, bounded by its caller.
fn close(consumer: Arc<StreamConsumer<GroupContext>>) {
    std::thread::spawn(move || drop(consumer));
}

/// The headers of a retry record. The due time is rounded up to the next
/// whole millisecond: a retry is never due before the delay it was given.
pub(super) fn retry_headers(event: &Event, due: DateTime<Utc>, attempt: u32, published: DateTime<Utc>) -> OwnedHeaders {
    let due_millis = due.timestamp_millis() + i64::from(!due.timestamp_subsec_nanos().is_multiple_of(1_000_000));
    let (due, attempt, published) =
        (due_millis.to_string(), attempt.to_string(), published.timestamp_millis().to_string());
    super::event_headers(event)
        .insert(Header { key: DUE_HEADER, value: Some(due.as_str()) })
        .insert(Header { key: ATTEMPT_HEADER, value: Some(attempt.as_str()) })
        .insert(Header { key: PUBLISHED_HEADER, value: Some(published.as_str()) })
}

impl KafkaConsumer {
    /// Makes a record a held delivery, or settles it at once when this group
    /// does not take it.
    async fn accept(&mut self, epoch: u64, message: OwnedMessage) -> Result<Option<Held>> {
        let partition = (message.topic().to_owned(), message.partition());
        let offset = message.offset();
        if !self.shared.tracks.lock().expect("tracks lock").seen(&partition, epoch, offset) {
            return Ok(None);
        }
        let timestamp = message.timestamp().to_millis().map_or_else(Utc::now, millis_to_time);
        let event = match message.payload().map(Event::from_json) {
            Some(Ok(event)) => Some(event),
            _ => {
                tracing::error!(group = %self.shared.group, topic = %partition.0, offset, "skipping an unreadable record");
                None
            }
        };
        let Some(event) = event.filter(|e| self.patterns.iter().any(|p| p.matches(&e.ty))) else {
            self.shared.settle_at(&partition, epoch, offset).await?;
            return Ok(None);
        };
        Ok(Some(Held {
            attempt: header(&message, ATTEMPT_HEADER).and_then(|a| a.parse().ok()).unwrap_or(1),
            published: header(&message, PUBLISHED_HEADER)
                .and_then(|p| p.parse().ok())
                .map_or(timestamp, millis_to_time),
            due: header(&message, DUE_HEADER).and_then(|d| d.parse().ok()).map_or(timestamp, millis_to_time),
            partition,
            offset,
            epoch,
            event,
        }))
    }

    fn delivery(&self, held: Held) -> Delivery {
        let (event, attempt, published) = (held.event.clone(), held.attempt, held.published);
        Delivery::new(event, attempt, published, Box::new(KafkaAcker { shared: self.shared.clone(), held: Some(held) }))
    }

    fn is_current(&self, held: &Held) -> bool {
        self.shared.tracks.lock().expect("tracks lock").is_current(&held.partition, held.epoch)
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn next(&mut self) -> Result<Delivery> {
        loop {
            if let Ok(held) = self.redelivered.try_recv() {
                if self.is_current(&held) {
                    return Ok(self.delivery(held));
                }
                continue;
            }
            let now = Utc::now();
            if self.timers.peek().is_some_and(|Reverse(h)| h.due <= now) {
                let Reverse(held) = self.timers.pop().expect("peeked");
                self.held_retries.fetch_sub(1, Ordering::Relaxed);
                if self.is_current(&held) {
                    return Ok(self.delivery(held));
                }
                continue;
            }
            let wait = self
                .timers
                .peek()
                .map_or(Duration::from_secs(3600), |Reverse(h)| (h.due - now).to_std().unwrap_or_default());
            tokio::select! {
                held = self.redelivered.recv() => {
                    if let Some(held) = held && self.is_current(&held) {
                        return Ok(self.delivery(held));
                    }
                }
                message = self.records.recv() => {
                    let Some((epoch, message)) = message else { return Err(Error::Closed) };
                    self.waiting.take();
                    if let Some(held) = self.accept(epoch, message).await? {
                        if held.due > Utc::now() {
                            self.held_retries.fetch_add(1, Ordering::Relaxed);
                            self.timers.push(Reverse(held));
                        } else {
                            return Ok(self.delivery(held));
                        }
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

struct KafkaAcker {
    shared: Arc<Shared>,
    /// Taken when settled; a drop with it still here hands it back.
    held: Option<Held>,
}

impl std::fmt::Debug for KafkaAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaAcker").finish_non_exhaustive()
    }
}

#[async_trait]
impl Acker for KafkaAcker {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        let held = self.held.take().expect("settled once");
        self.shared.settle(&held).await
    }

    async fn nack(mut self: Box<Self>, delay: Duration) -> Result<()> {
        let held = self.held.take().expect("settled once");
        let due = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        let headers = retry_headers(&held.event, due, held.attempt.saturating_add(1), held.published);
        let payload = held.event.to_json();
        // Stored first, then settled: a crash in between repeats it, never loses it.
        let stored = self
            .shared
            .bus
            .produce(&self.shared.retry_topic, Some(event_key(&held.event)), Some(payload.as_slice()), headers, None)
            .await;
        if let Err(error) = stored {
            self.held = Some(held);
            return Err(error);
        }
        self.shared.settle(&held).await
    }

    async fn dead_letter(mut self: Box<Self>, group: &str, failure: Failure) -> Result<()> {
        let held = self.held.take().expect("settled once");
        let bus = &self.shared.bus;
        let topic = bus.inner.options.dlq_topic(group);
        let stored = async {
            bus.ensure_topics(&[(topic.clone(), TopicKind::DeadLetters)]).await?;
            let failure = serde_json::to_string(&failure).expect("failure serializes");
            let headers =
                super::event_headers(&held.event).insert(Header { key: FAILURE_HEADER, value: Some(failure.as_str()) });
            let payload = held.event.to_json();
            bus.produce(&topic, Some(event_key(&held.event)), Some(payload.as_slice()), headers, Some(0)).await
        }
        .await;
        if let Err(error) = stored {
            self.held = Some(held);
            return Err(error);
        }
        self.shared.settle(&held).await
    }
}

impl Drop for KafkaAcker {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            let _ = self.shared.redeliver.send(held);
        }
    }
}
