//! `--scale`: how the relay's cost grows with subscribers, backlog, load
//! and connections, each figure next to the same run's ceiling.
//!
//! - **ceilings**: the delivery path alone (signed POSTs to one sink, 64 in
//!   flight, no bus) and, on NATS and Kafka, the broker's own
//!   consume-and-commit rate with its own client;
//! - **fan-out**: one event type to 1, 10 and 100 subscribers, each a
//!   receiving process of its own; a backlog drained by a real `hookbridge
//!   run`: aggregate deliveries/s, CPU per delivery, peak RSS, the relay's
//!   CPU for 3 s with nothing left to deliver, then the delivery latency of
//!   live webhooks at a quarter of that rate; with one subscriber, a replay
//!   of the same window, timed from its first delivery to its last like the
//!   drain, its start (request → first delivery) apart;
//! - **end to end**: provider POST → subscriber received, at 25%, 50% and
//!   75% of the maximum ingress rate measured first in the same run;
//! - **connections**: RSS of the ingress per 1,000 open keep-alive
//!   connections;
//! - **backlog**: millions of events waiting for one subscriber that comes
//!   back: time to ready, drain rate and RSS over time, disk bytes per event,
//!   and (embedded) what retention reclaims and how fast.
//!
//! `--backend kafka-tansu` runs the Kafka figures on tansu instead of
//! noida-db (no replay: tansu's memory engine cannot find offsets by time).
//! Each backend's figures are kept as JSON in `docs/scale/<backend>.json`;
//! the tables in `docs/performance.md` and the SVG charts next to them are
//! drawn from every backend's file (`crate::charts`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use hookbridge_bus::{Bus, StartFrom, SubscribeOptions};
use hookbridge_event::EventPattern;
use serde::{Deserialize, Serialize};

use crate::load::{self, Request, histogram};
use crate::relay::{Sink, wall_ns};
use crate::{Args, Broker, Server, hookbridge_config, rand_suffix};

const TOKEN: &str = "bench-admin-token-0123456789abcdef";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The Mailpipe webhook sent, and the event type it becomes.
const WEBHOOK_EVENT: &str = "email.sent";
const EVENT_TYPE: &str = "email.delivered";
/// No progress for this long ends a drain with an error.
const STALL: Duration = Duration::from_secs(60);

