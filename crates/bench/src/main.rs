//! `hookbridge-bench`: measures the ingress of a real `hookbridge` process
//! over loopback with signed MailPace (Ed25519) and Mailpipe (HMAC)
//! webhooks at a fixed number of keep-alive connections, and prints each
//! figure next to the same run's ceilings: an axum handler that only reads
//! the body, and the embedded bus's raw publish rate.
//!
//! Every request is a distinct event (unique ids, pre-signed before the
//! clock starts), so every 200 is a durable, fsync'd publish.

mod ceiling;
mod charts;
mod load;
mod relay;
mod scale;
mod streams;

use hookbridge_relay::RecordAttempts;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use chrono::Utc;
use clap::Parser;
use hookbridge_bus::Publisher;
use hookbridge_bus::embedded::EmbeddedOptions;
use hookbridge_testkit::keys;

use crate::load::{Report, Request};

const MAILPIPE: &str = "hookbridge: Mailpipe (HMAC)";
const DECLARATIVE: &str = "hookbridge: Mailpipe as a definition";
const SENDGRID: &str = "hookbridge: SendGrid batch of 100";
const SENDGRID_BATCH: usize = 100;

#[derive(Debug, Parser)]
#[command(about = "Benchmark the hookbridge ingress over loopback")]
struct Args {
    /// The hookbridge binary to measure (build it with --release).
    #[arg(long, default_value = "target/release/hookbridge")]
    hookbridge: PathBuf,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured time per scenario.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured time before each scenario.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Internal: serve the body-only ceiling handler and print its address.
    #[arg(long, hide = true)]
    ceiling_server: bool,
    /// Print the cost of each step of a request (verify, normalize, encode) and exit.
    #[arg(long)]
    steps: bool,
    /// Run only the scenarios whose name contains this text (e.g. `MailPace`).
    #[arg(long)]
    only: Option<String>,
    /// The bus: `embedded`, `nats` (a nats-server is started on a free
    /// port), `kafka` (noida-db's Kafka engine, in this process, holding empty fetches as Kafka does) or
    /// `kafka-tansu` (tansu, a second Kafka-protocol broker, as a process).
    #[arg(long, default_value = "embedded")]
    backend: String,
    /// Benchmark the relay instead of the ingress, with this many events.
    #[arg(long)]
    relay: Option<usize>,
    /// With --relay: run it twice, the second time with this CEL filter on
    /// the subscriber (it should pass every event, to compare like with like).
    #[arg(long)]
    relay_filter: Option<String>,
    /// Internal: serve the counting subscriber and print its address.
    #[arg(long, hide = true)]
    sink_server: bool,
    /// Internal, with --sink-server: on one thread.
    #[arg(long, hide = true)]
    sink_single: bool,
    /// Internal, with --sink-server: keep each delivery's id and arrival.
    #[arg(long, hide = true)]
    sink_times: bool,
    /// Benchmark the streams listener: SSE clients (comma-separated counts)
    /// each receiving every event, at the offered webhook rates (events/s,
    /// one per count).
    #[arg(long, value_delimiter = ',')]
    streams: Option<Vec<usize>>,
    /// With --streams: the offered webhook rate of each client count.
    #[arg(long, value_delimiter = ',', default_value = "1000,500,60")]
    streams_rate: Vec<u64>,
    /// Measure the relay at scale (fan-out, end-to-end latency, connections,
    /// backlog) and write the figures and charts into --docs.
    #[arg(long)]
    scale: bool,
    /// With --scale: only these parts (comma-separated: ceiling, fanout,
    /// latency, connections, backlog); the others keep their last figures.
    #[arg(long)]
    scale_only: Option<String>,
    /// With --scale: subscriber counts of the fan-out.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    fanout: Vec<usize>,
    /// With --scale: deliveries in all per fan-out scenario (at least 2,000 per subscriber).
    #[arg(long, default_value_t = 200_000)]
    scale_deliveries: usize,
    /// With --scale: messages of the broker's consume-and-commit ceiling.
    #[arg(long, default_value_t = 200_000)]
    scale_broker_events: usize,
    /// With --scale: events of the backlog (default 10,000,000 embedded,
    /// 1,000,000 NATS, 200,000 Kafka).
    #[arg(long)]
    backlog: Option<usize>,
    /// With --scale: where the backlog's bus lives (the system's temp dir by default).
    #[arg(long)]
    backlog_dir: Option<PathBuf>,
    /// With --scale: the docs directory (performance.md, scale/).
    #[arg(long, default_value = "docs")]
    docs: PathBuf,
    /// Internal: serve the SSE fan-out ceiling and print its address.
    #[arg(long, hide = true)]
    fanout_server: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.ceiling_server {
        return ceiling_server();
    }
    if args.steps {
        steps();
        return Ok(());
    }
    if args.sink_server {
        return relay::sink_server(args.sink_single, args.sink_times);
    }
    if args.fanout_server {
        return streams::fanout_server();
    }
    // The load generator's own runtime: two workers, like the machine.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(args))
}

