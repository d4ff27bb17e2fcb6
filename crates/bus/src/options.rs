//! Which backend, with its options, and the one way to open it.

use std::sync::Arc;

use crate::embedded::{EmbeddedBus, EmbeddedOptions};
use crate::kafka::{KafkaBus, KafkaOptions};
use crate::nats::{NatsBus, NatsOptions};
use crate::{Bus, Result};

/// A backend and everything it needs: a Kafka bus cannot be asked for
/// without its Kafka options.
#[derive(Debug, Clone)]
pub enum BusOptions {
    Embedded(EmbeddedOptions),
    Nats(NatsOptions),
    Kafka(KafkaOptions),
}

impl BusOptions {
    /// The backend's name as the configuration spells it.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::Nats(_) => "nats",
            Self::Kafka(_) => "kafka",
        }
    }

    /// Where the bus is, for logs and `hookbridge check`: a path, the NATS
    /// servers and stream, or the Kafka brokers and topic prefix.
    pub fn location(&self) -> String {
        match self {
            Self::Embedded(o) => format!("path {}", o.path.display()),
            Self::Nats(o) => format!("{}, stream {}", o.urls.join(","), o.stream),
            Self::Kafka(o) => format!("brokers {}", o.brokers.join(",")),
        }
    }
}

/// Opens the bus `options` describe.
///
/// # Errors
/// The backend cannot be opened or reached ([`crate::Error::Unavailable`]),
/// or its options are refused ([`crate::Error::Invalid`]).
pub async fn open(options: &BusOptions) -> Result<Arc<dyn Bus>> {
    Ok(match options {
        BusOptions::Embedded(o) => {
            let o = o.clone();
            // Opening replays the log from disk: off the async workers.
            Arc::new(
                tokio::task::spawn_blocking(move || EmbeddedBus::open(o))
                    .await
                    .map_err(|e| crate::Error::Unavailable(format!("opening the embedded bus stopped: {e}")))??,
            )
        }
        BusOptions::Nats(o) => Arc::new(NatsBus::open(o.clone()).await?),
        BusOptions::Kafka(o) => Arc::new(KafkaBus::open(o.clone()).await?),
    })
}