/// What one backend's `--scale` run measured.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Measured {
    pub backend: String,
    pub date: String,
    pub cpus: usize,
    /// The delivery path alone: signed POSTs/s to one sink, 64 in flight.
    pub delivery_ceiling: Option<f64>,
    /// The broker's own consume-and-commit rate (NATS, Kafka).
    pub broker_ceiling: Option<f64>,
    pub fanout: Vec<FanOut>,
    /// Replay events/s to one subscriber, of the 1-subscriber backlog,
    /// from its first delivery to its last (as live deliveries are timed).
    pub replay: Option<f64>,
    /// Seconds from the replay's request to its first delivery: the
    /// window's count and the replay group's start (its join, on Kafka).
    pub replay_start_s: Option<f64>,
    /// Webhooks/s at 64 connections, closed loop, with one subscriber.
    pub max_ingress: Option<f64>,
    pub latency: Vec<Latency>,
    pub connections: Vec<Connections>,
    pub backlog: Option<Backlog>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanOut {
    pub subscribers: usize,
    pub events: usize,
    pub deliveries_per_s: f64,
    pub cpu_us_per_delivery: f64,
    pub rss_mib: f64,
    /// The relay's CPU over 3 s after the drain, nothing left to deliver:
    /// what its idle consumers cost (percent of one core).
    pub idle_cpu_percent: Option<f64>,
    /// Live webhooks at a quarter of the drain rate: POST → received.
    pub live_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub load_pct: u32,
    pub offered: f64,
    pub sent: usize,
    pub delivered: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connections {
    pub open: usize,
    pub rss_mib: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Backlog {
    pub events: usize,
    pub publish_per_s: f64,
    pub disk_bytes_per_event: f64,
    pub ready_s: f64,
    /// Seconds since ready → deliveries/s over the last second.
    pub drain: Vec<(f64, f64)>,
    /// Seconds since ready → RSS MiB.
    pub rss: Vec<(f64, f64)>,
    pub drain_rate: f64,
    pub first_tenth_rate: f64,
    pub last_tenth_rate: f64,
    pub rss_max_mib: f64,
    pub retention_s: Option<f64>,
    pub file_bytes_before: Option<u64>,
    pub file_bytes_after: Option<u64>,
}

pub async fn run(args: &Args, broker: &Broker) -> anyhow::Result<()> {
    if !args.hookbridge.is_file() {
        bail!("{} not found: run `cargo build --release` first", args.hookbridge.display());
    }
    let wanted = |part: &str| args.scale_only.as_deref().is_none_or(|only| only.split(',').any(|o| o == part));
    let docs = args.docs.clone();
    let file = docs.join("scale").join(format!("{}.json", args.backend));
    // Parts not run keep what an earlier run measured.
    let mut m: Measured = std::fs::read(&file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    m.backend = args.backend.clone();
    m.date = Utc::now().format("%Y-%m-%d").to_string();
    m.cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!("hookbridge scale benchmark ({}), {} CPUs, loopback", args.backend, m.cpus);

    if wanted("ceiling") {
        let sink = Sink::start()?;
        let report = crate::relay::delivery_ceiling(&sink, 64, 50_000).await?;
        println!("ceiling, delivery path alone: {:.0} POSTs/s", report.rate);
        m.delivery_ceiling = Some(report.rate);
        m.broker_ceiling = crate::ceiling::consume_and_commit(broker, args.scale_broker_events).await?;
        if let Some(rate) = m.broker_ceiling {
            println!("ceiling, the broker's consume and commit: {rate:.0} messages/s");
        }
    }
    if wanted("fanout") {
        m.fanout.clear();
        for &n in &args.fanout {
            let (fan, replay) = fanout(args, broker, n).await?;
            println!(
                "fan-out to {n}: {:.0} deliveries/s, {:.1} µs CPU each, {:.0} MiB, {:.0}% of a core idle; live p99 {:.2} ms",
                fan.deliveries_per_s,
                fan.cpu_us_per_delivery,
                fan.rss_mib,
                fan.idle_cpu_percent.unwrap_or_default(),
                fan.p99_ms
            );
            if let Some((replay, start)) = replay {
                println!("replay of the same window: {replay:.0} events/s after a start of {start:.2} s");
                (m.replay, m.replay_start_s) = (Some(replay), Some(start));
            }
            m.fanout.push(fan);
        }
    }
    if wanted("latency") {
        let (max, latency) = end_to_end(args, broker).await?;
        m.max_ingress = Some(max);
        m.latency = latency;
    }
    if wanted("connections") {
        m.connections = connections(args, broker).await?;
    }
    if wanted("backlog") {
        let events = args.backlog.unwrap_or(match broker {
            Broker::Embedded => 10_000_000,
            Broker::Nats(_) => 1_000_000,
            Broker::Kafka(_) => 200_000,
        });
        m.backlog = Some(backlog(args, broker, events).await?);
    }
    std::fs::create_dir_all(file.parent().expect("a directory"))?;
    std::fs::write(&file, serde_json::to_vec_pretty(&m)?)?;
    println!("wrote {}", file.display());
    crate::charts::publish(&docs)?;
    Ok(())
}

/// A subscriber entry of the config.
fn subscriber_toml(name: &str, sink: &Sink) -> String {
    format!(
        "[[relay.subscribers]]\nname = \"{name}\"\nurl = \"http://{}/hooks\"\nevents = [\"{EVENT_TYPE}\"]\n\
         secret = \"{SECRET}\"\nmax_in_flight = 64\nretry_schedule = [\"1s\"]\n",
        sink.addr
    )
}

fn config(dir: &Path, broker: &Broker, prefix: &str, sinks: &[Sink], extra: &str) -> String {
    let mut text = hookbridge_config(dir, broker, prefix)
        .replace("topic_prefix = \"hookbridge\"", &format!("topic_prefix = \"{prefix}\""))
        .replace(
            "[admin]\nlisten = \"127.0.0.1:0\"\n",
            &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
        );
    text.push_str(extra);
    for (i, sink) in sinks.iter().enumerate() {
        text.push_str(&subscriber_toml(&name(i), sink));
    }
    text
}

fn name(i: usize) -> String {
    format!("s{i:03}")
}

/// An event to copy: a normalized Mailpipe `email.sent`.
fn template() -> hookbridge_event::Event {
    let signer = hookbridge_testkit::keys::signer("mailpipe");
    let meta = hookbridge_providers::SourceMeta {
        event_source: "urn:hookbridge:source:mailpipe".into(),
        redactor: hookbridge_providers::Redactor::default(),
    };
    let now = Utc::now();
    let (body, _) = hookbridge_testkit::keys::signed(&signer, WEBHOOK_EVENT, 0, now);
    hookbridge_providers::normalize(&hookbridge_providers::Provider::Mailpipe, &body, &meta, now).expect("normalizes")
}

/// The JSON of [`template`]: the ceilings' message.
pub fn template_json() -> Vec<u8> {
    template().to_json()
}

/// Creates the subscribers' groups at the start of the log, then publishes
/// `events` distinct events at 256 in flight; events/s.
async fn prefill(bus: &Arc<dyn Bus>, prefix: &str, subscribers: usize, events: usize) -> anyhow::Result<f64> {
    for i in 0..subscribers {
        bus.subscribe(SubscribeOptions {
            group: format!("{prefix}.relay.{}", name(i)),
            patterns: vec![EventPattern::Exact(EVENT_TYPE.into())],
            start: StartFrom::Earliest,
        })
        .await?;
    }
    let template = Arc::new(template());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tag = format!("{prefix}-{}", rand_suffix());
    let tasks: Vec<_> = (0..256)
        .map(|_| {
            let (bus, template, next, tag) = (bus.clone(), template.clone(), next.clone(), tag.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= events {
                        return anyhow::Ok(());
                    }
                    if i > 0 && i % 1_000_000 == 0 {
                        println!("  {i} events published ({:.0}/s)", i as f64 / started.elapsed().as_secs_f64());
                    }
                    let mut event = (*template).clone();
                    event.id = format!("{tag}-{i}");
                    bus.publish(&event).await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// `VmRSS` of a process, MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// CPU time (user + system) of a process, µs.
fn cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15.
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(14) + ticks(15)) * 1_000_000.0 / 100.0
}

fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new)
}

async fn counted(sinks: &[Sink]) -> anyhow::Result<u64> {
    let mut total = 0;
    for sink in sinks {
        total +=
            client().get(format!("http://{}/count", sink.addr)).send().await?.text().await?.trim().parse::<u64>()?;
    }
    Ok(total)
}

/// Waits until the sinks have counted `expected`; no progress for
/// [`STALL`] is an error.
async fn wait_counted(sinks: &[Sink], expected: u64) -> anyhow::Result<()> {
    let (mut last, mut moved) = (0, Instant::now());
    loop {
        let now = counted(sinks).await?;
        if now >= expected {
            return Ok(());
        }
        if now != last {
            (last, moved) = (now, Instant::now());
        } else if moved.elapsed() > STALL {
            bail!("deliveries stalled at {now} of {expected}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_ready(admin: std::net::SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = client().get(format!("http://{admin}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "hookbridge not ready after 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Latency of every arrival at `sinks` of an event sent at `sent`, in µs.
async fn latencies(
    sinks: &[Sink],
    sent: &HashMap<String, u64>,
) -> anyhow::Result<(hdrhistogram::Histogram<u64>, usize)> {
    let mut h = histogram();
    let mut arrived = 0;
    for sink in sinks {
        for (id, at) in sink.times().await? {
            if let Some(&from) = sent.get(&id) {
                h.saturating_record((at.saturating_sub(from) / 1000).max(1));
                arrived += 1;
            }
        }
    }
    Ok((h, arrived))
}

fn ms(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Signed Mailpipe webhooks numbered from `from`, distinct from every other
/// call's.
fn requests(from: usize, count: usize) -> Arc<Vec<Request>> {
    crate::signed_requests_from("mailpipe", WEBHOOK_EVENT, from, count)
}

/// Distinct request numbers for each call in a process.
fn numbers(count: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = (wall_ns() / 1000) as usize % 1_000_000_000_000;
    base + NEXT.fetch_add(count, Ordering::Relaxed)
}

async fn fanout(args: &Args, broker: &Broker, n: usize) -> anyhow::Result<(FanOut, Option<(f64, f64)>)> {
    println!("fan-out to {n} subscriber(s)...");
    // The first 10 sinks time what they receive.
    let sinks = (0..n).map(|i| Sink::start_with(n > 1, i < 10)).collect::<anyhow::Result<Vec<_>>>()?;
    let events = (args.scale_deliveries / n).max(2_000);
    let dir = tempfile::tempdir()?;
    let prefix = format!("fan{n}x{}", rand_suffix());
    let bus = broker.open_at(&dir.path().join("bus"), &prefix, true).await?;
    prefill(&bus, &prefix, n, events).await?;
    bus.close().await;
    drop(bus);
    let since = Utc::now() - chrono::Duration::hours(1);

    let server = Server::spawn(&args.hookbridge, dir.path(), &config(dir.path(), broker, &prefix, &sinks, ""), "run")?;
    let (pid, spawned) = (server.pid(), Instant::now());
    let expected = (n * events) as u64;
    let (mut first, mut rss) = (None, 0f64);
    loop {
        let now = counted(&sinks).await?;
        rss = rss.max(rss_mib(pid));
        if now > 0 && first.is_none() {
            first = Some((Instant::now(), cpu_us(pid), now));
        }
        if now >= expected {
            break;
        }
        match first {
            Some((at, ..)) => {
                anyhow::ensure!(at.elapsed() < Duration::from_secs(600), "fan-out to {n}: {now} of {expected} in 600 s")
            }
            None => anyhow::ensure!(spawned.elapsed() < STALL, "fan-out to {n}: nothing delivered in {STALL:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (at, cpu, from) = first.expect("deliveries started");
    let seconds = at.elapsed().as_secs_f64();
    let deliveries = (expected - from) as f64;
    let rate = deliveries / seconds;
    let cpu_each = (cpu_us(pid) - cpu) / deliveries;

    let idle_from = cpu_us(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_cpu = (cpu_us(pid) - idle_from) / 3e6 * 100.0;
    // tansu's memory engine cannot find offsets by time, which a replay starts from.
    let replay = if n == 1 && broker.finds_offsets_by_time() {
        Some(replay(&server, &sinks[0], &name(0), since, events).await?)
    } else {
        None
    };

    // Live webhooks at a quarter of the drain rate, per subscriber.
    for sink in &sinks {
        sink.times().await?;
    }
    let before = counted(&sinks).await?;
    let live_rate = (rate / n as f64 / 4.0).clamp(20.0, 4_000.0);
    let count = (live_rate * 5.0) as usize;
    let sent = load::paced(server.addr, &requests(numbers(count), count), live_rate, 16).await?;
    wait_counted(&sinks, before + (sent.ids.len() * n) as u64).await?;
    let (h, _) = latencies(&sinks, &sent.ids).await?;
    drop(server);
    Ok((
        FanOut {
            subscribers: n,
            events,
            deliveries_per_s: rate,
            cpu_us_per_delivery: cpu_each,
            rss_mib: rss,
            idle_cpu_percent: Some(idle_cpu),
            live_rate,
            p50_ms: ms(&h, 0.5),
            p99_ms: ms(&h, 0.99),
        },
        replay,
    ))
}

/// Replays the last hour to `subscriber` (which `sink` receives for)
/// through the admin API: events/s from the first replayed delivery to the
/// last, as live deliveries are timed, and the seconds from the request to
/// the first delivery.
async fn replay(
    server: &Server,
    sink: &Sink,
    subscriber: &str,
    since: chrono::DateTime<Utc>,
    events: usize,
) -> anyhow::Result<(f64, f64)> {
    let admin = server.admin.context("no admin listener")?;
    let sink = std::slice::from_ref(sink);
    let before = counted(sink).await?;
    let started = Instant::now();
    let answer: serde_json::Value = client()
        .post(format!("http://{admin}/admin/subscribers/{subscriber}/replay"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "since": since }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = answer["id"].as_str().context("a replay id")?.to_owned();
    let (mut first, mut last) = (None, None);
    loop {
        let now = counted(sink).await? - before;
        if now > 0 && first.is_none() {
            first = Some((Instant::now(), now));
        }
        if now >= events as u64 && last.is_none() {
            last = Some(Instant::now());
        }
        let view: serde_json::Value = client()
            .get(format!("http://{admin}/admin/replays/{id}"))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if view["done"].as_bool() == Some(true) {
            let delivered = view["delivered"].as_u64().unwrap_or(0);
            anyhow::ensure!(delivered as usize >= events, "the replay delivered {delivered} of {events}");
            let (Some((first, from)), Some(last)) = (first, last) else {
                bail!("the replay is done but its sink counted fewer than {events}")
            };
            println!(
                "replay: {:.0} events/s from the request to done",
                delivered as f64 / started.elapsed().as_secs_f64()
            );
            let rate = (events as u64 - from) as f64 / last.duration_since(first).as_secs_f64();
            return Ok((rate, first.duration_since(started).as_secs_f64()));
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "the replay did not finish in 600 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The maximum ingress rate with one subscriber, then webhooks paced at 25%,
/// 50% and 75% of it: POST sent → subscriber received.
async fn end_to_end(args: &Args, broker: &Broker) -> anyhow::Result<(f64, Vec<Latency>)> {
    println!("end to end...");
    let sinks = vec![Sink::start_with(false, true)?];
    let dir = tempfile::tempdir()?;
    let prefix = format!("e2e{}", rand_suffix());
    let server = Server::spawn(&args.hookbridge, dir.path(), &config(dir.path(), broker, &prefix, &sinks, ""), "run")?;
    let budget = (60_000.0 * (args.duration + args.warmup).as_secs_f64()) as usize;
    let max = load::run("max ingress", server.addr, &requests(numbers(budget), budget), false, args).await?;
    println!("maximum ingress rate with one subscriber: {:.0} webhooks/s", max.rate);
    // Let the relay catch up before the paced runs.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut last = counted(&sinks).await?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = counted(&sinks).await?;
        if now == last {
            break;
        }
        last = now;
    }
    sinks[0].times().await?;
    let mut out = Vec::new();
    for pct in [25u32, 50, 75] {
        let rate = max.rate * f64::from(pct) / 100.0;
        let count = (rate * args.duration.as_secs_f64()) as usize;
        let before = counted(&sinks).await?;
        let sent = load::paced(server.addr, &requests(numbers(count), count), rate, args.connections).await?;
        let _ = wait_counted(&sinks, before + sent.ids.len() as u64).await;
        let (h, delivered) = latencies(&sinks, &sent.ids).await?;
        let l = Latency {
            load_pct: pct,
            offered: rate,
            sent: sent.ids.len(),
            delivered,
            p50_ms: ms(&h, 0.5),
            p99_ms: ms(&h, 0.99),
            p999_ms: ms(&h, 0.999),
            max_ms: h.max() as f64 / 1000.0,
        };
        println!(
            "{pct}% load ({rate:.0}/s): {} of {} delivered, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
            l.delivered, l.sent, l.p50_ms, l.p99_ms, l.p999_ms
        );
        out.push(l);
    }
    Ok((max.rate, out))
}

/// RSS of the ingress at 0 to 5,000 open keep-alive connections, each
/// having sent one request.
async fn connections(args: &Args, broker: &Broker) -> anyhow::Result<Vec<Connections>> {
    use http_body_util::{BodyExt, Full};
    println!("connections...");
    let dir = tempfile::tempdir()?;
    let prefix = format!("conn{}", rand_suffix());
    let server = Server::spawn(&args.hookbridge, dir.path(), &config(dir.path(), broker, &prefix, &[], ""), "ingress")?;
    let pid = server.pid();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut out = vec![Connections { open: 0, rss_mib: rss_mib(pid) }];
    let mut held = Vec::new();
    for step in 1..=5 {
        for _ in 0..1000 {
            let mut sender = load::connect(server.addr).await?;
            let request = hyper::Request::post("/webhooks/nobody")
                .header("host", "127.0.0.1")
                .header("content-type", "application/json")
                .body(Full::new(bytes::Bytes::from_static(b"{}")))?;
            let response = sender.send_request(request).await?;
            response.into_body().collect().await?;
            held.push(sender);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = rss_mib(pid);
        println!("  {} connections: {rss:.1} MiB", step * 1000);
        out.push(Connections { open: step * 1000, rss_mib: rss });
    }
    anyhow::ensure!(held.iter().all(|s| !s.is_closed()), "the ingress closed kept-alive connections");
    Ok(out)
}

async fn backlog(args: &Args, broker: &Broker, events: usize) -> anyhow::Result<Backlog> {
    println!("backlog of {events} events...");
    let sinks = vec![Sink::start()?];
    let dir = tempfile::tempdir_in(args.backlog_dir.as_deref().unwrap_or(&std::env::temp_dir()))?;
    let prefix = format!("log{}", rand_suffix());
    let bus_dir = dir.path().join("bus");
    let bus = broker.open_at(&bus_dir, &prefix, true).await?;
    let publish_per_s = prefill(&bus, &prefix, 1, events).await?;
    println!("  published at {publish_per_s:.0}/s");
    bus.close().await;
    drop(bus);
    let file = bus_dir.join(hookbridge_bus::embedded::FILE_NAME);
    let disk = std::fs::metadata(&file).map(|m| m.len()).ok();
    // A backlog is written over the hours its subscriber was away, not in
    // the minute before it comes back: the prefill's dirty pages go to disk
    // first, or their writeback slows the first part of the drain.
    let synced = std::process::Command::new("sync").status();
    anyhow::ensure!(synced.as_ref().is_ok_and(|s| s.success()), "sync failed: {synced:?}");

    let started = Instant::now();
    let server = Server::spawn(&args.hookbridge, dir.path(), &config(dir.path(), broker, &prefix, &sinks, ""), "run")?;
    wait_ready(server.admin.context("no admin listener")?).await?;
    let ready = started.elapsed();
    println!("  ready in {:.2} s", ready.as_secs_f64());
    let pid = server.pid();
    let ready_at = Instant::now();
    let mut b = Backlog { events, publish_per_s, ready_s: ready.as_secs_f64(), ..Backlog::default() };
    if let Some(disk) = disk {
        b.disk_bytes_per_event = disk as f64 / events as f64;
    }
    let (mut last, mut moved) = (0u64, Instant::now());
    let mut samples: Vec<(f64, u64)> = vec![(0.0, 0)];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let t = ready_at.elapsed().as_secs_f64();
        let now = counted(&sinks).await?;
        let rss = rss_mib(pid);
        b.rss.push((t, rss));
        b.rss_max_mib = b.rss_max_mib.max(rss);
        let (t0, c0) = *samples.last().expect("a sample");
        b.drain.push((t, (now - c0) as f64 / (t - t0)));
        samples.push((t, now));
        if samples.len().is_multiple_of(10) {
            println!("  {t:.0} s: {now} delivered, {rss:.0} MiB");
        }
        if now >= events as u64 {
            break;
        }
        if now != last {
            (last, moved) = (now, Instant::now());
        } else if moved.elapsed() > STALL {
            bail!("the drain stalled at {now} of {events}");
        }
    }
    let n = events as f64;
    let end = samples.last().expect("a sample").0;
    b.drain_rate = n / end;
    // The first tenth: from ready to the first sample past 10 %; the last:
    // from the last sample before 90 % to the end.
    if let Some(&(t, c)) = samples.iter().find(|(_, c)| *c as f64 >= 0.1 * n) {
        b.first_tenth_rate = c as f64 / t.max(1e-3);
    }
    if let Some(&(t, c)) = samples.iter().rev().find(|(_, c)| (*c as f64) < 0.9 * n) {
        b.last_tenth_rate = (n - c as f64) / (end - t).max(1e-3);
    }
    println!(
        "  drained at {:.0}/s (first tenth {:.0}/s, last tenth {:.0}/s), RSS at most {:.0} MiB",
        b.drain_rate, b.first_tenth_rate, b.last_tenth_rate, b.rss_max_mib
    );
    drop(server);

    if matches!(broker, Broker::Embedded) {
        // Retention: every event older than a second goes.
        let mut options = hookbridge_bus::embedded::EmbeddedOptions::new(&bus_dir);
        options.retention.max_age = Some(Duration::from_secs(1));
        options.maintenance_interval = Duration::from_secs(3600);
        let bus = hookbridge_bus::embedded::EmbeddedBus::open(options)?;
        let started = Instant::now();
        bus.maintain().await?;
        b.retention_s = Some(started.elapsed().as_secs_f64());
        drop(bus);
        b.file_bytes_before = disk;
        b.file_bytes_after = std::fs::metadata(&file).map(|m| m.len()).ok();
        println!(
            "  retention removed the log in {:.1} s; the file {:?} → {:?} bytes",
            b.retention_s.unwrap_or(0.0),
            b.file_bytes_before,
            b.file_bytes_after
        );
    }
    Ok(b)
}
