//! The NATS JetStream backend.
//!
//! - One stream (`bus.nats.stream`, default `HOOKBRIDGE`) captures
//!   `<prefix>.>`; an event is published on `<prefix>.<type>` with
//!   `Nats-Msg-Id` = its source and id, so JetStream drops a duplicate within
//!   the stream's duplicate window. A publish resolves on the PubAck.
//! - A consumer group is a durable pull consumer (filtered by subject where
//!   the server allows several filters, 2.10+; on 2.9 it takes `<prefix>.>`
//!   and hookbridge filters by type on receipt). Acks wait for the server's
//!   confirmation; a nack is a `Nak` with the retry's delay.
//! - Dead letters live in the stream `<stream>_DLQ` (`<prefix>-dlq.<group>`);
//!   a replayed dead letter is republished on its type's subject with a
//!   `Hookbridge-Group` header, which every other group skips. Shared state is
//!   the KV bucket `<stream>_STATE`.
//! - The delivery record lives in `<stream>_ATTEMPTS`
//!   (`<prefix>-attempts.<subscriber>.<event hash>`), expired by age.

mod consumer;
mod streams;
mod tail;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, stream};
use async_nats::{HeaderMap, ServerAddr};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use hookbridge_event::{Event, EventPattern, TopicName};
use secrecy::{ExposeSecret, SecretString};

use crate::attempts::{AttemptQuery, AttemptRecord, Newest};
use crate::{
    Bus, Consumer, DeadLetter, Error, Failure, GroupStatus, NewGroup, PublishOutcome, Publisher, Result, StartFrom,
    SubscribeOptions,
};

/// Header naming the group a redelivered dead letter is for.
pub(crate) const GROUP_HEADER: &str = "Hookbridge-Group";
/// Header of a dead letter: why it failed (JSON `Failure`).
pub(crate) const FAILURE_HEADER: &str = "Hookbridge-Failure";

/// How to reach and authenticate to NATS.
#[derive(Debug, Clone)]
pub enum NatsAuth {
    None,
    Token(SecretString),
    UserPassword(String, SecretString),
    /// An NKey seed (`SU…`).
    NKey(SecretString),
    /// A `.creds` file (JWT and NKey seed).
    CredsFile(PathBuf),
}

#[derive(Debug, Clone, Default)]
pub struct NatsTls {
    /// CA bundle to verify the server with (default: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Require TLS even if the URL says `nats://`.
    pub required: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    File,
    Memory,
}

/// Settings of the NATS backend.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    pub urls: Vec<String>,
    pub stream: String,
    pub topic_prefix: String,
    pub auth: NatsAuth,
    pub tls: Option<NatsTls>,
    /// Create or update the streams and the KV bucket at start.
    pub manage_stream: bool,
    pub storage: Storage,
    pub replicas: usize,
    pub max_age: Option<Duration>,
    pub max_bytes: Option<i64>,
    pub duplicate_window: Duration,
    /// How long a delivery may go without a word from its relay before
    /// JetStream offers it again: the relay reports progress every third of
    /// it while a delivery is in flight, so this bounds how long the
    /// deliveries of a relay that died wait, not how long a delivery may take.
    pub ack_wait: Duration,
    /// How long the delivery record keeps an attempt (`<stream>_ATTEMPTS`).
    pub attempts_max_age: Duration,
}

