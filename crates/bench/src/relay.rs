//! The relay benchmark: deliveries/s from the embedded bus to a local
//! subscriber (a separate process answering 204) at 64 in flight, every
//! delivery signed (v1) and acknowledged durably; POST latency of the same
//! HTTP path; replay events/s.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use hookbridge_bus::Bus;
use hookbridge_event::EventPattern;
use hookbridge_relay::circuit::CircuitSettings;
use hookbridge_relay::policy::{DEFAULT_RETRY_ON, RetryPolicy};
use hookbridge_relay::sign::SigningSecret;
use hookbridge_relay::{Relay, RelaySettings, SubscriberSettings};
use hookbridge_testkit::keys;
use tokio_util::sync::CancellationToken;

use crate::load::{Report, histogram};

pub struct Sink {
    child: Child,
    pub addr: SocketAddr,
}

impl Sink {
    /// A sink on the machine's cores, counting only.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false, false)
    }

    /// `single`: on one thread (when many sinks share the machine);
    /// `times`: it also keeps each delivery's `webhook-id` and wall-clock
    /// arrival, read by [`Sink::times`].
    pub fn start_with(single: bool, times: bool) -> anyhow::Result<Self> {
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("--sink-server").stdout(Stdio::piped());
        if single {
            command.arg("--sink-single");
        }
        if times {
            command.arg("--sink-times");
        }
        let mut child = command.spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        Ok(Self { child, addr: line.trim().parse().context("sink address")? })
    }

    pub async fn count(&self) -> anyhow::Result<u64> {
        Ok(reqwest::get(format!("http://{}/count", self.addr)).await?.text().await?.trim().parse()?)
    }

    /// The deliveries' ids and arrival times (ns since the epoch) kept so
    /// far, taken out of the sink.
    pub async fn times(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let text = reqwest::get(format!("http://{}/times", self.addr)).await?.text().await?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(id, ns)| Some((id.to_owned(), ns.parse().ok()?)))
            .collect())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Nanoseconds since the epoch: the clock both sides of a latency read.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The sink: answers every POST 204 and counts them; `GET /count` tells;
