//! `hookbridge-chaos`: hunts for the faults hookbridge's promise does not
//! survive. It drives the real binary (ingress and relay as separate
//! processes, two of each on NATS and Kafka), real brokers and recording
//! subscribers through a seeded random schedule of faults while providers
//! send signed webhooks, then checks after a quiet period that every webhook
//! answered 200 reached every subscriber it matches (see [`check`]).
//!
//! - [`schedule`]: the seeded faults; [`world`]: the processes, broker and
//!   configs; [`sender`]: the providers and the ledger of 200s;
//!   [`subscriber`]: the recording subscribers; [`check`]: the invariant.
//!
//! Run it through `scripts/chaos`; its last line reads
//! `seed S: N events, F faults, V violations` and it exits 1 on any violation.

mod check;
mod proxy;
mod schedule;
mod sender;
mod subscriber;
mod world;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Parser;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use reqwest::Method;

use crate::check::{DeadLetter, Snapshot, Verdict};
use crate::schedule::{Action, Fault, SUBSCRIBERS};
use crate::sender::Ledger;
use crate::subscriber::Mode;
use crate::world::{Backend, Proc, World};

#[derive(Debug, Parser)]
#[command(about = "Drives hookbridge through a seeded schedule of faults and checks that nothing acknowledged is lost")]
struct Args {
    /// The bus: embedded (one `run` process), nats or kafka (two ingress and two relay processes).
    #[arg(long, value_enum, default_value = "embedded")]
    backend: Backend,
    /// The schedule's seed (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// How long faults are injected, in minutes (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Webhooks sent per second.
    #[arg(long, default_value_t = 40)]
    rate: u32,
    /// The longest quiet period for everything to settle, in seconds.
    #[arg(long, default_value_t = 120)]
    settle: u64,
    /// The hookbridge binary.
    #[arg(long, default_value = "target/debug/hookbridge")]
    bin: PathBuf,
    /// Keep the run's directory (configs, process logs) even when it passes.
    #[arg(long)]
    keep: bool,
}

/// What became of a scheduled fault.
#[derive(Debug)]
struct Outcome {
    /// When its effect ended (the process back, the broker back, the
    /// subscriber answering again); `None` when it was skipped.
    ended: Option<DateTime<Utc>>,
    note: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| Utc::now().timestamp_micros().unsigned_abs() % 1_000_000);
    let length = Duration::from_secs_f64(args.minutes.max(0.05) * 60.0);
    let schedule = schedule::generate(seed, args.backend, length);
    println!(
        "hookbridge chaos: backend {}, seed {seed}, {:.0}s of faults, {} webhooks/s",
        args.backend.name(),
        length.as_secs_f64(),
        args.rate
    );
    println!("schedule ({} faults):", schedule.len());
    for fault in &schedule {
        println!("  {fault}");
    }
    let bin =
        std::fs::canonicalize(&args.bin).with_context(|| format!("no hookbridge binary at {}", args.bin.display()))?;
    let dir =
        tempfile::Builder::new().prefix(&format!("hookbridge-chaos-{}-{seed}-", args.backend.name())).tempdir()?;
    let world = Arc::new(World::new(args.backend, &bin, dir.path()).await?);
    let result = run(&world, &schedule, seed, length, &args).await;
    world.shut_down().await;
    let violations = match result {
        Ok(violations) => violations,
        Err(error) => {
            println!("the run could not be completed: {error:#}");
            usize::MAX
        }
    };
    if violations > 0 || args.keep {
        let kept = dir.keep();
        println!("configs and process logs kept in {}", kept.display());
    }
    if violations > 0 {
        std::process::exit(1);
    }
    Ok(())
}

