//! A consumer group on JetStream: a durable pull consumer read as a stream.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind};
use async_trait::async_trait;
use chrono::Utc;
use futures_util::StreamExt as _;
use hookbridge_event::{Event, EventPattern};

use super::{FAILURE_HEADER, GROUP_HEADER, NatsBus, safe_name, unavailable};
use crate::{Acker, Consumer, Delivery, Error, Failure, Result, SubscribeOptions};

pub(crate) struct NatsConsumer {
    bus: NatsBus,
    group: String,
    patterns: Vec<EventPattern>,
    consumer: jetstream::consumer::PullConsumer,
    /// `None` after the stream ended (e.g. the server went away): made anew
    /// on the next call.
    messages: Option<jetstream::consumer::pull::Stream>,
    /// Dropped deliveries, handed back by one task in the order dropped, so
    /// they come again in that order (the relay's `ordering = "subject"`).
    handed_back: tokio::sync::mpsc::UnboundedSender<Arc<jetstream::Message>>,
}

impl std::fmt::Debug for NatsConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConsumer").field("group", &self.group).finish_non_exhaustive()
    }
}

impl NatsConsumer {
    pub(crate) async fn new(
        bus: NatsBus,
        consumer: jetstream::consumer::PullConsumer,
        options: &SubscribeOptions,
    ) -> Result<Self> {
        let messages = consumer.messages().await.map_err(unavailable)?;
        let (handed_back, mut dropped) = tokio::sync::mpsc::unbounded_channel::<Arc<jetstream::Message>>();
        // Ends when the consumer and every delivery are gone.
        tokio::spawn(async move {
            while let Some(message) = dropped.recv().await {
                let _ = message.ack_with(AckKind::Nak(None)).await;
            }
        });
        Ok(Self {
            bus,
            group: options.group.clone(),
            patterns: options.patterns.clone(),
            consumer,
            messages: Some(messages),
            handed_back,
        })
    }
}

#[async_trait]
impl Consumer for NatsConsumer {
    async fn next(&mut self) -> Result<Delivery> {
        loop {
            if self.messages.is_none() {
                self.messages = Some(self.consumer.messages().await.map_err(unavailable)?);
            }
            let next = self.messages.as_mut().expect("just made").next().await;
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(error)) => return Err(unavailable(error)),
                None => {
                    self.messages = None;
                    return Err(Error::Unavailable("the JetStream consumer stream ended; reopening".into()));
                }
            };
            let (attempt, published) = match message.info() {
                Ok(info) => (u32::try_from(info.delivered).unwrap_or(u32::MAX).max(1), info.published),
                Err(_) => (1, Utc::now()),
            };
            // A dead letter handed back is for one group only.
            let for_group = message.headers.as_ref().and_then(|h| h.get(GROUP_HEADER)).map(|v| v.as_str().to_owned());
            if for_group.as_deref().is_some_and(|target| target != self.group) {
                let _ = message.ack().await;
                continue;
            }
            let Ok(event) = Event::from_json(&message.payload) else {
                tracing::error!(group = %self.group, subject = %message.subject, "skipping an unreadable message");
                let _ = message.ack().await;
                continue;
            };
            // On servers with one filter subject the consumer sees every type.
            if !self.patterns.iter().any(|p| p.matches(&event.ty)) {
                let _ = message.ack().await;
                continue;
            }
            let message = Arc::new(message);
            let progress = tokio::spawn(in_progress(message.clone(), self.bus.inner.options.ack_wait)).abort_handle();
            let acker = NatsAcker {
                bus: self.bus.clone(),
                message: Some(message),
                progress,
                handed_back: self.handed_back.clone(),
            };
            return Ok(Delivery::new(event, attempt, published, Box::new(acker)));
        }
    }
}

/// Tells JetStream, every third of `ack_wait`, that a delivery is still
/// being worked on, so a slow subscriber is never raced by a redelivery,
/// while a delivery held by a process that died comes again after
/// `ack_wait`.
async fn in_progress(message: Arc<jetstream::Message>, ack_wait: Duration) {
    let every = (ack_wait / 3).max(Duration::from_millis(300));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        let _ = message.ack_with(AckKind::Progress).await;
    }
}

struct NatsAcker {
    bus: NatsBus,
    /// Taken when settled; a drop with it still here asks for redelivery now.
    message: Option<Arc<jetstream::Message>>,
    /// The task that keeps the delivery in progress; ended when settled.
    progress: tokio::task::AbortHandle,
    handed_back: tokio::sync::mpsc::UnboundedSender<Arc<jetstream::Message>>,
}

impl std::fmt::Debug for NatsAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAcker").finish_non_exhaustive()
    }
}

impl NatsAcker {
    fn take(&mut self) -> Arc<jetstream::Message> {
        self.progress.abort();
        self.message.take().expect("settled once")
    }
}

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.take().double_ack().await.map_err(unavailable)
    }

    async fn nack(mut self: Box<Self>, delay: Duration) -> Result<()> {
        self.take().double_ack_with(AckKind::Nak(Some(delay))).await.map_err(unavailable)
    }

    async fn dead_letter(mut self: Box<Self>, group: &str, failure: Failure) -> Result<()> {
        let message = self.take();
        let mut headers = HeaderMap::new();
        headers.insert(FAILURE_HEADER, serde_json::to_string(&failure).expect("failure serializes").as_str());
        let subject = format!("{}-dlq.{}", self.bus.inner.options.topic_prefix, safe_name(group));
        // Kept first, then acknowledged: a crash in between keeps it twice, never loses it.
        self.bus.inner.publish_acked(subject, headers, message.payload.clone()).await?;
        message.double_ack().await.map_err(unavailable)
    }
}

impl Drop for NatsAcker {
    fn drop(&mut self) {
        self.progress.abort();
        if let Some(message) = self.message.take() {
            // Gone with the consumer's task: JetStream redelivers it after
            // `ack_wait`, like the deliveries of a process that died.
            let _ = self.handed_back.send(message);
        }
    }
}
