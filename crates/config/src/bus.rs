//! `[bus]` into the bus's [`BusOptions`]: only the chosen backend's
//! options are built, so a backend never lacks its own.

use hookbridge_bus::BusOptions;
use hookbridge_bus::embedded::{EmbeddedOptions, Retention};
use hookbridge_bus::kafka::KafkaOptions;
use hookbridge_bus::nats::{NatsAuth, NatsOptions, NatsTls, Storage};
use secrecy::SecretString;

use crate::Problems;
use crate::raw::{self, Backend};
use crate::secret::SecretRef;

pub(crate) fn build_bus(raw: &raw::BusConfig) -> Result<BusOptions, Problems> {
    if raw.attempts_retention < std::time::Duration::from_secs(60) {
        return Err(vec![("bus.attempts_retention".into(), "must be at least 1m".into())]);
    }
    let keep = raw.attempts_retention;
    match raw.backend {
        Backend::Embedded => build_embedded(&raw.embedded).map(|mut o| {
            o.retention.attempts_max_age = keep;
            BusOptions::Embedded(o)
        }),
        Backend::Nats => build_nats(&raw.nats, &raw.topic_prefix)
            .map(|o| BusOptions::Nats(hookbridge_bus::nats::NatsOptions { attempts_max_age: keep, ..o })),
        Backend::Kafka => build_kafka(&raw.kafka, &raw.topic_prefix).map(|mut o| {
            o.attempts_retention = keep;
            BusOptions::Kafka(o)
        }),
    }
}

fn build_embedded(raw: &raw::EmbeddedConfig) -> Result<EmbeddedOptions, Problems> {
    if raw.path.as_os_str().is_empty() {
        return Err(vec![("bus.embedded.path".into(), "must name a directory".into())]);
    }
    Ok(EmbeddedOptions {
        path: raw.path.clone(),
        retention: Retention {
            max_age: raw.retention.max_age,
            max_bytes: raw.retention.max_bytes,
            dedup_window: raw.dedup_window,
            attempts_max_age: hookbridge_bus::attempts::DEFAULT_RETENTION,
        },
        maintenance_interval: raw.maintenance_interval,
    })
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
    if let Some(id) = &raw.instance_id {
        // Kafka's own rule for group.instance.id.
        if id.is_empty() || id.len() > 249 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            problems.push((
                "bus.kafka.instance_id".into(),
                format!("`{id}` must be 1 to 249 letters, digits, `.`, `_` and `-`"),
            ));
        }
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
        if key == "group.instance.id" {
            problems.push((path, "set `bus.kafka.instance_id` instead (each relay its own)".into()));
            continue;
        }
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
                    problems.push((path, e.to_string()));
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
    options.instance_id = raw.instance_id.clone();
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
                problems.push((path.into(), e.to_string()));
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
        attempts_max_age: hookbridge_bus::attempts::DEFAULT_RETENTION,
    })
}
