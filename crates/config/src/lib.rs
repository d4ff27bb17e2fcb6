//! hookbridge's configuration.
//!
//! One TOML file, layered as defaults → file → `HOOKBRIDGE_` environment
//! variables (`HOOKBRIDGE_INGRESS__LISTEN=0.0.0.0:8080`: `__` separates
//! levels). [`Config::load`] returns an already-valid [`Config`] or every
//! problem at once, each with its key path, before anything is bound.
//! Secrets are given inline, as `env:NAME` or as `file:/path`, and are held
//! in types whose `Debug` never shows them.
//!
//! - [`raw`]: the file's shape, as serde reads it (every key documented in
//!   `docs/configuration.md`).
//! - [`secret`]: `env:`/`file:` references.
//! - this module: validation into [`Config`].

pub mod raw;
pub mod secret;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use hookbridge_bus::embedded::{EmbeddedOptions, Retention};
use hookbridge_bus::kafka::KafkaOptions;
use hookbridge_bus::nats::{NatsAuth, NatsOptions, NatsTls, Storage};
use hookbridge_providers::whippy::{self, Scheme};
use hookbridge_providers::{HmacSecret, Provider, Redactor, SourceMeta, Verifier, mailpace, mailpipe};
use hookbridge_relay::circuit::CircuitSettings;
use hookbridge_relay::policy::{DEFAULT_RETRY_ON, RetryPolicy};
use hookbridge_relay::sign::SigningSecret;
use hookbridge_relay::{RelaySettings, SubscriberSettings, Url};
use secrecy::SecretString;

pub use raw::{Backend, LogFormat, RawConfig};
use secret::SecretRef;

/// Prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "HOOKBRIDGE_";

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    pub bus: BusSettings,
    pub ingress: IngressSettings,
    pub relay: RelaySettings,
    /// On SIGTERM, how long the relay's deliveries in flight may take.
    pub relay_shutdown_grace: Duration,
    pub admin: AdminSettings,
    pub log: LogSettings,
    pub tracing: TracingSettings,
}

/// OTLP export of spans, when configured.
#[derive(Debug, Clone)]
pub struct TracingSettings {
    /// Where spans are POSTed (`<otlp_endpoint>/v1/traces`).
    pub otlp_traces_url: Option<String>,
    /// `true`: OTLP/HTTP JSON; `false`: protobuf.
    pub otlp_json: bool,
    pub service_name: String,
}

#[derive(Debug, Clone)]
pub struct BusSettings {
    pub backend: Backend,
    pub topic_prefix: String,
    pub embedded: EmbeddedOptions,
    /// Set when `backend = "nats"`.
    pub nats: Option<NatsOptions>,
    /// Set when `backend = "kafka"`.
    pub kafka: Option<KafkaOptions>,
}

#[derive(Debug)]
pub struct IngressSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// How long a request waits for the bus to acknowledge before it is
    /// answered 503.
    pub publish_timeout: Duration,
    /// On SIGTERM, how long requests in flight may take to finish.
    pub shutdown_grace: Duration,
    pub sources: Vec<Source>,
}

/// One configured webhook source: `POST /webhooks/{name}`.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub provider: Provider,
    pub verifier: Arc<Verifier>,
    pub meta: SourceMeta,
}

#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// Bearer token of the admin API.
    pub token: Option<SecretString>,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// One problem with the configuration, at a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// Everything wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "the configuration has {n} problem{}:", if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            if p.path.is_empty() {
                write!(f, "\n  - {}", p.message)?;
            } else {
                write!(f, "\n  - {}: {}", p.path, p.message)?;
            }
        }
        Ok(())
    }
}

impl ConfigError {
    /// Every error figment found while reading, with its key path.
    fn from_figment(errors: figment::Error) -> Self {
        Self {
            problems: errors
                .into_iter()
                .map(|e| Problem { path: e.path.join("."), message: e.kind.to_string() })
                .collect(),
        }
    }

    fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { problems: vec![Problem { path: path.into(), message: message.into() }] }
    }
}

