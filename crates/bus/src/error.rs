/// Bus errors, by what the caller should do next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The backend cannot take the operation now; retry later.
    #[error("the bus is unavailable: {0}")]
    Unavailable(String),
    /// The bus was shut down in this process.
    #[error("the bus is closed")]
    Closed,
    /// Local storage failed; the operation did not take effect.
    #[error("bus storage failed: {0}")]
    Storage(String),
    /// The request itself is wrong; retrying will not help.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
