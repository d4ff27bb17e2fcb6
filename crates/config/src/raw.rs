//! The configuration file's shape. Every key has a default except the
//! sources; unknown keys are errors. Documented in `docs/configuration.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::SecretRef;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub bus: BusConfig,
    #[serde(default)]
    pub ingress: IngressConfig,
    #[serde(default)]
    pub relay: RelayConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub tracing: TracingConfig,
    /// The streams listener; off unless this table is present.
    #[serde(default)]
    pub streams: Option<StreamsConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsConfig {
    pub listen: SocketAddr,
    #[serde(default)]
    pub tokens: Vec<StreamTokenConfig>,
    /// Browser origins allowed to open streams (`*`: any).
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// How often an idle stream gets a heart-beat.
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Events read for a client and not yet written to it, at most.
    #[serde(default = "default_client_buffer")]
    pub client_buffer: usize,
    /// A client whose buffer stays full this long is cut off as too slow.
    #[serde(default = "default_slow_client_timeout", with = "humantime_serde")]
    pub slow_client_timeout: Duration,
    /// Clients served at once by this process; more get a 503.
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(15)
}

fn default_slow_client_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_client_buffer() -> usize {
    1024
}

fn default_max_clients() -> usize {
    10_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamTokenConfig {
    pub name: String,
    pub token: SecretRef,
    /// The event patterns this token may read.
    pub events: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Base URL of an OTLP/HTTP collector (spans go to `<it>/v1/traces`);
    /// unset: spans are not exported (trace context is still propagated).
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` or `http/json`.
    pub otlp_protocol: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, otlp_protocol: "http/protobuf".into(), service_name: "hookbridge".into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Embedded,
    Nats,
    Kafka,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Nats => "nats",
            Self::Kafka => "kafka",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    pub backend: Backend,
    /// Topics are `<topic_prefix>.<event type>`.
    pub topic_prefix: String,
    /// How long the delivery record keeps each attempt, on every backend.
    #[serde(with = "humantime_serde")]
    pub attempts_retention: Duration,
    pub embedded: EmbeddedConfig,
    pub nats: NatsConfig,
    pub kafka: KafkaConfig,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Embedded,
            topic_prefix: "hookbridge".into(),
            attempts_retention: hookbridge_bus::attempts::DEFAULT_RETENTION,
            embedded: EmbeddedConfig::default(),
            nats: NatsConfig::default(),
            kafka: KafkaConfig::default(),
        }
    }
}

/// `[bus.kafka]`: Apache Kafka and Kafka-protocol services.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port`.
    pub brokers: OneOrMany<String>,
    /// Create missing topics with the settings below.
    pub create_topics: bool,
    /// Partitions of a created event or retry topic (`-1`: the broker's default).
    pub partitions: i32,
    /// Replication factor of a created topic (`-1`: the broker's default).
    pub replication_factor: i32,
    /// `retention.ms` of created event and retry topics.
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// `retention.ms` of created dead-letter topics (unset: kept until discarded).
    #[serde(with = "humantime_serde")]
    pub dead_letter_retention: Option<Duration>,
    /// How long a publish waits for Kafka's delivery report.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// How long a published event id is remembered to drop duplicates.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How many event ids are remembered at most.
    pub duplicate_capacity: usize,
    /// How often consumers look for new topics matching their patterns.
    #[serde(with = "humantime_serde")]
    pub metadata_refresh: Duration,
    /// This relay's static group membership (`group.instance.id`): a relay
    /// restarted with the same id takes its predecessor's place at once.
    pub instance_id: Option<String>,
    /// librdkafka properties passed through untouched; strings may be
    /// `env:NAME` or `file:/path` references.
    pub properties: BTreeMap<String, PropertyValue>,
}

impl Default for KafkaConfig {
    /// The backend's own defaults, so they are written down once.
    fn default() -> Self {
        let d = hookbridge_bus::kafka::KafkaOptions::new(vec!["127.0.0.1:9092".into()], "hookbridge");
        Self {
            brokers: OneOrMany::Many(d.brokers),
            create_topics: d.create_topics,
            partitions: d.partitions,
            replication_factor: d.replication_factor,
            retention: d.retention,
            dead_letter_retention: d.dead_letter_retention,
            publish_timeout: d.publish_timeout,
            duplicate_window: d.duplicate_window,
            duplicate_capacity: d.duplicate_capacity,
            metadata_refresh: d.metadata_refresh,
            instance_id: d.instance_id,
            properties: BTreeMap::new(),
        }
    }
}

/// A librdkafka property's value as written in TOML.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PropertyValue {
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(SecretRef),
}