impl Config {
    /// Loads `path` with `HOOKBRIDGE_` overrides from the process environment.
    ///
    /// # Errors
    /// Every problem found, with its key path.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::one(
                "",
                format!("config file {} does not exist or is not a file", path.display()),
            ));
        }
        Self::from_figment(Figment::from(Toml::file_exact(path)).merge(env()))
    }

    /// Builds from TOML text (and the environment), for tests and tools.
    ///
    /// # Errors
    /// Every problem found, with its key path.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(text)).merge(env()))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let raw: RawConfig = figment.extract().map_err(ConfigError::from_figment)?;
        Self::validate(raw)
    }

    /// Validates a parsed file completely.
    ///
    /// # Errors
    /// Every problem found, with its key path.
    pub fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut problem = |path: String, message: String| problems.push(Problem { path, message });

        if let Err(e) = hookbridge_event::topic::validate_prefix(&raw.bus.topic_prefix) {
            problem("bus.topic_prefix".into(), e.to_string());
        }
        let kafka = if raw.bus.backend == Backend::Kafka {
            match build_kafka(&raw.bus.kafka, &raw.bus.topic_prefix) {
                Ok(options) => Some(options),
                Err(errs) => {
                    errs.into_iter().for_each(|(p, m)| problem(p, m));
                    None
                }
            }
        } else {
            None
        };
        let nats = if raw.bus.backend == Backend::Nats {
            match build_nats(&raw.bus.nats, &raw.bus.topic_prefix) {
                Ok(options) => Some(options),
                Err(errs) => {
                    errs.into_iter().for_each(|(p, m)| problem(p, m));
                    None
                }
            }
        } else {
            None
        };
        if raw.bus.embedded.path.as_os_str().is_empty() {
            problem("bus.embedded.path".into(), "must name a directory".into());
        }
        if raw.ingress.max_body_bytes == 0 {
            problem("ingress.max_body_bytes".into(), "must be greater than 0".into());
        }
        if let Some(endpoint) = &raw.tracing.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            problem(
                "tracing.otlp_endpoint".into(),
                "must be an http:// or https:// URL of an OTLP/HTTP collector".into(),
            );
        }
        if !matches!(raw.tracing.otlp_protocol.as_str(), "http/protobuf" | "http/json") {
            problem(
                "tracing.otlp_protocol".into(),
                format!("`{}` is not http/protobuf or http/json", raw.tracing.otlp_protocol),
            );
        }
        if raw.relay.status_interval.is_zero() {
            problem("relay.status_interval".into(), "must be greater than 0".into());
        }
        if raw.ingress.publish_timeout.is_zero() {
            problem("ingress.publish_timeout".into(), "must be greater than 0".into());
        }
        if raw.ingress.listen == raw.admin.listen && raw.ingress.listen.port() != 0 {
            problem("admin.listen".into(), "must differ from ingress.listen".into());
        }
        if let Err(e) = raw.log.level.parse::<LevelCheck>() {
            problem("log.level".into(), e);
        }

        let mut names = HashSet::new();
        let mut sources = Vec::new();
        for (i, source) in raw.ingress.sources.iter().enumerate() {
            let at = format!("ingress.sources[{i}]");
            if !names.insert(source.name.as_str()) {
                problem(format!("{at}.name"), format!("`{}` is used by another source", source.name));
            }
            match build_source(source, &at) {
                Ok(s) => sources.push(s),
                Err(errs) => errs.into_iter().for_each(|(p, m)| problem(p, m)),
            }
        }
        if raw.ingress.sources.is_empty() && raw.relay.subscribers.is_empty() {
            problem(
                "ingress.sources".into(),
                "nothing is configured: add [[ingress.sources]] (webhooks in) or [[relay.subscribers]] (deliveries out)".into(),
            );
        }
        let mut subscriber_names = HashSet::new();
        let mut subscribers = Vec::new();
        for (i, subscriber) in raw.relay.subscribers.iter().enumerate() {
            let at = format!("relay.subscribers[{i}]");
            if !subscriber_names.insert(subscriber.name.as_str()) {
                problem(format!("{at}.name"), format!("`{}` is used by another subscriber", subscriber.name));
            }
            match build_subscriber(subscriber, &raw.relay, &at) {
                Ok(s) => subscribers.push(s),
                Err(errs) => errs.into_iter().for_each(|(p, m)| problem(p, m)),
            }
        }
        let token = match raw.admin.token.as_ref().map(SecretRef::resolve) {
            None => None,
            Some(Ok(t)) if t.len() >= 16 => Some(SecretString::from(t)),
            Some(Ok(_)) => {
                problem("admin.token".into(), "must be at least 16 characters".into());
                None
            }
            Some(Err(e)) => {
                problem("admin.token".into(), e);
                None
            }
        };

        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let embedded = &raw.bus.embedded;
        Ok(Self {
            bus: BusSettings {
                backend: raw.bus.backend,
                topic_prefix: raw.bus.topic_prefix.clone(),
                embedded: EmbeddedOptions {
                    path: embedded.path.clone(),
                    retention: Retention {
                        max_age: embedded.retention.max_age,
                        max_bytes: embedded.retention.max_bytes,
                        dedup_window: embedded.dedup_window,
                    },
                    maintenance_interval: embedded.maintenance_interval,
                },
                nats,
                kafka,
            },
            ingress: IngressSettings {
                listen: raw.ingress.listen,
                max_body_bytes: raw.ingress.max_body_bytes,
                publish_timeout: raw.ingress.publish_timeout,
                shutdown_grace: raw.ingress.shutdown_grace,
                sources,
            },
            relay: RelaySettings {
                topic_prefix: raw.bus.topic_prefix.clone(),
                subscribers,
                status_interval: raw.relay.status_interval,
            },
            relay_shutdown_grace: raw.relay.shutdown_grace,
            admin: AdminSettings { listen: raw.admin.listen, token },
            log: LogSettings { format: raw.log.format, level: raw.log.level },
            tracing: TracingSettings {
                otlp_traces_url: raw.tracing.otlp_endpoint.map(|e| format!("{}/v1/traces", e.trim_end_matches('/'))),
                otlp_json: raw.tracing.otlp_protocol == "http/json",
                service_name: raw.tracing.service_name,
            },
        })
    }

    /// Only what an admin-API client needs (`admin.listen`, `admin.token`),
    /// without validating or resolving anything else: an operator's machine
    /// need not hold the providers' secrets.
    ///
    /// # Errors
    /// When the file cannot be read or those two keys are wrong.
    pub fn admin_client(path: &Path) -> Result<(SocketAddr, Option<String>), ConfigError> {
        #[derive(serde::Deserialize, Default)]
        struct Partial {
            #[serde(default)]
            admin: PartialAdmin,
        }
        #[derive(serde::Deserialize)]
        struct PartialAdmin {
            #[serde(default = "default_admin")]
            listen: SocketAddr,
            token: Option<SecretRef>,
        }
        impl Default for PartialAdmin {
            fn default() -> Self {
                Self { listen: default_admin(), token: None }
            }
        }
        fn default_admin() -> SocketAddr {
            raw::AdminConfig::default().listen
        }
        if !path.is_file() {
            return Err(ConfigError::one(
                "",
                format!("config file {} does not exist or is not a file", path.display()),
            ));
        }
        let partial: Partial =
            Figment::from(Toml::file_exact(path)).merge(env()).extract().map_err(ConfigError::from_figment)?;
        let token =
            partial.admin.token.map(|t| t.resolve()).transpose().map_err(|e| ConfigError::one("admin.token", e))?;
        Ok((partial.admin.listen, token))
    }

    /// The source named `name`.
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.ingress.sources.iter().find(|s| s.name == name)
    }
}

