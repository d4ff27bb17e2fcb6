//! The load generator: N keep-alive HTTP/1.1 connections, each sending the
//! next pre-signed request as soon as the previous answer arrived.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::Args;

#[derive(Debug)]
pub struct Request {
    pub path: String,
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Request {
    /// This request as a POST to its own path, or to `path`.
    pub fn post(&self, path: Option<&str>) -> hyper::Request<Full<Bytes>> {
        let mut request = hyper::Request::post(path.unwrap_or(&self.path))
            .header("host", "127.0.0.1")
            .header("content-type", self.content_type);
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        request.body(Full::new(self.body.clone())).expect("valid request")
    }
}

/// A keep-alive HTTP/1 connection to `addr`, its driver spawned.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Ticks every `interval`, the `index`-th of `of` senders offset by its
/// share of one interval so they do not send together; a sender that falls
/// behind catches up in a burst (open loop).
pub fn pacer(interval: Duration, index: usize, of: usize) -> tokio::time::Interval {
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + interval.mul_f64(index as f64 / of as f64), interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    tick
}

#[derive(Debug)]
pub struct Report {
    pub name: String,
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
}

impl Report {
    pub fn new(name: &str, histogram: &Histogram<u64>, errors: u64, seconds: f64) -> Self {
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        Self {
            name: name.to_owned(),
            rate: histogram.len() as f64 / seconds,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            max_ms: histogram.max() as f64 / 1000.0,
            errors,
        }
    }
}

/// Latencies in microseconds, up to one minute.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Loads `addr` with `requests`; `cycle` reuses them (only for servers that
/// do not deduplicate, like the ceiling).
pub async fn run(
    name: &str,
    addr: SocketAddr,
    requests: &Arc<Vec<Request>>,
    cycle: bool,
    args: &Args,
) -> anyhow::Result<Report> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let measure_from = started + args.warmup;
    let deadline = measure_from + args.duration;
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (requests, next) = (requests.clone(), next.clone());
        let mut sender = connect(addr).await?;
        tasks.push(tokio::spawn(async move {
            let mut histogram = histogram();
            let mut errors = 0u64;
            loop {
                let mut i = next.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                if cycle {
                    i %= requests.len();
                }
                if i >= requests.len() || sent >= deadline {
                    break;
                }
                let ok = match sender.send_request(requests[i].post(None)).await {
                    Ok(response) => {
                        let status = response.status();
                        response.into_body().collect().await.is_ok() && status.is_success()
                    }
                    Err(_) => false,
                };
                if sent >= measure_from {
                    if ok {
                        histogram.saturating_record(sent.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
                if !ok && sender.ready().await.is_err() {
                    break;
                }
            }
            (histogram, errors)
        }));
    }
    let mut merged = histogram();
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await?;
        merged.add(&h)?;
        errors += e;
    }
    let ended = Instant::now().min(deadline);
    if !cycle && next.load(Ordering::Relaxed) >= requests.len() {
        eprintln!("{name}: ran out of pre-signed requests; the rate is over the shorter time");
    }
    let seconds = (ended - measure_from).as_secs_f64();
    Ok(Report::new(name, &merged, errors, seconds))
}

/// What a paced run sent: each accepted event's id and the wall-clock time
/// (ns since the epoch) its request was sent.
#[derive(Debug, Default)]
pub struct Paced {
    pub ids: std::collections::HashMap<String, u64>,
    pub errors: u64,
}

/// Sends `requests` to `addr` at `rate` per second, spread over
/// `connections` keep-alive connections (open loop: a connection that falls
/// behind catches up in a burst).
pub async fn paced(
    addr: SocketAddr,
    requests: &Arc<Vec<Request>>,
    rate: f64,
    connections: usize,
) -> anyhow::Result<Paced> {
    let connections = connections.clamp(1, requests.len().max(1));
    let interval = Duration::from_secs_f64(connections as f64 / rate.max(1.0));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let requests = requests.clone();
        let mut sender = connect(addr).await?;
        tasks.push(tokio::spawn(async move {
            let mut tick = pacer(interval, c, connections);
            let mut sent = Paced::default();
            for r in requests.iter().skip(c).step_by(connections) {
                tick.tick().await;
                let request = r.post(None);
                let at = crate::relay::wall_ns();
                let answer = match sender.send_request(request).await {
                    Ok(response) if response.status().is_success() => response.into_body().collect().await.ok(),
                    _ => None,
                };
                match answer.and_then(|body| json_id(&body.to_bytes())) {
                    Some(id) => {
                        sent.ids.insert(id, at);
                    }
                    None => sent.errors += 1,
                }
            }
            sent
        }));
    }
    let mut all = Paced::default();
    for task in tasks {
        let sent = task.await?;
        all.ids.extend(sent.ids);
        all.errors += sent.errors;
    }
    Ok(all)
}

/// The first `"id":"…"` of a JSON text.
pub fn json_id(json: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(json).ok()?;
    let start = text.find("\"id\":\"")? + 6;
    let end = text[start..].find('"')? + start;
    Some(text[start..end].to_owned())
}