/// with `times`, `GET /times` hands over each delivery's id and arrival.
pub fn sink_server(single: bool, times: bool) -> anyhow::Result<()> {
    let runtime = if single {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()?
    };
    runtime.block_on(async {
        let count = Arc::new(AtomicU64::new(0));
        let arrivals: Arc<std::sync::Mutex<Vec<(String, u64)>>> = Arc::default();
        let posted = count.clone();
        let kept = arrivals.clone();
        let app = axum::Router::new()
            .route(
                "/hooks",
                axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let at = wall_ns();
                    std::hint::black_box(body);
                    posted.fetch_add(1, Ordering::Relaxed);
                    if times && let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
                        kept.lock().expect("arrivals").push((id.to_owned(), at));
                    }
                    async { axum::http::StatusCode::NO_CONTENT }
                }),
            )
            .route("/count", axum::routing::get(move || async move { count.load(Ordering::Relaxed).to_string() }))
            .route(
                "/times",
                axum::routing::get(move || {
                    let taken = std::mem::take(&mut *arrivals.lock().expect("arrivals"));
                    async move {
                        let mut text = String::with_capacity(taken.len() * 48);
                        for (id, at) in taken {
                            text.push_str(&format!("{id} {at}\n"));
                        }
                        text
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    })
}

fn subscriber(sink: &Sink, in_flight: usize) -> SubscriberSettings {
    SubscriberSettings {
        name: "bench".into(),
        url: format!("http://{}/hooks", sink.addr).parse().expect("url"),
        events: vec![EventPattern::All],
        secrets: vec![SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret")],
        timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            schedule: vec![Duration::from_secs(1)],
            retry_on_status: DEFAULT_RETRY_ON.to_vec(),
            max_retry_after: Duration::from_secs(60),
        },
        max_in_flight: in_flight,
        headers: Vec::new(),
        ca_pem: None,
        providers: Vec::new(),
        sources: Vec::new(),
        filter: None,
        rate_limit: None,
        ordering: hookbridge_relay::ordering::Ordering::None,
        client_identity: None,
        proxy: None,
        auth: None,
        enabled: true,
        circuit: CircuitSettings {
            failure_threshold: 1000,
            probe_interval: Duration::from_secs(1),
            disable_after: None,
        },
    }
}

pub async fn run(
    bus: Arc<dyn Bus>,
    events: usize,
    in_flight: usize,
    filter: Option<&str>,
    record_attempts: hookbridge_relay::RecordAttempts,
) -> anyhow::Result<Vec<Report>> {
    let sink = Sink::start()?;
    let mut settings = subscriber(&sink, in_flight);
    settings.filter = filter
        .map(|f| hookbridge_relay::filter::EventFilter::compile(f).map(Arc::new))
        .transpose()
        .map_err(|e| anyhow::anyhow!("the filter: {e}"))?;
    let mut reports = Vec::new();

    // POST latency of the delivery path alone (sign, POST, read answer).
    reports.push(delivery_path(&settings, in_flight, 20_000).await?);

    // Fill the bus, then let the relay drain it.
    println!("publishing {events} events to the bus...");
    let backlog = sample_events(events);
    let publishing: Vec<_> = backlog
        .chunks(events.div_ceil(64))
        .map(|chunk| {
            let (bus, chunk) = (bus.clone(), chunk.to_vec());
            tokio::spawn(async move {
                for e in &chunk {
                    bus.publish(e).await.expect("publish");
                }
            })
        })
        .collect();
    for p in publishing {
        p.await?;
    }
    let before = sink.count().await?;
    let since = Utc::now() - chrono::Duration::hours(1);
    let shutdown = CancellationToken::new();
    let relay_settings = RelaySettings {
        topic_prefix: "hookbridge".into(),
        subscribers: vec![settings.clone()],
        status_interval: Duration::from_secs(15),
        record_attempts,
    };
    // A new group starts at the latest event: point it at the backlog first.
    let group = relay_settings.group("bench");
    bus.subscribe(hookbridge_bus::SubscribeOptions {
        group: group.clone(),
        patterns: vec![EventPattern::All],
        start: hookbridge_bus::StartFrom::Earliest,
    })
    .await?;
    let started = Instant::now();
    let relay =
        Relay::start(bus.clone() as Arc<dyn Bus>, relay_settings, shutdown.clone(), &prometheus::Registry::new())
            .await?;
    loop {
        let delivered = sink.count().await? - before;
        if delivered >= events as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = started.elapsed();
    let mut relay_histogram = histogram();
    relay_histogram.saturating_record(1);
    let mut report = Report::new("relay: bus -> subscriber, acked", &relay_histogram, 0, drained.as_secs_f64());
    report.rate = events as f64 / drained.as_secs_f64();
    (report.p50_ms, report.p99_ms, report.max_ms) = (f64::NAN, f64::NAN, f64::NAN);
    reports.push(report);

    // Replay everything to the same subscriber.
    let before = sink.count().await?;
    let replay = relay.start_replay("bench", since, None, Vec::new()).await?;
    let started = Instant::now();
    loop {
        let view = relay.replay(&replay.id)?;
        if view.done {
            let elapsed = started.elapsed().as_secs_f64();
            let mut report = Report::new("relay: replay", &relay_histogram, view.failed, elapsed);
            report.rate = view.delivered as f64 / elapsed;
            (report.p50_ms, report.p99_ms, report.max_ms) = (f64::NAN, f64::NAN, f64::NAN);
            reports.push(report);
            anyhow::ensure!(
                sink.count().await? - before >= view.delivered,
                "the sink saw fewer deliveries than reported"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    relay.wait().await;
    let status = bus.group_status(&group, &[EventPattern::All]).await?;
    anyhow::ensure!(status.backlog == 0 && status.pending_retries == 0, "relay left work: {status:?}");
    if record_attempts == hookbridge_relay::RecordAttempts::All {
        // Every delivery and replay attempt is in the record.
        let query = hookbridge_bus::AttemptQuery {
            subscriber: Some("bench".into()),
            since: Some(since),
            limit: 1,
            ..hookbridge_bus::AttemptQuery::default()
        };
        anyhow::ensure!(!bus.attempts(&query).await?.is_empty(), "no attempt was recorded");
    }
    Ok(reports)
}

/// The delivery path alone, as the relay's HTTP client does it: sign, POST,
/// read the answer, `in_flight` at once, `posts` in all.
pub async fn delivery_ceiling(sink: &Sink, in_flight: usize, posts: usize) -> anyhow::Result<Report> {
    delivery_path(&subscriber(sink, in_flight), in_flight, posts).await
}

async fn delivery_path(settings: &SubscriberSettings, in_flight: usize, posts: usize) -> anyhow::Result<Report> {
    let endpoint = Arc::new(hookbridge_relay::deliver::Endpoint::new(settings)?);
    let sample = sample_events(posts);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let (endpoint, settings, sample, next) = (endpoint.clone(), settings.clone(), sample.clone(), next.clone());
            tokio::spawn(async move {
                let mut h = histogram();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= sample.len() {
                        return h;
                    }
                    let t = Instant::now();
                    let _ = endpoint.attempt(&settings, &sample[i]).await;
                    h.saturating_record(t.elapsed().as_micros() as u64);
                }
            })
        })
        .collect();
    let mut merged = histogram();
    for t in tasks {
        merged.add(&t.await?)?;
    }
    Ok(Report::new("relay: signed POSTs only", &merged, 0, started.elapsed().as_secs_f64()))
}

fn sample_events(n: usize) -> Arc<Vec<hookbridge_event::Event>> {
    let signer = keys::signer("mailpipe");
    let meta = hookbridge_providers::SourceMeta {
        event_source: "urn:hookbridge:source:bench".into(),
        redactor: hookbridge_providers::Redactor::default(),
    };
    let now = Utc::now();
    let base = now.timestamp_micros().unsigned_abs();
    Arc::new(
        (0..n)
            .map(|i| {
                let (body, _) = keys::signed(&signer, "email.sent", base + i as u64, now);
                hookbridge_providers::normalize(&hookbridge_providers::Provider::Mailpipe, &body, &meta, now)
                    .expect("normalizes")
            })
            .collect(),
    )
}
