//! One client's reader: a task that reads its tail into a bounded buffer,
//! and ends the stream (saying why) when the buffer stays full (the client
//! takes nothing) for the stall timeout, the bus cannot be read, or the
//! process stops. It stops by itself when the client
//! goes away (the buffer's receiver is dropped).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hookbridge_bus::{Tail, Tailed};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// One frame ready for the client, and when its event was published.
#[derive(Debug)]
pub(crate) struct Out {
    pub frame: Bytes,
    pub published_at: Option<DateTime<Utc>>,
}

/// Why the server ended a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The client's buffer filled up.
    Slow,
    /// The bus could not be read.
    Unavailable,
    Shutdown,
}

impl End {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Slow => "slow",
            Self::Unavailable => "unavailable",
            Self::Shutdown => "shutdown",
        }
    }

    pub(crate) fn message(self, buffer: usize) -> String {
        match self {
            Self::Slow => format!(
                "this client left {buffer} events unread for too long and was disconnected; reconnect with the last event's id to resume"
            ),
            Self::Unavailable => "the bus cannot be read now; reconnect with the last event's id to resume".into(),
            Self::Shutdown => "this replica is shutting down; reconnect with the last event's id to resume".into(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Pump {
    pub frames: mpsc::Receiver<Out>,
    pub end: oneshot::Receiver<End>,
}

/// Starts reading `tail`, formatting each item with `format`.
pub(crate) fn spawn(
    mut tail: Box<dyn Tail>,
    format: fn(&Tailed) -> Bytes,
    buffer: usize,
    stall: std::time::Duration,
    shutdown: CancellationToken,
    on_end: impl FnOnce(End) + Send + 'static,
) -> Pump {
    let (tx, frames) = mpsc::channel(buffer.max(1));
    let (end_tx, end) = oneshot::channel();
    tokio::spawn(async move {
        let end = loop {
            let item = tokio::select! {
                () = shutdown.cancelled() => break Some(End::Shutdown),
                () = tx.closed() => break None,
                item = tail.next() => item,
            };
            let item = match item {
                Ok(item) => item,
                Err(error) => {
                    tracing::warn!(%error, "a stream's bus reader failed; ending the stream");
                    break Some(End::Unavailable);
                }
            };
            let published_at = match &item {
                Tailed::Event { published_at, .. } => Some(*published_at),
                Tailed::Resync { .. } => None,
            };
            // A full buffer holds this reader back (its own tail, nobody
            // else's), until no room opens for `stall`: then the client is
            // taking nothing, and is cut off.
            let out = Out { frame: format(&item), published_at };
            tokio::select! {
                () = shutdown.cancelled() => break Some(End::Shutdown),
                sent = tokio::time::timeout(stall, tx.send(out)) => match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break None,
                    Err(_) => break Some(End::Slow),
                },
            }
        };
        if let Some(end) = end {
            on_end(end);
            let _ = end_tx.send(end);
        }
    });
    Pump { frames, end }
}
