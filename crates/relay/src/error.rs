/// Errors of the relay's control operations (admin API and CLI).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no subscriber is named `{0}`")]
    UnknownSubscriber(String),
    #[error("no replay has the id `{0}`")]
    UnknownReplay(String),
    #[error("no delivery attempt of the event `{0}` is recorded (within the bus's attempts_retention)")]
    UnknownEvent(String),
    #[error("subscriber `{0}` is disabled in the configuration; change `enabled` there")]
    DisabledInConfig(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Bus(#[from] hookbridge_bus::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