impl NatsOptions {
    /// Defaults for `urls` and `topic_prefix`.
    pub fn new(urls: Vec<String>, topic_prefix: &str) -> Self {
        Self {
            urls,
            stream: "HOOKBRIDGE".into(),
            topic_prefix: topic_prefix.into(),
            auth: NatsAuth::None,
            tls: None,
            manage_stream: true,
            storage: Storage::File,
            replicas: 1,
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            max_bytes: None,
            duplicate_window: Duration::from_secs(120),
            ack_wait: Duration::from_secs(30),
            attempts_max_age: crate::attempts::DEFAULT_RETENTION,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NatsBus {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) options: NatsOptions,
    pub(crate) dlq: String,
    /// Stream of the delivery record.
    attempts: String,
    /// Stream of shared state: one message per key subject.
    state: String,
    /// Consumers may have several filter subjects (server 2.10+).
    pub(crate) multi_filter: bool,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(e.to_string())
}

/// A consumer or KV-safe name: NATS allows no `.`, `*`, `>` or spaces.
pub(crate) fn safe_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

impl NatsBus {
    /// Connects, and creates or checks the streams and KV bucket.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when NATS cannot be reached; [`Error::Invalid`]
    /// when a stream is missing and `manage_stream` is off.
    pub async fn open(options: NatsOptions) -> Result<Self> {
        let mut connect =
            async_nats::ConnectOptions::new().name("hookbridge").retry_on_initial_connect().max_reconnects(None);
        connect = match &options.auth {
            NatsAuth::None => connect,
            NatsAuth::Token(token) => connect.token(token.expose_secret().to_owned()),
            NatsAuth::UserPassword(user, password) => {
                connect.user_and_password(user.clone(), password.expose_secret().to_owned())
            }
            NatsAuth::NKey(seed) => connect.nkey(seed.expose_secret().to_owned()),
            NatsAuth::CredsFile(path) => connect.credentials_file(path).await.map_err(|e| {
                Error::Invalid(format!("cannot read the NATS credentials file {}: {e}", path.display()))
            })?,
        };
        if let Some(tls) = &options.tls {
            connect = connect.require_tls(tls.required);
            if let Some(ca) = &tls.ca_file {
                connect = connect.add_root_certificates(ca.clone());
            }
            if let Some((cert, key)) = &tls.client_cert {
                connect = connect.add_client_certificate(cert.clone(), key.clone());
            }
        }
        let addrs: Vec<ServerAddr> = options
            .urls
            .iter()
            .map(|u| u.parse::<ServerAddr>().map_err(|e| Error::Invalid(format!("`{u}` is not a NATS URL: {e}"))))
            .collect::<Result<_>>()?;
        let client = tokio::time::timeout(Duration::from_secs(10), connect.connect(addrs.as_slice()))
            .await
            .map_err(|_| Error::Unavailable(format!("cannot reach NATS at {} within 10s", options.urls.join(", "))))?
            .map_err(unavailable)?;
        let js = jetstream::new(client.clone());
        let streams::Names { dlq, state, attempts } = streams::ensure(&js, &options).await?;
        let multi_filter = version_at_least(&client.server_info().version, 2, 10);
        tracing::info!(urls = %options.urls.join(","), stream = %options.stream, server = %client.server_info().version, multi_filter, "NATS bus connected");
        Ok(Self { inner: Arc::new(Inner { client, js, options, dlq, attempts, state, multi_filter }) })
    }

    /// Every event the stream holds, oldest first: for tests and tools, not
    /// a hot path.
    ///
    /// # Errors
    /// When NATS cannot be read.
    pub async fn read_all(&self) -> Result<Vec<Event>> {
        let mut stream = self.stream(&self.inner.options.stream).await?;
        let state = stream.info().await.map_err(unavailable)?.state.clone();
        let mut events = Vec::new();
        if state.messages == 0 {
            return Ok(events);
        }
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(message) = stream.get_raw_message(seq).await
                && let Ok(event) = Event::from_json(&message.payload)
            {
                events.push(event);
            }
        }
        Ok(events)
    }

    pub(crate) fn topic(&self, ty: &str) -> TopicName {
        TopicName::new(&self.inner.options.topic_prefix, ty)
    }
}

impl Inner {
    /// Publishes and waits for JetStream's acknowledgement.
    pub(crate) async fn publish_acked(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: bytes::Bytes,
    ) -> Result<jetstream::publish::PublishAck> {
        self.js.publish_with_headers(subject, headers, payload).await.map_err(unavailable)?.await.map_err(unavailable)
    }
}

/// A consumer's `filter_subject` and `filter_subjects` for `filters`: one
/// goes in the first (every server takes it), several in the second (2.10+).
pub(crate) fn filter_fields(mut filters: Vec<String>) -> (String, Vec<String>) {
    if filters.len() == 1 { (filters.remove(0), Vec::new()) } else { (String::new(), filters) }
}

fn version_at_least(version: &str, major: u64, minor: u64) -> bool {
    let mut parts = version.trim_start_matches('v').split(['.', '-']).map(|p| p.parse::<u64>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// The `Nats-Msg-Id` of an event: unique per source, stable across redeliveries.
pub(crate) fn msg_id(event: &Event) -> String {
    format!("{}#{}", event.source, event.id)
}

#[async_trait]
impl Publisher for NatsBus {
    async fn publish(&self, event: &Event) -> Result<PublishOutcome> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id(event).as_str());
        let ack = self.inner.publish_acked(self.topic(&event.ty).to_string(), headers, event.to_json().into()).await?;
        Ok(if ack.duplicate { PublishOutcome::Duplicate } else { PublishOutcome::Published })
    }

    async fn check_ready(&self) -> Result<()> {
        match self.inner.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(Error::Unavailable(format!("NATS connection is {state}"))),
        }
    }

