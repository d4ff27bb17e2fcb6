//! Tails of the event topics: a consumer with assigned partitions and no
//! group, so nothing is committed and no group rebalances.
//!
//! A cursor is `k` and the base64url of every partition's next offset, by
//! event topic (named without the prefix): resuming reads each partition
//! from there, so the interleaving of partitions does not matter. A
//! partition the cursor does not name (its topic appeared later) is read
//! from its first retained record. Topics that appear while a tail runs are
//! found within [`REFRESH`] and read from their start.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hookbridge_event::{Event, EventPattern};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use super::{Context, KafkaBus, kafka_error, millis_to_time};
use crate::{Result, Tail, TailFrom, Tailed, bad_cursor};

/// How often a tail looks for new event topics.
const REFRESH: Duration = Duration::from_secs(2);

/// Next offset of each partition (by index), per topic without the prefix.
type Positions = BTreeMap<String, Vec<i64>>;

fn encode(positions: &Positions) -> String {
    let mut out = Vec::with_capacity(positions.len() * 24);
    out.push(1u8);
    for (topic, offsets) in positions {
        varint(&mut out, topic.len() as u64);
        out.extend_from_slice(topic.as_bytes());
        varint(&mut out, offsets.len() as u64);
        for &offset in offsets {
            varint(&mut out, offset.max(0) as u64);
        }
    }
    format!("k{}", URL_SAFE_NO_PAD.encode(out))
}

fn decode(cursor: &str) -> Result<Positions> {
    let bytes =
        cursor.strip_prefix('k').and_then(|b| URL_SAFE_NO_PAD.decode(b).ok()).ok_or_else(|| bad_cursor(cursor))?;
    let (&version, mut rest) = bytes.split_first().ok_or_else(|| bad_cursor(cursor))?;
    if version != 1 {
        return Err(bad_cursor(cursor));
    }
    let mut positions = Positions::new();
    while !rest.is_empty() {
        let len = read_varint(&mut rest).ok_or_else(|| bad_cursor(cursor))? as usize;
        let name = rest.get(..len).and_then(|b| std::str::from_utf8(b).ok()).ok_or_else(|| bad_cursor(cursor))?;
        rest = &rest[len..];
        let count = read_varint(&mut rest).ok_or_else(|| bad_cursor(cursor))?;
        if count > 100_000 {
            return Err(bad_cursor(cursor));
        }
        let offsets = (0..count)
            .map(|_| read_varint(&mut rest).and_then(|o| i64::try_from(o).ok()))
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| bad_cursor(cursor))?;
        positions.insert(name.to_owned(), offsets);
    }
    Ok(positions)
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

pub(crate) struct KafkaTail {
    bus: KafkaBus,
    patterns: Vec<EventPattern>,
    consumer: StreamConsumer<Context>,
    positions: Positions,
    assigned: HashSet<(String, i32)>,
    pending: VecDeque<Tailed>,
    refresh: tokio::time::Interval,
}

impl std::fmt::Debug for KafkaTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTail").field("patterns", &self.patterns).finish_non_exhaustive()
    }
}

impl KafkaTail {
    pub(crate) async fn open(bus: &KafkaBus, patterns: Vec<EventPattern>, from: TailFrom) -> Result<Self> {
        let asked = match &from {
            TailFrom::After(cursor) => Some(decode(cursor)?),
            _ => None,
        };
        let mut config = bus.inner.options.client_config();
        config
            .set("group.id", "hookbridge-streams")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest");
        let consumer: StreamConsumer<Context> =
            config.create_with_context(Context).map_err(|e| kafka_error("cannot create a Kafka tail", &e))?;
        let mut tail = Self {
            bus: bus.clone(),
            patterns,
            consumer,
            positions: Positions::new(),
            assigned: HashSet::new(),
            pending: VecDeque::new(),
            refresh: tokio::time::interval(REFRESH),
        };
        tail.refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let topics = bus.event_topics(&tail.patterns).await?;
        let ranges = bus.ranges(&topics).await?;
        let starts: Vec<i64> = match &from {
            TailFrom::Now => ranges.iter().map(|(.., high)| *high).collect(),
            TailFrom::Time(time) => bus.offsets_at(&ranges, *time).await?,
            TailFrom::After(_) => {
                let asked = asked.as_ref().expect("decoded above");
                let mut behind = false;
                let starts: Vec<i64> = ranges
                    .iter()
                    .map(|(topic, partition, low, _)| {
                        let at = asked
                            .get(tail.short(topic))
                            .and_then(|offsets| offsets.get(*partition as usize))
                            .copied()
                            .unwrap_or(*low);
                        behind |= at < *low;
                        at.max(*low)
                    })
                    .collect();
                if behind {
                    let mut oldest = asked.clone();
                    tail.record(&ranges, &starts, &mut oldest);
                    tail.pending.push_back(Tailed::Resync { oldest: encode(&oldest) });
                }
                starts
            }
        };
        let mut positions = std::mem::take(&mut tail.positions);
        tail.record(&ranges, &starts, &mut positions);
        tail.positions = positions;
        tail.assign(&ranges, &starts)?;
        Ok(tail)
    }

