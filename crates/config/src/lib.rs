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
//! - [`bus`], [`source`], [`relay`]: each table into the settings type of
//!   the crate it configures.
//! - this module: validation into [`Config`].

mod bus;
mod listener;
pub mod raw;
mod relay;
pub mod secret;
mod source;
mod streams;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
pub use hookbridge_bus::BusOptions;
pub use hookbridge_ingress::{IngressSettings, Source};
use hookbridge_relay::{RecordAttempts, RelaySettings};
use secrecy::SecretString;

pub use raw::{Backend, LogFormat, RawConfig};
use secret::SecretRef;

/// Prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "HOOKBRIDGE_";

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The backend and its options.
    pub bus: BusOptions,
    /// `bus.topic_prefix`: every topic is `<prefix>.<event type>`.
    pub topic_prefix: String,
    pub ingress: IngressSettings,
    pub relay: RelaySettings,
    /// On SIGTERM, how long the relay's deliveries in flight may take.
    pub relay_shutdown_grace: Duration,
    pub admin: AdminSettings,
    pub log: LogSettings,
    pub tracing: TracingSettings,
    /// The streams listener, when `[streams]` is configured.
    pub streams: Option<hookbridge_streams::StreamsSettings>,
    /// The providers sources may name: the built-ins and `ingress.provider_dirs`.
    pub providers: hookbridge_providers::Catalogue,
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
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// Bearer token of the admin API.
    pub token: Option<SecretString>,
    /// Limits and TLS of the admin listener.
    pub listener: hookbridge_ingress::serve::ListenerSettings,
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
        let bus = match bus::build_bus(&raw.bus) {
            Ok(options) => Some(options),
            Err(errs) => {
                errs.into_iter().for_each(|(p, m)| problem(p, m));
                None
            }
        };
        if raw.ingress.max_body_bytes == 0 {
            problem("ingress.max_body_bytes".into(), "must be greater than 0".into());
        }
        let (ingress_listener, ingress_problems) = listener::ingress(&raw.ingress);
        let (admin_listener, admin_problems) = listener::admin(&raw.admin);
        ingress_problems.into_iter().chain(admin_problems).for_each(|(p, m)| problem(p, m));
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
        let record_attempts = match &raw.relay.record_attempts {
            raw::BoolOrName::Bool(true) => RecordAttempts::All,
            raw::BoolOrName::Bool(false) => RecordAttempts::Off,
            raw::BoolOrName::Name(name) => RecordAttempts::parse(name).unwrap_or_else(|e| {
                problem("relay.record_attempts".into(), e);
                RecordAttempts::All
            }),
        };
        if raw.ingress.publish_timeout.is_zero() {
            problem("ingress.publish_timeout".into(), "must be greater than 0".into());
        }
        if raw.ingress.listen == raw.admin.listen && raw.ingress.listen.port() != 0 {
            problem("admin.listen".into(), "must differ from ingress.listen".into());
        }
        if let Err(e) = raw.log.level.parse::<LevelCheck>() {
            problem("log.level".into(), e);
        }

        let catalogue = match hookbridge_providers::Catalogue::load(&raw.ingress.provider_dirs) {
            Ok(c) => c,
            Err(errs) => {
                for e in errs {
                    let file = e.file.as_ref().map(|f| f.display().to_string()).unwrap_or_default();
                    let key = if e.key.is_empty() { String::new() } else { format!(" {}", e.key) };
                    problem(format!("ingress.provider_dirs: {file}{key}"), e.message);
                }
                hookbridge_providers::builtin_catalogue().clone()
            }
        };
        let mut names = HashSet::new();
        let mut sources = Vec::new();
        for (i, source) in raw.ingress.sources.iter().enumerate() {
            let at = format!("ingress.sources[{i}]");
            if !names.insert(source.name.as_str()) {
                problem(format!("{at}.name"), format!("`{}` is used by another source", source.name));
            }
            match source::build_source(source, &at, &catalogue) {
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
            match relay::build_subscriber(subscriber, &raw.relay, &at, &catalogue) {
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
                problem("admin.token".into(), e.to_string());
                None
            }
        };

        let streams = raw.streams.as_ref().and_then(|raw_streams| {
            let others = [("ingress.listen", raw.ingress.listen), ("admin.listen", raw.admin.listen)];
            streams::build(raw_streams, &others).map_err(|errs| errs.into_iter().for_each(|(p, m)| problem(p, m))).ok()
        });

        let Some(bus) = bus.filter(|_| problems.is_empty()) else {
            return Err(ConfigError { problems });
        };
        Ok(Self {
            bus,
            topic_prefix: raw.bus.topic_prefix.clone(),
            ingress: IngressSettings {
                listen: raw.ingress.listen,
                listener: ingress_listener,
                max_body_bytes: raw.ingress.max_body_bytes,
                body_read_timeout: raw.ingress.body_read_timeout,
                max_in_flight: raw.ingress.max_in_flight,
                publish_timeout: raw.ingress.publish_timeout,
                shutdown_grace: raw.ingress.shutdown_grace,
                sources,
            },
            relay: RelaySettings {
                topic_prefix: raw.bus.topic_prefix.clone(),
                subscribers,
                status_interval: raw.relay.status_interval,
                record_attempts,
            },
            relay_shutdown_grace: raw.relay.shutdown_grace,
            admin: AdminSettings { listen: raw.admin.listen, token, listener: admin_listener },
            log: LogSettings { format: raw.log.format, level: raw.log.level },
            tracing: TracingSettings {
                otlp_traces_url: raw.tracing.otlp_endpoint.map(|e| format!("{}/v1/traces", e.trim_end_matches('/'))),
                otlp_json: raw.tracing.otlp_protocol == "http/json",
                service_name: raw.tracing.service_name,
            },
            streams,
            providers: catalogue,
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
        let token = partial
            .admin
            .token
            .map(|t| t.resolve())
            .transpose()
            .map_err(|e| ConfigError::one("admin.token", e.to_string()))?;
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

type Problems = Vec<(String, String)>;

#[cfg(test)]
mod tests;
