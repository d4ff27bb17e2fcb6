//! The streams benchmark: N Server-Sent Events clients on a real
//! `hookbridge run` (its streams listener), each receiving every event,
//! while signed webhooks arrive at a paced rate. Reported: client-events/s
//! (events written to all clients per second), whether every client got
//! every event, and the latency from the webhook's 200 to a client reading
//! the event (sampled on up to 10 clients). Next to it, the same run's
//! ceiling: a bare fan-out server that broadcasts each POSTed body to its
//! SSE clients from memory (no bus, no tokens, no cursors).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::load::{Request, histogram, json_id};
use crate::{Args, Broker, Server, signed_requests};

const TOKEN: &str = "bench-stream-token-0123456789";
/// Clients whose every receipt is timed.
const SAMPLED: usize = 10;

struct Outcome {
    name: String,
    clients: usize,
    offered: u64,
    sent: u64,
    client_events_per_s: f64,
    complete: bool,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

pub async fn run(args: &Args, broker: &Broker, clients: &[usize]) -> anyhow::Result<()> {
    println!(
        "hookbridge streams benchmark ({}): {clients:?} SSE clients, {:?} per scenario, loopback, {} CPUs",
        args.backend,
        args.duration,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let mut outcomes = Vec::new();
    for (i, &n) in clients.iter().enumerate() {
        let rate = *args.streams_rate.get(i).or(args.streams_rate.last()).context("give --streams-rate")?;
        let count = (rate as f64 * args.duration.as_secs_f64()).ceil() as usize;
        let requests = signed_requests("mailpipe", "email.sent", count);

        let mut ceiling = fanout()?;
        let addr = ceiling.addr;
        outcomes.push(scenario("ceiling: bare SSE fan-out", addr, addr, "/publish", n, rate, &requests).await?);
        ceiling.stop();

        let dir = tempfile::tempdir()?;
        let extra = format!(
            "[streams]\nlisten = \"127.0.0.1:0\"\nmax_clients = 100000\n\
             [[streams.tokens]]\nname = \"bench\"\ntoken = \"{TOKEN}\"\nevents = [\"*\"]\n"
        );
        let mut server = Server::hookbridge_with(&args.hookbridge, dir.path(), broker, &extra)?;
        let streams = server.streams.context("hookbridge reported no streams listener")?;
        let webhook = server.addr;
        outcomes.push(scenario("hookbridge: SSE", streams, webhook, "", n, rate, &requests).await?);
        server.stop();
    }
    println!();
    println!(
        "{:<26} {:>7} {:>9} {:>7} {:>14} {:>9} {:>8} {:>8} {:>8}",
        "scenario", "clients", "offered/s", "sent", "client-ev/s", "complete", "p50 ms", "p99 ms", "max ms"
    );
    for o in &outcomes {
        println!(
            "{:<26} {:>7} {:>9} {:>7} {:>14.0} {:>9} {:>8.2} {:>8.2} {:>8.2}",
            o.name, o.clients, o.offered, o.sent, o.client_events_per_s, o.complete, o.p50_ms, o.p99_ms, o.max_ms
        );
    }
    Ok(())
}

/// The fan-out ceiling server, started as a child process.
fn fanout() -> anyhow::Result<Server> {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--fanout-server")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the fan-out server")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    Ok(Server { child, addr: line.trim().parse().context("fan-out server address")?, admin: None, streams: None })
}

/// One scenario: `n` clients on `streams`, webhooks POSTed to `webhook`
/// (at `path`, or each request's own path) at `rate` per second.
async fn scenario(
    name: &str,
    streams: SocketAddr,
    webhook: SocketAddr,
    path: &str,
    n: usize,
    rate: u64,
    requests: &Arc<Vec<Request>>,
) -> anyhow::Result<Outcome> {
    let received = Arc::new(AtomicU64::new(0));
    let receipts: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let mut readers = Vec::new();
    for i in 0..n {
        readers.push(open_client(streams, i < SAMPLED, received.clone(), receipts.clone()).await?);
    }
    let answered: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let started = Instant::now();
    // Paced senders on 8 connections.
    let senders = 8usize;
    let interval = Duration::from_secs_f64(senders as f64 / rate as f64);
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (requests, answered, path) = (requests.clone(), answered.clone(), path.to_owned());
        let mut sender = crate::load::connect(webhook).await?;
        tasks.push(tokio::spawn(async move {
            let mut tick = crate::load::pacer(interval, s, senders);
            for r in requests.iter().skip(s).step_by(senders) {
                tick.tick().await;
                let request = r.post((!path.is_empty()).then_some(path.as_str()));
                let Ok(response) = sender.send_request(request).await else { continue };
                let ok = response.status().is_success();
                let Ok(body) = response.into_body().collect().await else { continue };
                let at = Instant::now();
                if ok && let Some(id) = json_id(&body.to_bytes()) {
                    answered.lock().expect("answered").insert(id, at);
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let sent = answered.lock().expect("answered").len() as u64;
    let expected = sent * n as u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let got = received.load(Ordering::Relaxed);
    for reader in readers {
        reader.abort();
    }
    let answered = answered.lock().expect("answered");
    let mut latencies = histogram();
    for (id, at) in receipts.lock().expect("receipts").iter() {
        if let Some(ok) = answered.get(id) {
            latencies.saturating_record(at.saturating_duration_since(*ok).as_micros().max(1) as u64);
        }
    }
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    let outcome = Outcome {
        name: name.to_owned(),
        clients: n,
        offered: rate,
        sent,
        client_events_per_s: got as f64 / elapsed,
        complete: got >= expected,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: latencies.max() as f64 / 1000.0,
    };
    eprintln!("{name}, {n} clients: {got}/{expected} client-events in {elapsed:.1}s");
    Ok(outcome)
}

/// Opens one SSE client; counts every event frame, and for a sampled client
/// records each event's id and arrival time.
async fn open_client(
    streams: SocketAddr,
    sampled: bool,
    received: Arc<AtomicU64>,
    receipts: Arc<Mutex<Vec<(String, Instant)>>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let stream = tokio::net::TcpStream::connect(streams).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/streams/events")
        .header("host", "127.0.0.1")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    anyhow::ensure!(response.status().is_success(), "a stream was refused: {}", response.status());
    let mut body = response.into_body();
    Ok(tokio::spawn(async move {
        let marker = b"\nevent: ";
        let mut carry: Vec<u8> = Vec::new();
        let mut buffer = String::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(chunk) = frame.into_data() else { continue };
            let now = Instant::now();
            carry.extend_from_slice(&chunk);
            let count = carry.windows(marker.len()).filter(|w| w == marker).count() as u64;
            received.fetch_add(count, Ordering::Relaxed);
            let keep = carry.len().min(marker.len() - 1);
            carry.drain(..carry.len() - keep);
            if sampled {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                let mut found = Vec::new();
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: "))
                        && let Some(id) = json_id(data.as_bytes())
                    {
                        found.push((id, now));
                    }
                }
                receipts.lock().expect("receipts").extend(found);
            }
        }
    }))
}

/// The ceiling: `POST /publish` answers `{"id":"c<n>"}` once the body is
/// handed to every connected `GET /streams/events` client as an SSE frame.
pub fn fanout_server() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let (tx, _) = tokio::sync::broadcast::channel::<Bytes>(65_536);
        let next = Arc::new(AtomicU64::new(0));
        let publish = {
            let tx = tx.clone();
            move |body: Bytes| {
                let (tx, next) = (tx.clone(), next.clone());
                async move {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let data = format!("{{\"id\":\"c{n}\",\"original\":{}}}", String::from_utf8_lossy(&body));
                    let _ = tx.send(Bytes::from(format!("id: {n}\nevent: email.delivered\ndata: {data}\n\n")));
                    format!("{{\"status\":\"accepted\",\"id\":\"c{n}\"}}")
                }
            }
        };
        let subscribe = move || {
            let rx = tx.subscribe();
            async move {
                let stream = futures_stream(rx);
                ([("content-type", "text/event-stream")], axum::body::Body::from_stream(stream))
            }
        };
        let app = axum::Router::new()
            .route("/publish", axum::routing::post(publish))
            .route("/streams/events", axum::routing::get(subscribe));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    })
}

fn futures_stream(
    rx: tokio::sync::broadcast::Receiver<Bytes>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(frame) => return Some((Ok(frame), rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
