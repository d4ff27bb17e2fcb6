//! What a connection is doing, for its deadlines: idle between requests,
//! reading a request head, or busy with requests. The IO wrapper sees the
//! first byte of a head; the service sees the head complete and the answer.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::ListenerSettings;

/// Why the server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// A request head was not complete in time.
    HeaderTimeout,
    /// No request came for the idle timeout.
    Idle,
    /// The TLS handshake failed or did not finish in time.
    Handshake,
}

impl Closed {
    pub const ALL: [Self; 3] = [Self::HeaderTimeout, Self::Idle, Self::Handshake];

    /// The metric label.
    pub fn code(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::Idle => "idle",
            Self::Handshake => "tls_handshake",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request since then.
    Idle(Instant),
    /// A request head started arriving then.
    Head(Instant),
    /// This many requests are being answered.
    Busy(usize),
}

#[derive(Debug)]
struct State {
    phase: Mutex<Phase>,
    changed: Notify,
}

/// The connection's phase, shared by its IO, its service and its watchdog.
#[derive(Debug, Clone)]
pub(super) struct Watch(Arc<State>);

pub(super) enum Verdict {
    Fine,
    Idle,
    HeaderTimeout,
}

impl Watch {
    pub(super) fn new() -> Self {
        Self(Arc::new(State { phase: Mutex::new(Phase::Idle(Instant::now())), changed: Notify::new() }))
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.0.phase.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn wrap<S>(&self, inner: S) -> Watched<S> {
        Watched { inner, watch: self.clone() }
    }

    /// Marks a request being answered until the guard drops.
    pub(super) fn busy(&self) -> Busy {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Idle(_) | Phase::Head(_) => Phase::Busy(1),
        };
        Busy(self.clone())
    }

    /// Wakes when a head starts arriving (its deadline is sooner).
    pub(super) async fn changed(&self) {
        self.0.changed.notified().await;
    }

    /// When the watchdog should look next.
    pub(super) fn deadline(&self, settings: &ListenerSettings) -> Instant {
        match *self.phase() {
            Phase::Idle(since) => since + settings.idle_timeout,
            Phase::Head(since) => since + settings.header_read_timeout,
            // Looked at again once the requests are answered.
            Phase::Busy(_) => Instant::now() + settings.idle_timeout.min(settings.header_read_timeout),
        }
    }

    pub(super) fn verdict(&self, settings: &ListenerSettings) -> Verdict {
        let now = Instant::now();
        match *self.phase() {
            Phase::Idle(since) if now >= since + settings.idle_timeout => Verdict::Idle,
            Phase::Head(since) if now >= since + settings.header_read_timeout => Verdict::HeaderTimeout,
            _ => Verdict::Fine,
        }
    }

    fn read_some(&self) {
        let mut phase = self.phase();
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now());
            drop(phase);
            self.0.changed.notify_one();
        }
    }
}

/// Ends a request's busy mark.
pub(super) struct Busy(Watch);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut phase = self.0.phase();
        *phase = match *phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        };
    }
}

/// A stream that tells its [`Watch`] when bytes arrive.
#[derive(Debug)]
pub(super) struct Watched<S> {
    inner: S,
    watch: Watch,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.read_some();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings() -> ListenerSettings {
        ListenerSettings {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..ListenerSettings::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_head_has_the_shorter_deadline_and_a_request_clears_it() {
        let watch = Watch::new();
        let s = settings();
        let start = Instant::now();
        assert_eq!(watch.deadline(&s), start + Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(30)).await;
        watch.read_some();
        assert_eq!(watch.deadline(&s), start + Duration::from_secs(40));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(matches!(watch.verdict(&s), Verdict::HeaderTimeout));
        let busy = watch.busy();
        assert!(matches!(watch.verdict(&s), Verdict::Fine));
        tokio::time::advance(Duration::from_secs(100)).await;
        assert!(matches!(watch.verdict(&s), Verdict::Fine), "a slow answer is not idle");
        drop(busy);
        assert_eq!(watch.deadline(&s), Instant::now() + Duration::from_secs(60));
        // Bytes of the body or of the next head while busy do not start a head.
        let busy = watch.busy();
        watch.read_some();
        drop(busy);
        assert!(matches!(watch.verdict(&s), Verdict::Fine));
    }
}