/// `[bus.nats]`: NATS JetStream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// One server URL or several (a cluster).
    pub url: OneOrMany<String>,
    pub stream: String,
    /// Create or update the streams at start.
    pub manage_stream: bool,
    pub token: Option<SecretRef>,
    pub user: Option<String>,
    pub password: Option<SecretRef>,
    pub nkey_seed: Option<SecretRef>,
    pub creds_file: Option<PathBuf>,
    pub tls: Option<NatsTlsConfig>,
    /// `file` or `memory`.
    pub storage: String,
    pub replicas: usize,
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
    pub max_bytes: Option<i64>,
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: OneOrMany::One("nats://127.0.0.1:4222".into()),
            stream: "HOOKBRIDGE".into(),
            manage_stream: true,
            token: None,
            user: None,
            password: None,
            nkey_seed: None,
            creds_file: None,
            tls: None,
            storage: "file".into(),
            replicas: 1,
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            max_bytes: None,
            duplicate_window: Duration::from_secs(120),
            ack_wait: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsTlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Require TLS even for `nats://` URLs.
    pub required: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    pub path: PathBuf,
    pub retention: RetentionConfig,
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data/bus"),
            retention: RetentionConfig::default(),
            dedup_window: Duration::from_secs(24 * 3600),
            maintenance_interval: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { max_age: Some(Duration::from_secs(7 * 24 * 3600)), max_bytes: None }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// On SIGTERM, how long requests in flight may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// From a request's first byte to its last header line.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// From the end of the headers to the last byte of the body.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Request line and headers together (larger: 431).
    pub max_header_bytes: usize,
    /// Open connections (the next: 503 and closed).
    pub max_connections: usize,
    /// Webhooks being read, verified or published at once (the next: 503).
    pub max_in_flight: usize,
    pub tls: Option<TlsConfig>,
    /// Directories of provider definition files (`*.toml`), beside the
    /// built-in catalogue.
    pub provider_dirs: Vec<std::path::PathBuf>,
    pub sources: Vec<SourceConfig>,
}

/// A listener's certificate chain and private key, PEM files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            publish_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(25),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
            max_in_flight: 1024,
            tls: None,
            provider_dirs: Vec::new(),
            sources: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Path segment: webhooks arrive at `POST /webhooks/{name}`.
    pub name: String,
    pub provider: String,
    /// Public keys: MailPace's Ed25519 keys (base64), SendGrid's ECDSA key.
    #[serde(default)]
    pub public_keys: Vec<SecretRef>,
    /// HMAC and Standard Webhooks secrets, or tokens (several during a rotation).
    #[serde(default)]
    pub secrets: Vec<SecretRef>,
    /// Basic authentication (Postmark, SparkPost, Brevo).
    pub username: Option<SecretRef>,
    pub password: Option<SecretRef>,
    /// The URL the provider posts to, exactly as configured there, for
    /// providers that sign it (Mandrill).
    pub webhook_url: Option<String>,
    /// Addresses or networks (CIDR) requests may come from; others get 403.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// Amazon SNS (`ses`): the topics whose messages are accepted.
    #[serde(default)]
    pub topic_arns: Vec<String>,
    /// Amazon SNS: confirm a subscription by fetching its SubscribeURL.
    pub confirm_subscriptions: Option<bool>,
    /// Amazon SNS: the pattern (regex) the certificate and SubscribeURL
    /// hosts must match; default Amazon's SNS hosts.
    pub signing_cert_host: Option<String>,
    /// Amazon SNS: a PEM CA certificate trusted when fetching them, beside
    /// the system's roots.
    pub signing_cert_ca: Option<std::path::PathBuf>,
    /// Whippy: `hmac-sha256-hex` (default), `hmac-sha256-base64` or `timestamped`.
    pub signature: Option<String>,
    /// Whippy `timestamped`: how far the signed time may be from now.
    #[serde(default, with = "humantime_serde")]
    pub timestamp_tolerance: Option<Duration>,
    /// Fields removed from the original payload before publishing.
    #[serde(default)]
    pub redact_fields: Vec<String>,
    /// CloudEvents `source` of this source's events; default
    /// `urn:hookbridge:source:<name>`.
    pub event_source: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer token of the admin API; without it the API refuses every call.
    pub token: Option<SecretRef>,
    pub tls: Option<TlsConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 9090)), token: None, tls: None }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Longest `Retry-After` honoured.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// On SIGTERM, how long deliveries in flight may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How often the per-subscriber gauges (backlog, retries, dead letters) are refreshed.
    #[serde(with = "humantime_serde")]
    pub status_interval: Duration,
    /// Which delivery attempts the delivery record keeps (for
    /// `bus.attempts_retention`): `true`/`"all"`, `"failures"`, `false`/`"off"`.
    pub record_attempts: BoolOrName,
    pub subscribers: Vec<SubscriberConfig>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            max_retry_after: Duration::from_secs(3600),
            shutdown_grace: Duration::from_secs(25),
            status_interval: Duration::from_secs(15),
            record_attempts: BoolOrName::Bool(true),
            subscribers: Vec::new(),
        }
    }
}