    fn backend(&self) -> &'static str {
        "nats"
    }
}

impl NatsBus {
    /// How many event messages on `filters` were published at or after
    /// `start`: the pending count of a throwaway consumer.
    async fn pending_from(&self, filters: &[String], start: DateTime<Utc>) -> Result<u64> {
        let stream = self.stream(&self.inner.options.stream).await?;
        let (filter_subject, filter_subjects) = filter_fields(filters.to_vec());
        let mut consumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                deliver_policy: DeliverPolicy::ByStartTime { start_time: start },
                ack_policy: jetstream::consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(5),
                filter_subject,
                filter_subjects,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let pending = consumer.info().await.map_err(unavailable)?.num_pending;
        let name = consumer.cached_info().name.clone();
        let _ = stream.delete_consumer(&name).await;
        Ok(pending)
    }

    /// The consumer's filter subjects: the patterns' subjects where the
    /// server takes them (one always; several from 2.10), else everything.
    fn filters(&self, patterns: &[EventPattern]) -> Vec<String> {
        let prefix = &self.inner.options.topic_prefix;
        if (patterns.len() > 1 && !self.inner.multi_filter) || patterns.contains(&EventPattern::All) {
            return vec![format!("{prefix}.>")];
        }
        let mut filters: Vec<String> = patterns
            .iter()
            .map(|p| match p {
                EventPattern::Exact(ty) => TopicName::new(prefix, ty).to_string(),
                EventPattern::Prefix(family) => format!("{}.>", TopicName::new(prefix, family.trim_end_matches('.'))),
                EventPattern::All => format!("{prefix}.>"),
            })
            .collect();
        filters.sort();
        filters.dedup();
        filters
    }

    async fn stream(&self, name: &str) -> Result<stream::Stream> {
        self.inner.js.get_stream(name).await.map_err(unavailable)
    }

    fn state_subject(&self, key: &str) -> String {
        format!("{}-state.{}", self.inner.options.topic_prefix, safe_name(key))
    }

    /// The subject of an attempt; `*` for a part not asked for.
    fn attempt_subject(&self, subscriber: Option<&str>, event_id: Option<&str>) -> String {
        format!(
            "{}-attempts.{}.{}",
            self.inner.options.topic_prefix,
            subscriber.map_or_else(|| "*".to_owned(), safe_name),
            event_id.map_or_else(|| "*".to_owned(), crate::attempts::event_token)
        )
    }

    /// Reads the record's messages on `subject` from `start` on.
    async fn read_attempts(
        &self,
        subject: String,
        start: Option<DateTime<Utc>>,
        query: &AttemptQuery,
    ) -> Result<Vec<AttemptRecord>> {
        let stream = self.stream(&self.inner.attempts).await?;
        let mut consumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                filter_subject: subject,
                deliver_policy: start
                    .map_or(DeliverPolicy::All, |start_time| DeliverPolicy::ByStartTime { start_time }),
                ack_policy: jetstream::consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let mut left = consumer.info().await.map_err(unavailable)?.num_pending as usize;
        let mut newest = Newest::new(query);
        while left > 0 {
            let mut batch = consumer
                .fetch()
                .max_messages(left.min(10_000))
                .expires(Duration::from_secs(2))
                .messages()
                .await
                .map_err(unavailable)?;
            let mut got = 0;
            while let Some(message) = batch.next().await {
                let message = message.map_err(unavailable)?;
                got += 1;
                if let Some(record) = AttemptRecord::from_json(&message.payload).filter(|r| query.matches(r)) {
                    newest.offer(record);
                }
            }
            if got == 0 {
                break;
            }
            left = left.saturating_sub(got);
        }
        Ok(newest.into_newest_first())
    }

    fn dlq_subject(&self, group: &str) -> String {
        format!("{}-dlq.{}", self.inner.options.topic_prefix, safe_name(group))
    }

