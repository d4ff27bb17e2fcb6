//! The three streams a NATS bus keeps — events, dead letters, shared
//! state — created or updated when `manage_stream` is on, checked otherwise.

use async_nats::jetstream::{self, stream};

use super::{NatsOptions, Storage};
use crate::{Error, Result};

/// Makes sure the streams exist; the names of the dead-letter and state streams.
pub(super) async fn ensure(js: &jetstream::Context, options: &NatsOptions) -> Result<(String, String)> {
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
    if options.manage_stream {
        for config in [main, dead, state_config] {
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
        ];
        for (name, subjects) in needed {
            js.get_stream(name).await.map_err(|_| {
                Error::Invalid(format!(
                    "stream {name} does not exist and bus.nats.manage_stream is false: create it with subjects {subjects}"
                ))
            })?;
        }
    }
    Ok((dlq, state))
}
