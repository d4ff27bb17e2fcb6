//! Tails of the JetStream stream: an ordered consumer (ephemeral, no acks,
//! recreated by the client after a gap or a reconnect).
//!
//! A cursor is `n<seq>`: the stream sequence of the event it came with.

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use async_trait::async_trait;
use futures_util::StreamExt as _;
use hookbridge_event::{Event, EventPattern};

use super::{GROUP_HEADER, NatsBus, unavailable};
use crate::{Error, Result, Tail, TailFrom, Tailed, bad_cursor};

fn cursor(seq: u64) -> String {
    format!("n{seq}")
}

pub(crate) struct NatsTail {
    patterns: Vec<EventPattern>,
    messages: jetstream::consumer::pull::Ordered,
    /// A resync to report before anything else.
    resync: Option<u64>,
}

impl std::fmt::Debug for NatsTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTail").field("patterns", &self.patterns).finish_non_exhaustive()
    }
}

impl NatsTail {
    pub(crate) async fn open(bus: &NatsBus, patterns: Vec<EventPattern>, from: TailFrom) -> Result<Self> {
        let mut stream = bus.inner.js.get_stream(&bus.inner.options.stream).await.map_err(unavailable)?;
        let state = stream.info().await.map_err(unavailable)?.state.clone();
        let mut resync = None;
        let deliver_policy = match from {
            TailFrom::Now => DeliverPolicy::New,
            TailFrom::Time(start_time) => DeliverPolicy::ByStartTime { start_time },
            TailFrom::After(c) => {
                let seq: u64 = c.strip_prefix('n').and_then(|n| n.parse().ok()).ok_or_else(|| bad_cursor(&c))?;
                if seq > state.last_sequence {
                    return Err(Error::Invalid(format!(
                        "cursor `{c}` is ahead of stream {} (last sequence {}): it is not from this bus",
                        bus.inner.options.stream, state.last_sequence
                    )));
                }
                // An empty stream's first sequence is one past its last.
                if state.first_sequence > seq + 1 {
                    resync = Some(state.first_sequence - 1);
                }
                DeliverPolicy::ByStartSequence { start_sequence: (seq + 1).max(state.first_sequence) }
            }
        };
        let filters = bus.filters(&patterns);
        let (filter_subject, filter_subjects) = super::filter_fields(filters);
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                deliver_policy,
                filter_subject,
                filter_subjects,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Unavailable(format!("cannot create a JetStream tail: {e}")))?;
        let messages = consumer.messages().await.map_err(unavailable)?;
        Ok(Self { patterns, messages, resync })
    }
}

#[async_trait]
impl Tail for NatsTail {
    async fn next(&mut self) -> Result<Tailed> {
        if let Some(oldest) = self.resync.take() {
            return Ok(Tailed::Resync { oldest: cursor(oldest) });
        }
        loop {
            let message = match self.messages.next().await {
                Some(Ok(message)) => message,
                Some(Err(error)) => return Err(unavailable(error)),
                None => return Err(Error::Closed),
            };
            // A dead letter handed back to one group is not a new event.
            if message.headers.as_ref().and_then(|h| h.get(GROUP_HEADER)).is_some() {
                continue;
            }
            let Ok(event) = Event::from_json(&message.payload) else { continue };
            if !self.patterns.iter().any(|p| p.matches(&event.ty)) {
                continue;
            }
            let (seq, published_at) = match message.info() {
                Ok(info) => (info.stream_sequence, info.published),
                Err(_) => continue,
            };
            return Ok(Tailed::Event { event: Box::new(event), cursor: cursor(seq), published_at });
        }
    }
}
