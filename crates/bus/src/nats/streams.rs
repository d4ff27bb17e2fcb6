//! The four streams a NATS bus keeps — events, dead letters, shared
//! state, the delivery record — created or updated when `manage_stream` is
//! on, checked otherwise.

use async_nats::jetstream::{self, stream};

use super::{NatsOptions, Storage};
use crate::{Error, Result};

/// The names of the streams beside the events'.
pub(super) struct Names {
    pub(super) dlq: String,
    pub(super) state: String,
    pub(super) attempts: String,
}

/// Makes sure the streams exist.
pub(super) async fn ensure(js: &jetstream::Context, options: &NatsOptions) -> Result<Names> {
    let subjects = vec![format!("{}.>", options.topic_prefix)];
    let dlq = format!("{}_DLQ", options.stream);
    let dlq_subjects = vec![format!("{}-dlq.>", options.topic_prefix)];
    let storage = match options.storage {
        Storage::File => stream::StorageType::File,
        Storage::Memory => stream::StorageType::Memory,
    };
    let main = stream::Config {
        name: options.stream.clone(),
        subjects: subjects.clone(),
        storage,
        num_replicas: options.replicas,
        max_age: options.max_age.unwrap_or_default(),
        max_bytes: options.max_bytes.unwrap_or(-1),
        // JetStream refuses a duplicate window longer than the retention.
        duplicate_window: options.max_age.map_or(options.duplicate_window, |age| options.duplicate_window.min(age)),
        ..Default::default()
    };
    let dead = stream::Config {
        name: dlq.clone(),
        subjects: dlq_subjects,
        storage,
        num_replicas: options.replicas,
        ..Default::default()
    };
    let state = format!("{}_STATE", options.stream);
    let state_config = stream::Config {
        name: state.clone(),
        subjects: vec![format!("{}-state.>", options.topic_prefix)],
        storage,
        num_replicas: options.replicas,
        max_messages_per_subject: 1,
        ..Default::default()
    };
    let attempts = format!("{}_ATTEMPTS", options.stream);
    let attempts_config = stream::Config {
        name: attempts.clone(),
        subjects: vec![format!("{}-attempts.>", options.topic_prefix)],
        storage,
        num_replicas: options.replicas,
        max_age: options.attempts_max_age,
        ..Default::default()
    };
    if options.manage_stream {
        for config in [main, dead, state_config, attempts_config] {
            match js.get_stream(&config.name).await {
                Ok(_) => {
                    js.update_stream(config.clone())
                        .await
                        .map_err(|e| Error::Invalid(format!("cannot update stream {}: {e}", config.name)))?;
                }
                Err(_) => {
                    js.create_stream(config.clone())
                        .await
                        .map_err(|e| Error::Invalid(format!("cannot create stream {}: {e}", config.name)))?;
                }
            }
        }
    } else {
        let needed = [
            (&options.stream, format!("{}.>", options.topic_prefix)),
            (&dlq, format!("{}-dlq.>", options.topic_prefix)),
            (&state, format!("{}-state.> (max one message per subject)", options.topic_prefix)),
            (&attempts, format!("{}-attempts.> (max age: the attempts' retention)", options.topic_prefix)),
        ];
        for (name, subjects) in needed {
            js.get_stream(name).await.map_err(|_| {
                Error::Invalid(format!(
                    "stream {name} does not exist and bus.nats.manage_stream is false: create it with subjects {subjects}"
                ))
            })?;
        }
    }
    Ok(Names { dlq, state, attempts })
}