    /// The stream sequences and messages of a group's dead letters.
    async fn dead_letter_messages(&self, group: &str) -> Result<Vec<(u64, async_nats::jetstream::Message)>> {
        let stream = self.stream(&self.inner.dlq).await?;
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                filter_subject: self.dlq_subject(group),
                deliver_policy: DeliverPolicy::All,
                ack_policy: jetstream::consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let mut consumer = consumer;
        let pending = consumer.info().await.map_err(unavailable)?.num_pending as usize;
        let mut out = Vec::with_capacity(pending);
        if pending > 0 {
            let mut batch = consumer
                .fetch()
                .max_messages(pending)
                .expires(Duration::from_secs(2))
                .messages()
                .await
                .map_err(unavailable)?;
            while let Some(message) = batch.next().await {
                let message = message.map_err(unavailable)?;
                let seq = message.info().map_err(unavailable)?.stream_sequence;
                out.push((seq, message));
                if out.len() == pending {
                    break;
                }
            }
        }
        Ok(out)
    }
}

fn parse_id(id: Option<&str>) -> Result<Option<u64>> {
    id.map(|id| id.parse::<u64>().map_err(|_| Error::Invalid(format!("`{id}` is not a dead-letter id of this bus"))))
        .transpose()
}

#[async_trait]
impl Bus for NatsBus {
    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Consumer>> {
        if options.group.is_empty() {
            return Err(Error::Invalid("a consumer group needs a name".into()));
        }
        let name = safe_name(&options.group);
        let stream = self.stream(&self.inner.options.stream).await?;
        let deliver_policy = match options.start {
            StartFrom::Committed { if_new } => {
                match stream.get_consumer::<jetstream::consumer::pull::Config>(&name).await {
                    Ok(existing) => {
                        return Ok(Box::new(consumer::NatsConsumer::new(self.clone(), existing, &options).await?));
                    }
                    Err(_) => match if_new {
                        NewGroup::Earliest => DeliverPolicy::All,
                        NewGroup::Latest => DeliverPolicy::New,
                    },
                }
            }
            StartFrom::Earliest => DeliverPolicy::All,
            StartFrom::Latest => DeliverPolicy::New,
            StartFrom::Time(start_time) => DeliverPolicy::ByStartTime { start_time },
        };
        // Moving a group's position: start its consumer anew.
        let _ = stream.delete_consumer(&name).await;
        let filters = self.filters(&options.patterns);
        let (filter_subject, filter_subjects) = filter_fields(filters);
        let created = stream
            .create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some(name.clone()),
                deliver_policy,
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: self.inner.options.ack_wait,
                max_deliver: -1,
                max_ack_pending: 20_000,
                filter_subject,
                filter_subjects,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Unavailable(format!("cannot create consumer {name}: {e}")))?;
        Ok(Box::new(consumer::NatsConsumer::new(self.clone(), created, &options).await?))
    }

    async fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetter>> {
        let mut letters = Vec::new();
        for (seq, message) in self.dead_letter_messages(group).await? {
            let Ok(event) = Event::from_json(&message.payload) else { continue };
            let failure = message
                .headers
                .as_ref()
                .and_then(|h| h.get(FAILURE_HEADER))
                .and_then(|v| serde_json::from_str::<Failure>(v.as_str()).ok())
                .unwrap_or(Failure { attempts: 0, last_status: None, last_error: "unknown".into() });
            let at = message.info().map(|i| i.published).unwrap_or_else(|_| Utc::now());
            letters.push(DeadLetter { id: seq.to_string(), event, failure, dead_lettered_at: at });
        }
        Ok(letters)
    }

    async fn replay_dead_letters(&self, group: &str, id: Option<&str>) -> Result<u64> {
        let only = parse_id(id)?;
        let stream = self.stream(&self.inner.dlq).await?;
        let mut count = 0;
        for (seq, message) in self.dead_letter_messages(group).await? {
            if only.is_some_and(|s| s != seq) {
                continue;
            }
            let Ok(event) = Event::from_json(&message.payload) else { continue };
            let mut headers = HeaderMap::new();
            headers.insert(GROUP_HEADER, group);
            let subject = self.topic(&event.ty).to_string();
            self.inner.publish_acked(subject, headers, message.payload.clone()).await?;
            stream.delete_message(seq).await.map_err(unavailable)?;
            count += 1;
        }
        Ok(count)
    }

    async fn discard_dead_letters(&self, group: &str, id: Option<&str>) -> Result<u64> {
        let only = parse_id(id)?;
        let stream = self.stream(&self.inner.dlq).await?;
        let mut count = 0;
        for (seq, _) in self.dead_letter_messages(group).await? {
            if only.is_none_or(|s| s == seq) && stream.delete_message(seq).await.map_err(unavailable)? {
                count += 1;
            }
        }
        Ok(count)
    }

    async fn group_status(&self, group: &str, _patterns: &[EventPattern]) -> Result<GroupStatus> {
        let stream = self.stream(&self.inner.options.stream).await?;
        let mut status = GroupStatus::default();
        if let Ok(mut consumer) = stream.get_consumer::<jetstream::consumer::pull::Config>(&safe_name(group)).await {
            let info = consumer.info().await.map_err(unavailable)?.clone();
            status.backlog = info.num_pending + info.num_ack_pending as u64;
            status.pending_retries = info.num_ack_pending as u64;
            if status.backlog > 0
                && let Ok(first) = stream.get_raw_message(info.ack_floor.stream_sequence + 1).await
            {
                status.oldest_undelivered = Some(first.time);
            }
        }
        let dlq = self.stream(&self.inner.dlq).await?;
        let subject = self.dlq_subject(group);
        let mut subjects = dlq.info_with_subjects(&subject).await.map_err(unavailable)?;
        while let Some(entry) = subjects.next().await {
            let (name, count) = entry.map_err(unavailable)?;
            if name == subject {
                status.dead_letters = count as u64;
            }
        }
        Ok(status)
    }

    /// The messages pending for a consumer that starts at `since`, less
    /// those for one that starts just after `until` (made first, so an event
    /// published meanwhile can only be counted over, never under). `None`
    /// when the server cannot filter on these patterns.
    async fn count_between(
        &self,
        patterns: &[EventPattern],
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<u64>> {
        let filters = self.filters(patterns);
        let everything = format!("{}.>", self.inner.options.topic_prefix);
        if filters == [everything] && !patterns.contains(&EventPattern::All) {
            return Ok(None);
        }
        let after = self.pending_from(&filters, until + chrono::Duration::milliseconds(1)).await?;
        let from = self.pending_from(&filters, since).await?;
        Ok(Some(from.saturating_sub(after)))
    }

    async fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let stream = self.stream(&self.inner.state).await?;
        match stream.get_last_raw_message_by_subject(&self.state_subject(key)).await {
            Ok(message) => Ok(Some(message.payload.to_vec())),
            Err(e) if e.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn tail(&self, patterns: Vec<EventPattern>, from: crate::TailFrom) -> Result<Box<dyn crate::Tail>> {
        Ok(Box::new(tail::NatsTail::open(self, patterns, from).await?))
    }

    async fn record_attempts(&self, attempts: &[AttemptRecord]) -> Result<()> {
        // Published together, then every acknowledgement awaited.
        let mut acks = Vec::with_capacity(attempts.len());
        for record in attempts {
            let subject = self.attempt_subject(Some(&record.subscriber), Some(&record.event_id));
            acks.push(self.inner.js.publish(subject, record.to_json().into()).await.map_err(unavailable)?);
        }
        for ack in futures_util::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await {
            ack.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn attempts(&self, query: &AttemptQuery) -> Result<Vec<AttemptRecord>> {
        let subject = self.attempt_subject(query.subscriber.as_deref(), query.event.as_deref());
        let starts = crate::attempts::scan_starts(query, Utc::now());
        let last = starts.len() - 1;
        for (i, start) in starts.into_iter().enumerate() {
            let found = self.read_attempts(subject.clone(), start, query).await?;
            if i == last || found.len() >= query.capped_limit() {
                return Ok(found);
            }
        }
        unreachable!("the last start returns")
    }

    async fn put_state(&self, key: &str, value: Option<Vec<u8>>) -> Result<()> {
        let subject = self.state_subject(key);
        match value {
            Some(value) => {
                self.inner.publish_acked(subject, HeaderMap::new(), value.into()).await?;
            }
            None => {
                self.stream(&self.inner.state).await?.purge().filter(subject).await.map_err(unavailable)?;
            }
        }
        Ok(())
    }
}