fn env() -> Env {
    Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"])
}

/// `tracing` level names, checked without depending on tracing here.
struct LevelCheck;

impl std::str::FromStr for LevelCheck {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "trace" | "debug" | "info" | "warn" | "error" | "off" => Ok(Self),
            _ => Err(format!("`{s}` is not a level (trace, debug, info, warn, error, off)")),
        }
    }
}

fn valid_source_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

type Problems = Vec<(String, String)>;

fn build_source(raw: &raw::SourceConfig, at: &str) -> Result<Source, Problems> {
    let mut problems: Problems = Vec::new();
    if !valid_source_name(&raw.name) {
        problems.push((format!("{at}.name"), format!("`{}` must be 1-64 characters of a-z, 0-9, - and _", raw.name)));
    }
    let provider = match raw.provider.parse::<Provider>() {
        Ok(p) => Some(p),
        Err(e) => {
            problems.push((format!("{at}.provider"), e));
            None
        }
    };
    let resolve = |field: &str, list: &[SecretRef], problems: &mut Problems| -> Vec<String> {
        list.iter()
            .enumerate()
            .filter_map(|(j, s)| match s.resolve() {
                Ok(v) if v.is_empty() => {
                    problems.push((format!("{at}.{field}[{j}]"), "is empty".into()));
                    None
                }
                Ok(v) => Some(v),
                Err(e) => {
                    problems.push((format!("{at}.{field}[{j}]"), e));
                    None
                }
            })
            .collect()
    };
    let keys = resolve("public_keys", &raw.public_keys, &mut problems);
    let secrets = resolve("secrets", &raw.secrets, &mut problems);
    if raw.signature.is_some() && provider != Some(Provider::Whippy) {
        problems.push((format!("{at}.signature"), "only whippy sources choose a signature scheme".into()));
    }
    if raw.timestamp_tolerance.is_some() && provider != Some(Provider::Whippy) {
        problems.push((
            format!("{at}.timestamp_tolerance"),
            "only whippy sources with the timestamped scheme use it".into(),
        ));
    }
    let verifier = match provider {
        Some(Provider::MailPace) => {
            if raw.public_keys.is_empty() {
                problems.push((format!("{at}.public_keys"), "a mailpace source needs at least one public key".into()));
            }
            if !raw.secrets.is_empty() {
                problems.push((
                    format!("{at}.secrets"),
                    "mailpace signs with Ed25519: give public_keys, not secrets".into(),
                ));
            }
            let parsed: Vec<_> = keys
                .iter()
                .enumerate()
                .filter_map(|(j, k)| {
                    mailpace::parse_public_key(k)
                        .map_err(|e| problems.push((format!("{at}.public_keys[{j}]"), format!("the key {e}"))))
                        .ok()
                })
                .collect();
            Some(Verifier::MailPace(mailpace::Verifier::new(parsed)))
        }
        Some(p @ (Provider::Mailpipe | Provider::Whippy)) => {
            if raw.secrets.is_empty() {
                problems.push((format!("{at}.secrets"), format!("a {p} source needs at least one secret")));
            }
            if !raw.public_keys.is_empty() {
                problems
                    .push((format!("{at}.public_keys"), format!("{p} signs with HMAC: give secrets, not public_keys")));
            }
            let secrets: Vec<_> = secrets.into_iter().map(|s| HmacSecret::new(s.into_bytes())).collect();
            if p == Provider::Mailpipe {
                Some(Verifier::Mailpipe(mailpipe::Verifier::new(secrets)))
            } else {
                let scheme = match raw.signature.as_deref().map(str::parse::<Scheme>) {
                    None => Scheme::HmacSha256Hex,
                    Some(Ok(s)) => s,
                    Some(Err(e)) => {
                        problems.push((format!("{at}.signature"), e));
                        Scheme::HmacSha256Hex
                    }
                };
                if raw.timestamp_tolerance.is_some() && scheme != Scheme::Timestamped {
                    problems.push((
                        format!("{at}.timestamp_tolerance"),
                        "applies only to signature = \"timestamped\"".into(),
                    ));
                }
                let tolerance = raw.timestamp_tolerance.unwrap_or(whippy::DEFAULT_TOLERANCE);
                Some(Verifier::Whippy(whippy::Verifier::new(secrets, scheme, tolerance)))
            }
        }
        None => None,
    };
    for (j, field) in raw.redact_fields.iter().enumerate() {
        if field.is_empty() || field.split('.').any(str::is_empty) {
            problems
                .push((format!("{at}.redact_fields[{j}]"), format!("`{field}` is not a field name or dotted path")));
        }
    }
    match (verifier, provider) {
        (Some(verifier), Some(provider)) if problems.is_empty() => Ok(Source {
            name: raw.name.clone(),
            provider,
            verifier: Arc::new(verifier),
            meta: SourceMeta {
                event_source: raw.event_source.clone().unwrap_or_else(|| SourceMeta::default_event_source(&raw.name)),
                redactor: Redactor::new(&raw.redact_fields),
            },
        }),
        _ => Err(problems),
    }
}