const CEILING_HTTP: &str = "ceiling: axum, body only";
const CEILING_BUS: &str = "ceiling: bus publish";

/// Requests needed for a scenario at up to `max_rate` req/s.
fn budget(args: &Args, max_rate: u64) -> usize {
    (max_rate as f64 * (args.duration + args.warmup).as_secs_f64()) as usize
}

/// The broker a run uses, started by the benchmark on a free loopback port.
enum Broker {
    Embedded,
    Nats(hookbridge_brokers::NatsServer),
    /// noida-db's Kafka engine in this process, or tansu as a process.
    Kafka(KafkaServer),
}

/// The Kafka-protocol broker of a `kafka` (noida-db) or `kafka-tansu` run.
enum KafkaServer {
    Noida(hookbridge_brokers::KafkaBroker),
    Tansu(hookbridge_brokers::Tansu),
}

impl KafkaServer {
    fn address(&self) -> String {
        match self {
            Self::Noida(broker) => broker.address(),
            Self::Tansu(broker) => broker.address(),
        }
    }
}

impl Broker {
    fn start(backend: &str) -> anyhow::Result<Self> {
        Ok(match backend {
            "embedded" => Self::Embedded,
            "nats" => Self::Nats(hookbridge_brokers::NatsServer::start()),
            // noida-db answers an empty fetch at once; held as Kafka holds
            // it, idle groups wait instead of polling in a busy loop.
            "kafka" => Self::Kafka(KafkaServer::Noida(hookbridge_brokers::KafkaBroker::start_holding_fetches())),
            "kafka-tansu" => Self::Kafka(KafkaServer::Tansu(hookbridge_brokers::Tansu::start())),
            other => bail!("unknown backend `{other}`: use embedded, nats, kafka or kafka-tansu"),
        })
    }

    /// Whether a replay can start at a time (tansu's memory engine cannot
    /// find offsets by time).
    fn finds_offsets_by_time(&self) -> bool {
        !matches!(self, Self::Kafka(KafkaServer::Tansu(_)))
    }

    async fn open(&self, prefix: &str) -> anyhow::Result<Arc<dyn hookbridge_bus::Bus>> {
        self.open_at(&tempfile::tempdir()?.keep(), prefix, false).await
    }