/// `true`, `false` or a named choice.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum BoolOrName {
    Bool(bool),
    Name(String),
}

/// One value or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        Self::Many(Vec::new())
    }
}

impl<T> OneOrMany<T> {
    pub fn as_slice(&self) -> &[T] {
        match self {
            Self::One(one) => std::slice::from_ref(one),
            Self::Many(many) => many,
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_schedule() -> Vec<humantime_serde::Serde<Duration>> {
    ["5s", "30s", "2m", "10m", "30m", "1h", "3h", "6h"]
        .iter()
        .map(|s| humantime::parse_duration(s).expect("valid default").into())
        .collect()
}

fn default_in_flight() -> usize {
    64
}

fn default_true() -> bool {
    true
}

fn default_threshold() -> u32 {
    10
}

fn default_probe_interval() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriberConfig {
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    /// `whsec_…` (v1) or `whsk_…` (v1a), or a list of them during a rotation.
    #[serde(default)]
    pub secret: OneOrMany<SecretRef>,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_schedule")]
    pub retry_schedule: Vec<humantime_serde::Serde<Duration>>,
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, SecretRef>,
    /// PEM CA bundle trusted for this subscriber's TLS, besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// `{ ca, cert, key }`: a private CA and a client certificate (mTLS).
    pub tls: Option<SubscriberTlsConfig>,
    /// `http://…` or `https://…` (a secret: it may hold credentials).
    pub proxy: Option<SecretRef>,
    /// `{ type = "oauth2", token_url, client_id, client_secret, scopes }`.
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub providers: Vec<String>,
    #[serde(default)]
    pub sources: Vec<String>,
    /// A CEL expression over the CloudEvent: only events it passes are delivered.
    pub filter: Option<String>,
    /// Deliveries at most, per relay process: `200/s`, `600/m`, `1000/h`.
    pub rate_limit: Option<String>,
    /// Deliveries that may start at once (default: one second's worth).
    pub rate_limit_burst: Option<u32>,
    /// `none` (default) or `subject`: one event in flight per subject, in publish order.
    #[serde(default)]
    pub ordering: hookbridge_relay::ordering::Ordering,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// 4xx statuses retried; others are dead-lettered at once. 5xx always retry.
    pub retry_on_status: Option<Vec<u16>>,
    #[serde(default = "default_threshold")]
    pub circuit_failure_threshold: u32,
    #[serde(default = "default_probe_interval", with = "humantime_serde")]
    pub circuit_probe_interval: Duration,
    #[serde(default, with = "humantime_serde")]
    pub disable_after: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriberTlsConfig {
    /// PEM CA bundle trusted besides the system's roots.
    pub ca: Option<PathBuf>,
    /// PEM client certificate (chain).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`: a path, `file:/path` or `env:NAME` (the PEM itself).
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum AuthConfig {
    Oauth2 {
        token_url: String,
        client_id: String,
        client_secret: SecretRef,
        #[serde(default)]
        scopes: Vec<String>,
        /// `basic` (default) or `post`.
        #[serde(default)]
        client_auth: hookbridge_relay::oauth2::ClientAuth,
        audience: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// Default level; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}