async fn run(
    world: &Arc<World>,
    schedule: &[Fault],
    seed: u64,
    length: Duration,
    args: &Args,
) -> anyhow::Result<usize> {
    // Relays first: the subscribers' groups are born before any webhook.
    let processes = world.backend.processes();
    for process in processes.iter().filter(|p| p.delivers()) {
        world.start(*process).await?;
    }
    for process in processes.iter().filter(|p| !p.delivers()) {
        world.start(*process).await?;
    }
    let born = Utc::now();
    let ledger = Arc::new(Ledger::new());
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = sender::spawn(world.clone(), ledger.clone(), seed, args.rate, stop.clone());
    if world.subscribers.iter().any(|s| s.ordered) {
        senders.extend(sender::spawn_series(world.clone(), ledger.clone(), stop.clone()));
    }
    let reaper = {
        let (world, stop) = (world.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                world.reap().await;
            }
        })
    };

    let start = tokio::time::Instant::now();
    let broker_away = Arc::new(AtomicBool::new(false));
    let mut running = Vec::new();
    for (i, fault) in schedule.iter().enumerate() {
        tokio::time::sleep_until(start + fault.at).await;
        let (world, ledger, fault, broker_away) = (world.clone(), ledger.clone(), fault.clone(), broker_away.clone());
        running.push(tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(i as u64));
            execute(&world, &ledger, &fault, &broker_away, &mut rng).await
        }));
    }
    tokio::time::sleep_until(start + length).await;
    stop.store(true, Ordering::SeqCst);
    for sender in senders {
        let _ = sender.await;
    }
    let mut outcomes = Vec::new();
    for task in running {
        outcomes.push(task.await.unwrap_or(Outcome { ended: None, note: Some("the fault's task panicked".into()) }));
    }
    let _ = reaper.await;
    let faults_over = Utc::now();

    // The quiet period: everything whole again, then wait for it to settle.
    world.broker_up().await;
    for process in world.late_everywhere() {
        world.stop(process, false).await;
    }
    for process in &processes {
        world.start(*process).await?;
    }
    for subscriber in &world.subscribers {
        subscriber.set_mode(Mode::Ok);
    }
    let late_born = *world.late_born.lock().expect("born lock");
    let ordered = world.subscribers.iter().filter(|s| s.ordered).map(|s| s.name);
    for name in SUBSCRIBERS.into_iter().chain(ordered) {
        if name != "late" || late_born.is_some() {
            admin_retrying(world, Method::POST, &format!("/admin/subscribers/{name}/enable")).await;
        }
    }
    let accepted = ledger.accepted();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.settle);
    let verdict = loop {
        world.reap().await;
        let verdict = check::evaluate(&snapshot(world, &accepted, born, late_born).await?);
        if verdict.missing.is_empty() || tokio::time::Instant::now() >= deadline {
            break verdict;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let settled_after = (Utc::now() - faults_over).as_seconds_f64();
    // A last look for anything arriving where it should not.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut verdict = if verdict.missing.is_empty() {
        check::evaluate(&snapshot(world, &accepted, born, late_born).await?)
    } else {
        verdict
    };
    for problem in ledger.resend_problems.lock().expect("problems lock").iter() {
        verdict
            .violations
            .entry("an ingress answered a valid webhook wrongly")
            .or_default()
            .push((problem.clone(), None));
    }
    for crash in world.crashes.lock().expect("crashes lock").iter() {
        verdict.violations.entry("a process ended by itself").or_default().push((crash.clone(), None));
    }
    report(schedule, &outcomes, &ledger, &accepted, &verdict, start, settled_after, seed);
    if verdict.violation_count() > 0 {
        // What the relays say of each subscriber, for the investigation.
        for admin in 0..world.relay_admins().len() {
            if let Ok(list) = world.admin(admin, Method::GET, "/admin/subscribers").await {
                for s in list.as_array().into_iter().flatten() {
                    println!(
                        "  relay {admin} says: {} {} backlog {} retries {} dead letters {}",
                        s["name"].as_str().unwrap_or("?"),
                        s["state"].as_str().unwrap_or("?"),
                        s["backlog"],
                        s["pending_retries"],
                        s["dead_letters"]
                    );
                }
            }
        }
    }
    Ok(verdict.violation_count())
}

/// The subscribers' records and dead letters now.
async fn snapshot<'a>(
    world: &'a World,
    accepted: &'a HashMap<String, sender::Accepted>,
    born: DateTime<Utc>,
    late_born: Option<DateTime<Utc>>,
) -> anyhow::Result<Snapshot<'a>> {
    let mut subscribers = Vec::new();
    let mut dead_letters = HashMap::new();
    for subscriber in &world.subscribers {
        let born = if subscriber.name == "late" { late_born } else { Some(born) };
        let present = born.is_some();
        if present {
            let path = format!("/admin/subscribers/{}/dead-letters", subscriber.name);
            let list = admin_retrying(world, Method::GET, &path).await.context("cannot list dead letters")?;
            let letters: HashMap<String, DeadLetter> = list
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| {
                    let at = l["dead_lettered_at"].as_str().and_then(|t| t.parse().ok()).unwrap_or_else(Utc::now);
                    let letter = DeadLetter {
                        at,
                        attempts: l["attempts"].as_u64().unwrap_or(0),
                        last_error: l["last_error"].as_str().unwrap_or_default().to_owned(),
                    };
                    (l["event_id"].as_str().unwrap_or_default().to_owned(), letter)
                })
                .collect();
            dead_letters.insert(subscriber.name, letters);
        }
        subscribers.push((subscriber.as_ref(), present, born, subscriber.received()));
    }
    // A webhook resent after the broker's dedup window (NATS: 2 minutes), or
    // to another ingress on Kafka, is published again; the embedded bus
    // remembers ids for 24 hours, longer than any run.
    let republishes = world.backend != Backend::Embedded;
    let order_promised = world.backend == Backend::Embedded;
    Ok(Snapshot { accepted, subscribers, dead_letters, republishes, order_promised })
}