fn build_kafka(raw: &raw::KafkaConfig, prefix: &str) -> Result<KafkaOptions, Problems> {
    let mut problems: Problems = Vec::new();
    let brokers: Vec<String> = raw.brokers.as_slice().to_vec();
    if brokers.is_empty() {
        problems.push(("bus.kafka.brokers".into(), "give at least one broker, e.g. 127.0.0.1:9092".into()));
    }
    for (i, broker) in brokers.iter().enumerate() {
        if broker.contains("://") || !broker.contains(':') {
            problems.push((format!("bus.kafka.brokers[{i}]"), format!("`{broker}` is not host:port")));
        }
    }
    if raw.partitions == 0 || raw.partitions < -1 {
        problems.push(("bus.kafka.partitions".into(), "must be at least 1, or -1 for the broker's default".into()));
    }
    if raw.replication_factor == 0 || raw.replication_factor < -1 {
        problems
            .push(("bus.kafka.replication_factor".into(), "must be at least 1, or -1 for the broker's default".into()));
    }
    if raw.publish_timeout < std::time::Duration::from_millis(100) {
        problems.push(("bus.kafka.publish_timeout".into(), "must be at least 100ms".into()));
    }
    if raw.metadata_refresh < std::time::Duration::from_millis(100) {
        problems.push(("bus.kafka.metadata_refresh".into(), "must be at least 100ms".into()));
    }
    // Set by hookbridge itself: overriding them would break its guarantees.
    const OWN: &[&str] = &[
        "bootstrap.servers",
        "group.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "enable.idempotence",
        "acks",
        "message.timeout.ms",
        "delivery.timeout.ms",
    ];
    let mut properties = Vec::new();
    for (key, value) in &raw.properties {
        let path = format!("bus.kafka.properties.\"{key}\"");
        if OWN.contains(&key.as_str()) {
            problems.push((path, "is set by hookbridge (see docs/kafka.md); remove it".into()));
            continue;
        }
        let value = match value {
            raw::PropertyValue::Bool(b) => b.to_string(),
            raw::PropertyValue::Integer(i) => i.to_string(),
            raw::PropertyValue::Float(f) => f.to_string(),
            raw::PropertyValue::Text(secret) => match secret.resolve() {
                Ok(v) => v,
                Err(e) => {
                    problems.push((path, e));
                    continue;
                }
            },
        };
        properties.push((key.clone(), SecretString::from(value)));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut options = KafkaOptions::new(brokers, prefix);
    options.properties = properties;
    options.create_topics = raw.create_topics;
    options.partitions = raw.partitions;
    options.replication_factor = raw.replication_factor;
    options.retention = raw.retention;
    options.dead_letter_retention = raw.dead_letter_retention;
    options.publish_timeout = raw.publish_timeout;
    options.duplicate_window = raw.duplicate_window;
    options.duplicate_capacity = raw.duplicate_capacity;
    options.metadata_refresh = raw.metadata_refresh;
    Ok(options)
}

fn build_nats(raw: &raw::NatsConfig, prefix: &str) -> Result<NatsOptions, Problems> {
    let mut problems: Problems = Vec::new();
    let urls: Vec<String> = raw.url.as_slice().to_vec();
    if urls.is_empty() {
        problems.push(("bus.nats.url".into(), "give at least one server URL, e.g. nats://127.0.0.1:4222".into()));
    }
    for (i, url) in urls.iter().enumerate() {
        if !["nats://", "tls://", "ws://", "wss://"].iter().any(|s| url.starts_with(s)) && url.contains("://") {
            problems.push((format!("bus.nats.url[{i}]"), format!("`{url}` is not a nats://, tls:// or ws:// URL")));
        }
    }
    if raw.stream.is_empty() || raw.stream.chars().any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
        problems.push(("bus.nats.stream".into(), "use letters, digits, - and _".into()));
    }
    let mut resolve = |path: &str, secret: &Option<SecretRef>| -> Option<SecretString> {
        secret.as_ref().and_then(|s| match s.resolve() {
            Ok(v) => Some(SecretString::from(v)),
            Err(e) => {
                problems.push((path.into(), e));
                None
            }
        })
    };
    let token = resolve("bus.nats.token", &raw.token);
    let password = resolve("bus.nats.password", &raw.password);
    let seed = resolve("bus.nats.nkey_seed", &raw.nkey_seed);
    let methods = [raw.token.is_some(), raw.user.is_some(), raw.nkey_seed.is_some(), raw.creds_file.is_some()];
    if methods.iter().filter(|m| **m).count() > 1 {
        problems.push(("bus.nats".into(), "choose one of token, user/password, nkey_seed and creds_file".into()));
    }
    if raw.user.is_some() != raw.password.is_some() {
        problems.push(("bus.nats.password".into(), "user and password go together".into()));
    }
    let auth = match (token, raw.user.clone().zip(password), seed, raw.creds_file.clone()) {
        (Some(token), ..) => NatsAuth::Token(token),
        (_, Some((user, password)), ..) => NatsAuth::UserPassword(user, password),
        (_, _, Some(seed), _) => NatsAuth::NKey(seed),
        (_, _, _, Some(path)) => NatsAuth::CredsFile(path),
        _ => NatsAuth::None,
    };
    let tls = raw.tls.as_ref().map(|t| {
        if t.cert_file.is_some() != t.key_file.is_some() {
            problems.push(("bus.nats.tls.key_file".into(), "cert_file and key_file go together".into()));
        }
        NatsTls {
            ca_file: t.ca_file.clone(),
            client_cert: t.cert_file.clone().zip(t.key_file.clone()),
            required: t.required,
        }
    });
    let storage = match raw.storage.as_str() {
        "file" => Storage::File,
        "memory" => Storage::Memory,
        other => {
            problems.push(("bus.nats.storage".into(), format!("`{other}` is not file or memory")));
            Storage::File
        }
    };
    if raw.replicas == 0 || raw.replicas > 5 {
        problems.push(("bus.nats.replicas".into(), "must be 1 to 5".into()));
    }
    if raw.max_age.is_some_and(|age| raw.duplicate_window > age) {
        problems.push((
            "bus.nats.duplicate_window".into(),
            "must not be longer than bus.nats.max_age (JetStream refuses it)".into(),
        ));
    }
    if raw.ack_wait < std::time::Duration::from_secs(1) {
        problems.push(("bus.nats.ack_wait".into(), "must be at least 1s".into()));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(NatsOptions {
        urls,
        stream: raw.stream.clone(),
        topic_prefix: prefix.to_owned(),
        auth,
        tls,
        manage_stream: raw.manage_stream,
        storage,
        replicas: raw.replicas,
        max_age: raw.max_age,
        max_bytes: raw.max_bytes,
        duplicate_window: raw.duplicate_window,
        ack_wait: raw.ack_wait,
    })
}

fn build_subscriber(
    raw: &raw::SubscriberConfig,
    relay: &raw::RelayConfig,
    at: &str,
) -> Result<SubscriberSettings, Problems> {
    let mut problems: Problems = Vec::new();
    let mut problem = |path: String, message: String| problems.push((path, message));
    if !valid_source_name(&raw.name) {
        problem(format!("{at}.name"), format!("`{}` must be 1-64 characters of a-z, 0-9, - and _", raw.name));
    }
    let url = match Url::parse(&raw.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
        Ok(_) => {
            problem(format!("{at}.url"), "must be an http:// or https:// URL".into());
            None
        }
        Err(e) => {
            problem(format!("{at}.url"), format!("is not a URL: {e}"));
            None
        }
    };
    if raw.events.is_empty() {
        problem(format!("{at}.events"), "list the event types to deliver (exact, family.*, or *)".into());
    }
    let events: Vec<_> = raw
        .events
        .iter()
        .enumerate()
        .filter_map(|(j, e)| {
            hookbridge_event::EventPattern::parse(e)
                .map_err(|err| problem(format!("{at}.events[{j}]"), err.to_string()))
                .ok()
        })
        .collect();
    let secrets: Vec<_> = raw
        .secret
        .as_slice()
        .iter()
        .enumerate()
        .filter_map(|(j, s)| {
            let path = if matches!(raw.secret, raw::OneOrMany::One(_)) {
                format!("{at}.secret")
            } else {
                format!("{at}.secret[{j}]")
            };
            s.resolve().and_then(|v| SigningSecret::parse(&v)).map_err(|e| problem(path, e)).ok()
        })
        .collect();
    if raw.timeout.is_zero() {
        problem(format!("{at}.timeout"), "must be greater than 0".into());
    }
    if raw.max_in_flight == 0 {
        problem(format!("{at}.max_in_flight"), "must be at least 1".into());
    }
    if raw.circuit_failure_threshold == 0 {
        problem(format!("{at}.circuit_failure_threshold"), "must be at least 1".into());
    }
    let retry_on_status = raw.retry_on_status.clone().unwrap_or_else(|| DEFAULT_RETRY_ON.to_vec());
    for (j, status) in retry_on_status.iter().enumerate() {
        if !(400..500).contains(status) {
            problem(
                format!("{at}.retry_on_status[{j}]"),
                format!("{status} is not a 4xx status (5xx are always retried)"),
            );
        }
    }
    for (j, provider) in raw.providers.iter().enumerate() {
        if let Err(e) = provider.parse::<Provider>() {
            problem(format!("{at}.providers[{j}]"), e);
        }
    }
    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        let path = format!("{at}.headers.{name}");
        let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
            problem(path, "is not a valid header name".into());
            continue;
        };
        match value.resolve().map(|v| http::HeaderValue::from_str(&v)) {
            Ok(Ok(mut v)) => {
                v.set_sensitive(true);
                headers.push((header, v));
            }
            Ok(Err(_)) => problem(path, "the value is not a valid header value".into()),
            Err(e) => problem(path, e),
        }
    }
    let ca_pem = raw.ca_file.as_ref().and_then(|path| match std::fs::read(path) {
        Ok(pem) => match hookbridge_relay::deliver::check_ca_pem(&pem) {
            Ok(()) => Some(pem),
            Err(e) => {
                problem(format!("{at}.ca_file"), format!("{} {e}", path.display()));
                None
            }
        },
        Err(e) => {
            problem(format!("{at}.ca_file"), format!("cannot read {}: {e}", path.display()));
            None
        }
    });
    match url {
        Some(url) if problems.is_empty() => Ok(SubscriberSettings {
            name: raw.name.clone(),
            url,
            events,
            secrets,
            timeout: raw.timeout,
            retry: RetryPolicy {
                schedule: raw.retry_schedule.iter().map(|d| **d).collect(),
                retry_on_status,
                max_retry_after: relay.max_retry_after,
            },
            max_in_flight: raw.max_in_flight,
            headers,
            ca_pem,
            providers: raw.providers.clone(),
            sources: raw.sources.clone(),
            enabled: raw.enabled,
            circuit: CircuitSettings {
                failure_threshold: raw.circuit_failure_threshold,
                probe_interval: raw.circuit_probe_interval,
                disable_after: raw.disable_after,
            },
        }),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests;