    /// A topic's name without the prefix.
    fn short<'a>(&self, topic: &'a str) -> &'a str {
        let prefix = &self.bus.inner.options.topic_prefix;
        topic.strip_prefix(prefix.as_str()).and_then(|t| t.strip_prefix('.')).unwrap_or(topic)
    }

    fn record(&self, ranges: &[(String, i32, i64, i64)], starts: &[i64], positions: &mut Positions) {
        for ((topic, partition, ..), start) in ranges.iter().zip(starts) {
            let offsets = positions.entry(self.short(topic).to_owned()).or_default();
            let index = *partition as usize;
            if offsets.len() <= index {
                offsets.resize(index + 1, 0);
            }
            offsets[index] = *start;
        }
    }

    fn assign(&mut self, ranges: &[(String, i32, i64, i64)], starts: &[i64]) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition, ..), start) in ranges.iter().zip(starts) {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*start))
                .map_err(|e| kafka_error("bad offset", &e))?;
            self.assigned.insert((topic.clone(), *partition));
        }
        if tpl.count() > 0 {
            self.consumer.incremental_assign(&tpl).map_err(|e| kafka_error("cannot read Kafka", &e))?;
        }
        Ok(())
    }

    /// Starts reading partitions that appeared, from their first record.
    async fn discover(&mut self) -> Result<()> {
        let topics = self.bus.event_topics(&self.patterns).await?;
        let unseen: Vec<String> =
            topics.into_iter().filter(|t| !self.assigned.iter().any(|(topic, _)| topic == t)).collect();
        if unseen.is_empty() {
            return Ok(());
        }
        let new = self.bus.ranges(&unseen).await?;
        let starts: Vec<i64> = new.iter().map(|(_, _, low, _)| *low).collect();
        let mut positions = std::mem::take(&mut self.positions);
        self.record(&new, &starts, &mut positions);
        self.positions = positions;
        self.assign(&new, &starts)
    }
}

#[async_trait]
impl Tail for KafkaTail {
    async fn next(&mut self) -> Result<Tailed> {
        loop {
            if let Some(next) = self.pending.pop_front() {
                return Ok(next);
            }
            let message = tokio::select! {
                message = self.consumer.recv() => message,
                _ = self.refresh.tick() => {
                    if let Err(error) = self.discover().await {
                        tracing::debug!(%error, "a stream could not look for new Kafka topics; trying again");
                    }
                    continue;
                }
            };
            let message = match message {
                Ok(message) => message,
                Err(e) => return Err(kafka_error("cannot read Kafka", &e)),
            };
            let short = self.short(message.topic()).to_owned();
            let index = message.partition() as usize;
            let offsets = self.positions.entry(short).or_default();
            if offsets.len() <= index {
                offsets.resize(index + 1, 0);
            }
            // Offsets of a partition are dense: a jump is retention's doing.
            let gap = message.offset() > offsets[index];
            offsets[index] = message.offset() + 1;
            if gap {
                let mut oldest = self.positions.clone();
                if let Some(o) = oldest.get_mut(self.short(message.topic())) {
                    o[index] = message.offset();
                }
                self.pending.push_back(Tailed::Resync { oldest: encode(&oldest) });
            }
            let Some(event) = message.payload().and_then(|p| Event::from_json(p).ok()) else { continue };
            if !self.patterns.iter().any(|p| p.matches(&event.ty)) {
                continue;
            }
            let published_at = millis_to_time(message.timestamp().to_millis().unwrap_or(0));
            let tailed = Tailed::Event { event: Box::new(event), cursor: encode(&self.positions), published_at };
            if self.pending.is_empty() {
                return Ok(tailed);
            }
            self.pending.push_back(tailed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn cursors_round_trip_and_refuse_others() {
        let mut positions = Positions::new();
        positions.insert("email.delivered".into(), vec![0, 17, 300_000_000_000]);
        positions.insert("message.created".into(), vec![5]);
        let cursor = encode(&positions);
        assert_eq!(decode(&cursor).expect("ours"), positions);
        for bad in ["", "k", "e12", "n3", "k!!", &format!("{cursor}AAAA")] {
            assert!(matches!(decode(bad), Err(Error::Invalid(_))), "{bad} refused");
        }
    }
}