/// An admin call to any running relay, tried for up to 30 s.
async fn admin_retrying(world: &World, method: Method, path: &str) -> Option<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        match world.admin(n, method.clone(), path).await {
            Ok(value) => return Some(value),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                eprintln!("chaos: {method} {path}: {error:#}");
                return None;
            }
            Err(_) => {
                n += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn execute(
    world: &World,
    ledger: &Ledger,
    fault: &Fault,
    broker_away: &AtomicBool,
    rng: &mut ChaCha8Rng,
) -> Outcome {
    let skipped = |why: &str| Outcome { ended: None, note: Some(why.to_owned()) };
    let done = |note: Option<String>| Outcome { ended: Some(Utc::now()), note };
    let restart = |process: Proc| async move {
        match world.start(process).await {
            Ok(()) => None,
            Err(error) => Some(format!("{error:#}")),
        }
    };
    match &fault.action {
        Action::Kill { process, down } | Action::Term { process, down } => {
            let _turn = world.turn(*process).await;
            if !world.running(*process) {
                return skipped("not running");
            }
            if world.backend == Backend::Kafka && process.delivers() && broker_away.load(Ordering::SeqCst) {
                // A relay stopped now cannot leave its groups; noida-db's
                // engine would keep its members forever (Kafka expires them
                // after the session timeout: the tansu kill -9 tests).
                return skipped("the broker is away");
            }
            world.stop(*process, matches!(fault.action, Action::Kill { .. })).await;
            tokio::time::sleep(*down).await;
            done(restart(*process).await)
        }
        Action::Broker { down } => {
            if broker_away.swap(true, Ordering::SeqCst) {
                return skipped("already away");
            }
            world.broker_down().await;
            tokio::time::sleep(*down).await;
            world.broker_up().await;
            broker_away.store(false, Ordering::SeqCst);
            done(None)
        }
        Action::NewType => done(Some(ledger.new_type().unwrap_or_else(|| "no type left".into()))),
        Action::Duplicates { count } => {
            sender::resend(world, ledger, *count, rng).await;
            done(None)
        }
        Action::Subscriber { subscriber, mode, lasts } => {
            let s = &world.subscribers[*subscriber];
            if s.mode() != Mode::Ok {
                return skipped("already misbehaving");
            }
            // The ordered subscriber misbehaves with `all` (the schedules
            // of earlier seeds stay as they were).
            let ordered = world.subscribers.iter().find(|o| o.ordered).filter(|_| s.name == "all");
            let targets: Vec<_> = std::iter::once(s).chain(ordered).collect();
            targets.iter().for_each(|t| t.set_mode(*mode));
            tokio::time::sleep(*lasts).await;
            targets.iter().for_each(|t| t.set_mode(Mode::Ok));
            if *mode == Mode::Gone {
                // The relay disabled it; an operator enables it again.
                for t in &targets {
                    admin_retrying(world, Method::POST, &format!("/admin/subscribers/{}/enable", t.name)).await;
                }
            }
            done(None)
        }
        Action::Disable { subscriber, lasts } => {
            let name = SUBSCRIBERS[*subscriber];
            admin_retrying(world, Method::POST, &format!("/admin/subscribers/{name}/disable")).await;
            tokio::time::sleep(*lasts).await;
            admin_retrying(world, Method::POST, &format!("/admin/subscribers/{name}/enable")).await;
            done(None)
        }
        Action::ReplayDeadLetters { subscriber } => {
            let name = SUBSCRIBERS[*subscriber];
            let replayed =
                admin_retrying(world, Method::POST, &format!("/admin/subscribers/{name}/dead-letters/replay")).await;
            done(replayed.map(|v| format!("replayed {}", v["count"])))
        }
        Action::RelayConfig { relay } => {
            if broker_away.load(Ordering::SeqCst) {
                // A new subscriber's birth needs the bus.
                return skipped("the broker is away");
            }
            let _turn = world.turn(*relay).await;
            world.toggle_late(*relay);
            world.stop(*relay, false).await;
            done(restart(*relay).await)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    schedule: &[Fault],
    outcomes: &[Outcome],
    ledger: &Ledger,
    accepted: &HashMap<String, sender::Accepted>,
    verdict: &Verdict,
    start: tokio::time::Instant,
    settled_after: f64,
    seed: u64,
) {
    let started = Utc::now() - chrono::Duration::from_std(start.elapsed()).unwrap_or_default();
    // Recovery: from the end of a fault until everything accepted before
    // then is settled everywhere it must be (an upper bound where faults
    // overlap: a subscriber failing meanwhile counts too).
    let recovery = |ended: DateTime<Utc>| {
        verdict
            .settled
            .iter()
            .filter(|((_, id), _)| accepted.get(id).is_some_and(|a| a.at < ended))
            .map(|(_, at)| (*at - ended).as_seconds_f64())
            .fold(0.0_f64, f64::max)
    };
    println!("what happened:");
    let mut by_kind: BTreeMap<&str, (usize, Vec<f64>)> = BTreeMap::new();
    for (fault, outcome) in schedule.iter().zip(outcomes) {
        let note = outcome.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default();
        let Some(ended) = outcome.ended else {
            println!("  {fault}: skipped{note}");
            continue;
        };
        let took = recovery(ended);
        println!("  {fault}: over at t+{:.1}s{note}, recovered {took:.1}s later", (ended - started).as_seconds_f64());
        let entry = by_kind.entry(fault.action.kind()).or_default();
        entry.0 += 1;
        entry.1.push(took);
    }
    let executed = outcomes.iter().filter(|o| o.ended.is_some()).count();
    println!("figures:");
    println!(
        "  events accepted: {} ({} resent by providers, {} answers other than 200 retried, {} webhooks given up)",
        accepted.len(),
        ledger.resent.load(Ordering::Relaxed),
        ledger.not_ok.load(Ordering::Relaxed),
        ledger.given_up.load(Ordering::Relaxed)
    );
    println!(
        "  deliveries: {} ({} repeats taken again, {} of a webhook published again, {} of events whose 200 was lost), dead letters at the end: {}",
        verdict.deliveries, verdict.repeats, verdict.republished, verdict.unacknowledged, verdict.dead_lettered
    );
    println!("  settled {settled_after:.1}s after the last fault");
    if verdict.series == 0 {
        println!("  ordered subscriber: none in this run");
    } else if verdict.order_breaks.is_empty() {
        println!(
            "  ordered subscriber: {} series, each event sent after the one before it was settled",
            verdict.series
        );
    } else {
        println!(
            "  ordered subscriber: {} series; {} events sent before the one before them was settled (allowed on this backend, docs/relay.md), e.g. {}",
            verdict.series,
            verdict.order_breaks.len(),
            verdict.order_breaks[0]
        );
    }
    println!("  faults: {executed} of {} run", schedule.len());
    for (kind, (count, recoveries)) in &mut by_kind {
        let (p50, max) = (check::percentile(recoveries, 50.0), check::percentile(recoveries, 100.0));
        println!("    {kind:<24} {count:>3}   recovery p50 {p50:>5.1}s  max {max:>5.1}s");
    }
    let violations = verdict.violation_count();
    if violations == 0 {
        println!("violations: none");
    } else {
        println!("violations:");
        let around = |id: &str| -> String {
            let Some(a) = accepted.get(id) else { return String::new() };
            let near: Vec<String> = schedule
                .iter()
                .filter(|f| {
                    let at = started + chrono::Duration::from_std(f.at).unwrap_or_default();
                    (a.at - at).num_seconds().abs() <= 8
                })
                .map(ToString::to_string)
                .collect();
            format!(" accepted at t+{:.1}s; faults around it: {}", (a.at - started).as_seconds_f64(), near.join(" | "))
        };
        if !verdict.missing.is_empty() {
            let mut per: BTreeMap<&str, usize> = BTreeMap::new();
            for (subscriber, _) in &verdict.missing {
                *per.entry(subscriber).or_default() += 1;
            }
            let per: Vec<String> = per.iter().map(|(s, n)| format!("{n} to {s}")).collect();
            println!("  neither delivered nor dead-lettered: {} ({})", verdict.missing.len(), per.join(", "));
            for (subscriber, id) in verdict.missing.iter().take(20) {
                let ty = accepted.get(id).map_or("?", |a| a.ty.as_str());
                println!("    {id} ({ty}) to {subscriber};{}", around(id));
            }
        }
        for (kind, items) in &verdict.violations {
            println!("  {kind}: {}", items.len());
            for (what, id) in items.iter().take(20) {
                println!("    {what}{}", id.as_deref().map(|id| format!(" {id};{}", around(id))).unwrap_or_default());
            }
        }
        println!("rerun with the same --backend and --seed {seed} to replay this schedule");
    }
    println!("seed {seed}: {} events, {executed} faults, {violations} violations", accepted.len());
}