    /// The bus a hookbridge of [`hookbridge_config`]`(dir, self, prefix)`
    /// runs on; `own_stream` names the NATS stream after the prefix as that
    /// config does.
    async fn open_at(
        &self,
        dir: &std::path::Path,
        prefix: &str,
        own_stream: bool,
    ) -> anyhow::Result<Arc<dyn hookbridge_bus::Bus>> {
        use hookbridge_bus::BusOptions;
        let options = match self {
            Self::Embedded => BusOptions::Embedded(EmbeddedOptions::new(dir)),
            Self::Nats(server) => {
                let mut options = hookbridge_bus::nats::NatsOptions::new(vec![server.url()], prefix);
                if own_stream {
                    options.stream = nats_stream(prefix);
                }
                BusOptions::Nats(options)
            }
            Self::Kafka(broker) => {
                let mut options = hookbridge_testkit::kafka_test_options(broker.address());
                options.topic_prefix = prefix.to_owned();
                options.partitions = 6;
                BusOptions::Kafka(options)
            }
        };
        Ok(hookbridge_bus::open(&options).await?)
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let broker = Broker::start(&args.backend)?;
    if args.scale {
        return scale::run(&args, &broker).await;
    }
    if let Some(clients) = &args.streams {
        return streams::run(&args, &broker, clients).await;
    }
    if let Some(events) = args.relay {
        println!(
            "hookbridge relay benchmark ({}): {events} events, {} in flight, loopback",
            args.backend, args.connections
        );
        // The delivery record's cost: the same run without it, then with
        // it, then both again in the other order (a run's position moves
        // its figure by more than the record costs).
        let mut reports = Vec::new();
        for (round, record) in [false, true, true, false].into_iter().enumerate() {
            println!("round {}: {} the delivery record", round + 1, if record { "with" } else { "without" });
            let bus = broker.open(&format!("round{round}")).await?;
            let keeps = if record { RecordAttempts::All } else { RecordAttempts::Off };
            let measured = relay::run(bus, events, args.connections, None, keeps).await?;
            let skip = usize::from(round > 0);
            reports.extend(measured.into_iter().skip(skip).map(|mut r| {
                if !r.name.contains("POSTs") {
                    r.name = format!("{} ({}, {})", r.name, if record { "record" } else { "no record" }, round + 1);
                }
                r
            }));
        }
        if let Some(filter) = &args.relay_filter {
            println!("again with the filter {filter}");
            let bus = broker.open("filtered").await?;
            let filtered = relay::run(bus, events, args.connections, Some(filter), RecordAttempts::All).await?;
            reports.extend(filtered.into_iter().skip(1).map(|mut r| {
                r.name = format!("{} + filter", r.name);
                r
            }));
        }
        println!();
        println!("{:<48} {:>10} {:>9} {:>9} {:>9}", "scenario", "events/s", "p50 ms", "p99 ms", "max ms");
        let ms = |v: f64| if v.is_nan() { "-".to_owned() } else { format!("{v:.2}") };
        for r in &reports {
            println!("{:<48} {:>10.0} {:>9} {:>9} {:>9}", r.name, r.rate, ms(r.p50_ms), ms(r.p99_ms), ms(r.max_ms));
        }
        return Ok(());
    }
    if !args.hookbridge.is_file() {
        bail!("{} not found: run `cargo build --release` first", args.hookbridge.display());
    }
    println!(
        "hookbridge ingress benchmark ({}): {} connections, {:?} warm-up, {:?} measured, loopback, {} CPUs",
        args.backend,
        args.connections,
        args.warmup,
        args.duration,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!("preparing signed requests...");
    let wanted = |name: &str| args.only.as_deref().is_none_or(|only| name.contains(only));
    let mailpace = signed_requests("mailpace", "email.delivered", budget(&args, 40_000));
    let mailpipe = signed_requests("mailpipe", "email.sent", budget(&args, 60_000));
    let mut reports = Vec::new();

    // Ceiling 1: an axum handler that only reads the body.
    if wanted(CEILING_HTTP) {
        let mut ceiling = Server::ceiling()?;
        reports.push(load::run(CEILING_HTTP, ceiling.addr, &mailpace, true, &args).await?);
        ceiling.stop();
    }

    // Ceiling 2: the embedded bus's own publish rate with the same concurrency.
    if wanted(CEILING_BUS) {
        let bus: Arc<dyn Publisher> = broker.open("ceiling").await?;
        reports.push(bus_ceiling(bus, &mailpace, &args).await?);
    }

    // hookbridge itself, one fresh bus per scenario.
    let declarative = retarget(&mailpipe, "mailpipe-declarative");
    let sendgrid = defined_requests("sendgrid", "delivered", SENDGRID_BATCH, budget(&args, 1_000));
    let resend = defined_requests("resend", "email.delivered", 1, budget(&args, 60_000));
    let twin = format!(
        "[[ingress.sources]]\nname = \"mailpipe-declarative\"\nprovider = \"mailpipe-declarative\"\nsecrets = [\"{}\"]\n",
        keys::MAILPIPE_SECRET
    );
    for (name, requests) in [
        ("hookbridge: MailPace (Ed25519)", &mailpace),
        (MAILPIPE, &mailpipe),
        (DECLARATIVE, &declarative),
        (SENDGRID, &sendgrid),
        ("hookbridge: Resend (Standard Webhooks)", &resend),
    ] {
        if !wanted(name) {
            continue;
        }
        let dir = tempfile::tempdir()?;
        let mut server = Server::hookbridge_with(&args.hookbridge, dir.path(), &broker, &twin)?;
        reports.push(load::run(name, server.addr, requests, false, &args).await?);
        server.stop();
    }

    println!();
    println!("{:<40} {:>10} {:>9} {:>9} {:>9} {:>8}", "scenario", "req/s", "p50 ms", "p99 ms", "max ms", "errors");
    for r in &reports {
        println!(
            "{:<40} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>8}",
            r.name, r.rate, r.p50_ms, r.p99_ms, r.max_ms, r.errors
        );
    }
    if let Some(ceiling) = reports.iter().find(|r| r.name == CEILING_HTTP) {
        for r in reports.iter().filter(|r| r.name.starts_with("hookbridge")) {
            println!("{}: {:.0}% of the body-only ceiling", r.name, 100.0 * r.rate / ceiling.rate);
        }
    }
    let find = |name: &str| reports.iter().find(|r| r.name == name);
    if let (Some(twin), Some(code)) = (find(DECLARATIVE), find(MAILPIPE)) {
        println!("declarative HMAC provider: {:.0}% of the built-in Mailpipe", 100.0 * twin.rate / code.rate);
    }
    if let Some(batch) = find(SENDGRID) {
        let events = batch.rate * SENDGRID_BATCH as f64;
        print!("SendGrid batches: {events:.0} events/s");
        if let Some(bus) = reports.iter().find(|r| r.name.starts_with(CEILING_BUS)) {
            print!(
                ", {:.0}% of the bus's publish ceiling (single events, {} in flight)",
                100.0 * events / bus.rate,
                args.connections
            );
        }
        println!();
    }
    Ok(())
}

/// Distinct signed webhooks for one test source, signed on all cores.
fn signed_requests(source: &'static str, event: &'static str, count: usize) -> Arc<Vec<Request>> {
    signed_requests_from(source, event, 0, count)
}

/// As [`signed_requests`], numbered from `from` (distinct from another
/// call's numbers).
fn signed_requests_from(source: &'static str, event: &'static str, from: usize, count: usize) -> Arc<Vec<Request>> {
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let now = Utc::now();
    let chunks: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let signer = keys::signer(source);
                (from + t..from + count)
                    .step_by(threads)
                    .map(|seq| {
                        let (body, (header, value)) = keys::signed(&signer, event, seq as u64, now);
                        Request {
                            path: format!("/webhooks/{source}"),
                            content_type: "application/json",
                            headers: vec![(header.to_owned(), value)],
                            body: Bytes::from(body),
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    Arc::new(chunks.into_iter().flat_map(|c| c.join().expect("signing thread")).collect())
}

/// Distinct signed requests of a catalogue provider, `batch` events each.
fn defined_requests(provider: &'static str, event: &'static str, batch: usize, count: usize) -> Arc<Vec<Request>> {
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let now = Utc::now();
    let chunks: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let signer = keys::defined_signer(provider);
                (t..count)
                    .step_by(threads)
                    .map(|seq| {
                        let elements = (0..batch)
                            .map(|i| signer.element(event, (seq * batch + i) as u64, now).expect("a sample"))
                            .collect();
                        let signed = signer.request(elements, seq as u64, now);
                        Request {
                            path: format!("/webhooks/{provider}"),
                            content_type: signed.content_type,
                            headers: signed.headers,
                            body: Bytes::from(signed.body),
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    Arc::new(chunks.into_iter().flat_map(|c| c.join().expect("signing thread")).collect())
}

/// Mailpipe's requests, sent to the source of the declarative twin.
fn retarget(requests: &[Request], source: &str) -> Arc<Vec<Request>> {
    Arc::new(
        requests
            .iter()
            .map(|r| Request {
                path: format!("/webhooks/{source}"),
                content_type: r.content_type,
                headers: r.headers.clone(),
                body: r.body.clone(),
            })
            .collect(),
    )
}

/// The example definitions (`examples/providers`), for the declarative twin.
fn example_providers() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/providers")
}

/// The same MailPace events, published straight onto the bus.
async fn bus_ceiling(bus: Arc<dyn Publisher>, requests: &[Request], args: &Args) -> anyhow::Result<Report> {
    let meta = hookbridge_providers::SourceMeta {
        event_source: "urn:hookbridge:source:bench".into(),
        redactor: hookbridge_providers::Redactor::default(),
    };
    let events: Arc<Vec<_>> = Arc::new(
        requests
            .iter()
            .map(|r| {
                hookbridge_providers::normalize(&hookbridge_providers::Provider::MailPace, &r.body, &meta, Utc::now())
                    .expect("sample normalizes")
            })
            .collect(),
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + args.warmup + args.duration;
    let measure_from = started + args.warmup;
    let tasks: Vec<_> = (0..args.connections)
        .map(|_| {
            let (bus, events, next) = (bus.clone(), events.clone(), next.clone());
            tokio::spawn(async move {
                let mut histogram = load::histogram();
                let mut errors = 0u64;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let now = Instant::now();
                    if i >= events.len() || now >= deadline {
                        break;
                    }
                    let result = bus.publish(&events[i]).await;
                    if now >= measure_from {
                        if result.is_ok() {
                            histogram.saturating_record(now.elapsed().as_micros() as u64);
                        } else {
                            errors += 1;
                        }
                    }
                }
                (histogram, errors)
            })
        })
        .collect();
    let mut merged = load::histogram();
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await?;
        merged.add(&h)?;
        errors += e;
    }
    let measured = (Instant::now().min(deadline) - measure_from).as_secs_f64();
    Ok(Report::new(&format!("{CEILING_BUS} ({})", bus.backend()), &merged, errors, measured))
}

/// A server process under test, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// hookbridge's admin listener.
    admin: Option<SocketAddr>,
    /// hookbridge's streams listener, when configured.
    streams: Option<SocketAddr>,
}

impl Server {
    fn ceiling() -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--ceiling-server")
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the ceiling server")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        Ok(Self { child, addr: line.trim().parse().context("ceiling server address")?, admin: None, streams: None })
    }

    /// hookbridge with `extra` appended to its config, on a fresh prefix.
    fn hookbridge_with(binary: &PathBuf, dir: &std::path::Path, broker: &Broker, extra: &str) -> anyhow::Result<Self> {
        // A fresh prefix (and stream) per scenario: the ids of one run are new to it.
        let prefix = format!("bench{}", rand_suffix());
        let mut text = hookbridge_config(dir, broker, &prefix);
        text.push_str(extra);
        Self::spawn(binary, dir, &text, "run")
    }

    /// Starts `hookbridge <command>` with `config` (written into `dir`),
    /// and waits until it reports its listeners.
    fn spawn(binary: &PathBuf, dir: &std::path::Path, config: &str, command: &str) -> anyhow::Result<Self> {
        let path = dir.join("hookbridge.toml");
        std::fs::write(&path, config)?;
        let mut child = Command::new(binary)
            .args([command, "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .context("starting hookbridge")?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("hookbridge listening") {
                    let field =
                        |name: &str| line.split_whitespace().find_map(|f| f.strip_prefix(name)).map(str::to_owned);
                    let _ = tx.send((field("webhooks="), field("admin="), field("streams=")));
                } else if line.contains("ERROR")
                    || line.contains("WARN")
                    || line.starts_with("error")
                    || line.starts_with("  -")
                {
                    eprintln!("hookbridge: {line}");
                }
            }
        });
        let (addr, admin, streams) = rx.recv_timeout(Duration::from_secs(120))?;
        let parse = |a: Option<String>| a.and_then(|a| a.parse().ok());
        Ok(Self {
            child,
            addr: parse(addr).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            admin: parse(admin),
            streams: parse(streams),
        })
    }

    /// The process id, for its RSS and CPU time.
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The test config of a hookbridge on `broker`: its embedded bus in
/// `dir/bus`, or the broker's topics (and NATS stream) named by `prefix`.
fn hookbridge_config(dir: &std::path::Path, broker: &Broker, prefix: &str) -> String {
    let mut text = hookbridge_testkit::config_toml(&dir.join("bus"))
        .replace("[ingress]\n", &format!("[ingress]\nprovider_dirs = [\"{}\"]\n", example_providers().display()));
    match broker {
        Broker::Embedded => {}
        Broker::Nats(server) => {
            text = text.replace("backend = \"embedded\"", "backend = \"nats\"");
            text = text.replace("topic_prefix = \"hookbridge\"", &format!("topic_prefix = \"{prefix}\""));
            text.push_str(&format!("[bus.nats]\nurl = \"{}\"\nstream = \"{}\"\n", server.url(), nats_stream(prefix)));
        }
        Broker::Kafka(broker) => {
            text = text.replace("backend = \"embedded\"", "backend = \"kafka\"");
            text = text.replace("topic_prefix = \"hookbridge\"", &format!("topic_prefix = \"{prefix}\""));
            text.push_str(&format!(
                "[bus.kafka]\nbrokers = [\"{}\"]\npartitions = 6\nreplication_factor = 1\n",
                broker.address()
            ));
        }
    }
    text
}

/// The NATS stream of a benchmark's prefix.
fn nats_stream(prefix: &str) -> String {
    prefix.to_uppercase()
}

/// The ceiling: accept the POST, read the whole body, answer a small JSON.
fn ceiling_server() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let app = axum::Router::new().route(
            "/webhooks/{source}",
            axum::routing::post(|body: Bytes| async move {
                std::hint::black_box(&body);
                axum::Json(serde_json_value())
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    })
}

fn serde_json_value() -> &'static str {
    r#"{"status":"accepted","id":"ceiling"}"#
}

/// Per-request cost of each step, single-threaded.
fn steps() {
    use hookbridge_providers::{Provider, Redactor, SourceMeta};
    let meta = SourceMeta { event_source: "urn:hookbridge:source:bench".into(), redactor: Redactor::default() };
    let time = |name: &str, n: u32, mut f: Box<dyn FnMut()>| {
        for _ in 0..n / 10 {
            f();
        }
        let started = Instant::now();
        for _ in 0..n {
            f();
        }
        println!("{name:<44} {:>8.2} µs", started.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    };
    let now = Utc::now();
    for batch in [8usize, 32, 64] {
        let key = keys::mailpace_key();
        let bodies: Vec<Vec<u8>> =
            (0..batch).map(|i| keys::signed(&keys::signer("mailpace"), "email.delivered", i as u64, now).0).collect();
        let sigs: Vec<_> = bodies.iter().map(|b| ed25519_dalek::Signer::sign(&key, b)).collect();
        let vks = vec![key.verifying_key(); batch];
        let n = 20_000 / batch as u32;
        let started = Instant::now();
        for _ in 0..n {
            let messages: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
            assert!(ed25519_dalek::verify_batch(&messages, &sigs, &vks).is_ok());
        }
        println!(
            "{:<44} {:>8.2} µs",
            format!("  ed25519 batch of {batch}, per signature"),
            started.elapsed().as_secs_f64() * 1e6 / f64::from(n * batch as u32)
        );
    }
    for (source, event) in [("mailpace", "email.delivered"), ("mailpipe", "email.sent")] {
        let signer = keys::signer(source);
        let (body, (header, value)) = keys::signed(&signer, event, 1, now);
        let mut headers = hookbridge_providers_headers(header, &value);
        let provider = signer.provider();
        let verifier = match provider {
            Provider::MailPace => {
                hookbridge_providers::Verifier::MailPace(hookbridge_providers::mailpace::Verifier::new(vec![
                    keys::mailpace_key().verifying_key(),
                ]))
            }
            _ => hookbridge_providers::Verifier::Mailpipe(hookbridge_providers::mailpipe::Verifier::new(vec![
                hookbridge_providers::HmacSecret::new(keys::MAILPIPE_SECRET.into()),
            ])),
        };
        println!("{source}: body {} bytes", body.len());
        let b = body.clone();
        let v = std::sync::Arc::new(verifier);
        let v2 = v.clone();
        headers.insert("x-unused", "1".parse().unwrap());
        let h = headers.clone();
        time(
            &format!("  verify ({source})"),
            20_000,
            Box::new(move || assert!(v2.verify(&hookbridge_providers::Request::new(&h, &b), now).is_ok())),
        );
        let b = body.clone();
        let m = meta.clone();
        let p = provider.clone();
        time(
            &format!("  normalize ({source})"),
            20_000,
            Box::new(move || {
                std::hint::black_box(hookbridge_providers::normalize(&p, &b, &m, now).unwrap());
            }),
        );
        let e = hookbridge_providers::normalize(&provider, &body, &meta, now).unwrap();
        println!("  event JSON {} bytes", e.to_json().len());
        for expression in
            [r#"type == "email.bounced" || source.endsWith(":bench")"#, r#"has(data.to) && data.to.size() > 0"#]
        {
            let filter = hookbridge_relay::filter::EventFilter::compile(expression).expect("compiles");
            let event = e.clone();
            time(
                &format!("  filter `{expression}`"),
                20_000,
                Box::new(move || {
                    std::hint::black_box(filter.evaluate(&event));
                }),
            );
        }
        time(
            &format!("  event to JSON ({source})"),
            20_000,
            Box::new(move || {
                std::hint::black_box(e.to_json());
            }),
        );
    }
    defined_steps(&time);
}

/// Times `n` calls of the closure and prints the cost of one.
type Timer = dyn Fn(&str, u32, Box<dyn FnMut()>);

/// The catalogue's verification costs: ECDSA (SendGrid), RSA (SNS v1 and
/// v2), HMAC as a definition against the built-in Mailpipe, and the
/// normalization of a SendGrid batch.
fn defined_steps(time: &Timer) {
    use hookbridge_providers::defined::Request;
    let now = Utc::now();
    let verify = |provider: &'static str, settings: hookbridge_providers::VerifierSettings, batch: usize| {
        let signer = keys::defined_signer(provider);
        let elements = (0..batch).map(|i| signer.element("delivered", i as u64, now).unwrap()).collect();
        let signed = signer.request(elements, 1, now);
        let mut headers = axum::http::HeaderMap::new();
        for (k, v) in &signed.headers {
            headers.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        let definition = signer.definition().clone();
        let verifier = hookbridge_providers::defined::Verifier::new(definition.clone(), &settings).unwrap();
        (signed.body, headers, verifier, definition)
    };
    let sendgrid = hookbridge_providers::VerifierSettings {
        public_keys: vec![keys::sendgrid_key().1.clone()],
        listed_public_keys: 1,
        ..Default::default()
    };
    let (body, headers, verifier, definition) = verify("sendgrid", sendgrid, 100);
    println!("sendgrid: batch of 100, body {} bytes", body.len());
    let (b, h) = (body.clone(), headers.clone());
    time(
        "  verify ECDSA P-256 (sendgrid, 100 events)",
        5_000,
        Box::new(move || assert!(verifier.verify(&Request::new(&h, &b), now).is_ok())),
    );
    let meta = hookbridge_providers::SourceMeta {
        event_source: "urn:hookbridge:source:bench".into(),
        redactor: hookbridge_providers::Redactor::default(),
    };
    let provider = hookbridge_providers::Provider::Defined(definition);
    time(
        "  normalize (sendgrid, 100 events)",
        2_000,
        Box::new(move || {
            let request = Request::new(&headers, &body);
            std::hint::black_box(hookbridge_providers::normalize_all(&provider, &request, &meta, now).unwrap());
        }),
    );
    // RSA as SNS signs: the string to sign of a typical SES notification.
    let text = "Message\n{\"eventType\":\"Delivery\",\"mail\":{\"messageId\":\"m-1\"}}\nMessageId\nmsg-1\nTimestamp\n2026-12-05T10:00:00.000Z\nTopicArn\narn:aws:sns:eu-west-1:123456789012:t\nType\nNotification\n";
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&hookbridge_testkit::sns::signing_key_pkcs8()).unwrap();
    use ring::signature::KeyPair as _;
    let public = pair.public_key().as_ref().to_vec();
    for (version, algorithm) in [
        ("1 (SHA1)", &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY),
        ("2 (SHA256)", &ring::signature::RSA_PKCS1_2048_8192_SHA256),
    ] {
        let signature =
            hookbridge_testkit::sns::sign(text.as_bytes(), if version.starts_with('1') { "1" } else { "2" });
        let key = ring::signature::UnparsedPublicKey::new(algorithm, public.clone());
        time(
            &format!("  verify RSA-2048 SNS v{version}"),
            20_000,
            Box::new(move || assert!(key.verify(text.as_bytes(), &signature).is_ok())),
        );
    }
    let (body, headers, verifier, _) = verify(
        "resend",
        hookbridge_providers::VerifierSettings {
            secrets: vec![keys::CATALOGUE_SECRET.into()],
            listed_secrets: 1,
            ..Default::default()
        },
        1,
    );
    time(
        "  verify Standard Webhooks (resend)",
        20_000,
        Box::new(move || assert!(verifier.verify(&Request::new(&headers, &body), now).is_ok())),
    );
    // HMAC: the Mailpipe twin against the built-in, on the same request.
    let catalogue = hookbridge_providers::Catalogue::load(&[example_providers()]).expect("the examples load");
    let twin = catalogue.get("mailpipe-declarative").expect("the twin").clone();
    let settings = hookbridge_providers::VerifierSettings {
        secrets: vec![keys::MAILPIPE_SECRET.into()],
        listed_secrets: 1,
        ..Default::default()
    };
    let verifier = hookbridge_providers::defined::Verifier::new(twin, &settings).unwrap();
    let (body, (header, value)) = keys::signed(&keys::signer("mailpipe"), "email.sent", 1, now);
    let headers = hookbridge_providers_headers(header, &value);
    time(
        "  verify HMAC as a definition (mailpipe twin)",
        20_000,
        Box::new(move || assert!(verifier.verify(&Request::new(&headers, &body), now).is_ok())),
    );
}

fn hookbridge_providers_headers(name: &'static str, value: &str) -> axum::http::HeaderMap {
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(name, value.parse().expect("header value"));
    headers
}

fn rand_suffix() -> u16 {
    static N: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
