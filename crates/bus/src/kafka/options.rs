//! The Kafka backend's settings and the topic names they give.

#[allow(clippy::wildcard_imports)]
use super::*;

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
    /// Static group membership (KIP-345): this process's
    /// `group.instance.id` in every subscriber's group. A relay restarted
    /// with the same id, e.g. a StatefulSet's pod, takes over its
    /// predecessor's partitions at once, killed or not, without waiting for
    /// its session to time out and without a rebalance; a relay that goes
    /// away for good hands its partitions over after the session timeout,
    /// since a static member does not leave its group. Each running relay
    /// needs its own id.
    pub instance_id: Option<String>,
    /// `retention.ms` of the delivery record's topic (`<prefix>-attempts`).
    pub attempts_retention: Duration,
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
            instance_id: None,
            attempts_retention: crate::attempts::DEFAULT_RETENTION,
        }
    }

    /// The client configuration every hookbridge Kafka client starts from.
    pub(super) fn client_config(&self) -> ClientConfig {
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

    pub(super) fn event_topic(&self, ty: &str) -> String {
        TopicName::new(&self.topic_prefix, ty).to_string()
    }

    pub(super) fn retry_topic(&self, group: &str) -> String {
        format!("{}-retry.{}", self.topic_prefix, safe_name(group))
    }

    pub(super) fn dlq_topic(&self, group: &str) -> String {
        format!("{}-dlq.{}", self.topic_prefix, safe_name(group))
    }

    /// The delivery record's topic, keyed by subscriber.
    pub(super) fn attempts_topic(&self) -> String {
        format!("{}-attempts", self.topic_prefix)
    }

    pub(super) fn state_topic(&self) -> String {
        format!("{}-state", self.topic_prefix)
    }

    /// Whether `topic` is an event topic matching `patterns`.
    pub(super) fn matches(&self, topic: &str, patterns: &[EventPattern]) -> bool {
        topic
            .strip_prefix(&self.topic_prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|ty| patterns.iter().any(|p| p.matches(ty)))
    }
}

/// A topic name made of what Kafka allows (letters, digits, `.`, `_`, `-`).
pub(super) fn safe_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect()
}
