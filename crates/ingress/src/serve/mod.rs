//! Serving a router on a listener that faces the internet: HTTP/1.1 over
//! TCP or TLS, with a bounded number of connections, a deadline for each
//! request head, a bound on idle keep-alive connections and on header size.
//!
//! | limit | answer |
//! |---|---|
//! | more than `max_connections` open | `503` + `Retry-After`, then closed, before anything is read |
//! | a request head not complete within `header_read_timeout` | connection closed |
//! | no request for `idle_timeout` on a keep-alive connection | connection closed |
//! | headers larger than `max_header_bytes` | `431` |
//!
//! On shutdown the listener stops accepting, idle connections close, and
//! requests in flight finish.

mod limits;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

pub use limits::Closed;
use limits::{Verdict, Watch};
pub use tls::{TlsFiles, TlsReloader};

/// The limits of one listener. The defaults suit the webhook listener.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// From the first byte of a request to its last header line.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// The request line and headers together; larger is answered `431`.
    pub max_header_bytes: usize,
    /// Open connections; the next one is answered `503` and closed.
    pub max_connections: usize,
    /// Certificate and key to serve TLS with; plain HTTP without.
    pub tls: Option<TlsFiles>,
}

impl ListenerSettings {
    /// The admin listener's: probes and operators, not the internet.
    pub fn admin() -> Self {
        Self { max_connections: 256, ..Self::default() }
    }
}

impl Default for ListenerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
            tls: None,
        }
    }
}

/// Connections of one listener, by what happened to them.
#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    open: IntGauge,
    refused: IntCounterVec,
    closed: IntCounterVec,
}

impl ListenerMetrics {
    /// Registers `hookbridge_<name>_connections` (open now),
    /// `hookbridge_<name>_connections_refused_total{reason}` and
    /// `hookbridge_<name>_connections_closed_total{reason}`.
    ///
    /// # Errors
    /// When they are already registered there.
    pub fn register(registry: &Registry, name: &str) -> prometheus::Result<Self> {
        let open = IntGauge::new(format!("hookbridge_{name}_connections"), "Connections open now.")?;
        let refused = IntCounterVec::new(
            Opts::new(
                format!("hookbridge_{name}_connections_refused_total"),
                "Connections answered 503 and closed before reading, by reason.",
            ),
            &["reason"],
        )?;
        let closed = IntCounterVec::new(
            Opts::new(
                format!("hookbridge_{name}_connections_closed_total"),
                "Connections closed by the server for a limit, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(closed.clone()))?;
        refused.with_label_values(&["max_connections"]);
        for reason in Closed::ALL {
            closed.with_label_values(&[reason.code()]);
        }
        Ok(Self { open, refused, closed })
    }
}

/// How many refusals may be written at once; beyond it, a connection over
/// the limit is closed without an answer.
const MAX_REFUSING: usize = 256;
/// How long a refusal may take to write and drain.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nconnection: close\r\n\
content-type: application/json\r\ncontent-length: 76\r\n\r\n\
{\"error\":\"overloaded\",\"message\":\"too many connections; retry in a second\"}\n";

/// Serves `router` on `listener` (over TLS with `tls`, which the caller
/// loaded and may reload) until `shutdown` fires, then lets requests in
/// flight finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ListenerSettings,
    tls: Option<Arc<TlsReloader>>,
    metrics: Option<ListenerMetrics>,
    shutdown: CancellationToken,
) {
    let settings = Arc::new(settings);
    let connections = Arc::new(Semaphore::new(settings.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let tracker = TaskTracker::new();
    if let Some(tls) = &tls {
        tracker.spawn(tls.clone().watch(shutdown.clone()));
    }
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors (or a connection reset before it
                // was accepted): wait a little instead of spinning.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            if let Some(metrics) = &metrics {
                metrics.refused.with_label_values(&["max_connections"]).inc();
            }
            if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                tracker.spawn(async move {
                    refuse(stream).await;
                    drop(refusal);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (router, settings, tls, metrics, shutdown) =
            (router.clone(), settings.clone(), tls.clone(), metrics.clone(), shutdown.clone());
        tracker.spawn(async move {
            if let Some(metrics) = &metrics {
                metrics.open.inc();
            }
            let closed = match tls {
                None => connection(stream, peer, router, &settings, shutdown).await,
                Some(tls) => match tls.accept(stream, settings.header_read_timeout).await {
                    Ok(stream) => connection(stream, peer, router, &settings, shutdown).await,
                    Err(error) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        Some(Closed::Handshake)
                    }
                },
            };
            if let Some(metrics) = &metrics {
                metrics.open.dec();
                if let Some(reason) = closed {
                    metrics.closed.with_label_values(&[reason.code()]).inc();
                }
            }
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Answers a connection over the limit before reading its request, then
/// drains what the client already sent for a moment: closing with unread
/// bytes would reset the connection and could discard the answer.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSAL_WRITE, async {
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    })
    .await;
}

/// The address a request's connection comes from (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// One connection, until it ends or a limit closes it (the reason).
async fn connection<S>(
    stream: S,
    peer: std::net::SocketAddr,
    router: Router,
    settings: &ListenerSettings,
    shutdown: CancellationToken,
) -> Option<Closed>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watch = Watch::new();
    let io = TokioIo::new(watch.wrap(stream));
    let requests = watch.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(Peer(peer));
        let busy = requests.busy();
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await;
            drop(busy);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).max_header_size(settings.max_header_bytes).max_buf_size(
        // The read buffer must hold a whole head; hyper's floor is 8 KiB.
        settings.max_header_bytes.max(8192) + 1024,
    );
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let deadline = watch.deadline(settings);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return None;
            }
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = watch.changed() => {}
            () = tokio::time::sleep_until(deadline) => match watch.verdict(settings) {
                Verdict::Fine => {}
                Verdict::Idle => {
                    // Nothing in flight: closing loses nothing.
                    return Some(Closed::Idle);
                }
                Verdict::HeaderTimeout => return Some(Closed::HeaderTimeout),
            },
        }
    }
}
