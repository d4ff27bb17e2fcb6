//! The `hookbridge` command: parses arguments and config, sets up logging,
//! binds, and hands over to the library crates.

mod admin;
mod asyncapi;
mod cli;
mod otel;
mod providers;
mod receive;
mod sample;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use hookbridge_config::{Config, LogFormat};
use hookbridge_ingress::serve::TlsReloader;
use hookbridge_ingress::{Health, Ingress};
use hookbridge_relay::Relay;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};

/// mimalloc rather than the C library's allocator: less CPU per delivery and
/// less memory held in fragments (docs/performance.md, "The relay at scale").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Ingress(args) => run_role(&args.config, Role { ingress: true, relay: false }).await,
        Command::Relay(args) => run_role(&args.config, Role { ingress: false, relay: true }).await,
        Command::Run(args) => run_role(&args.config, Role { ingress: true, relay: true }).await,
        Command::Subscribers(command) => admin::subscribers(command).await,
        Command::DeadLetters(command) => admin::dead_letters(command).await,
        Command::Replay(args) => admin::replay(args).await,
        Command::Attempts(command) => admin::attempts(command).await,
        Command::Receive(args) => receive::run(args).await,
        Command::Check(args) => {
            let config = load(&args.config)?;
            print!("{}", cli::summary(&config));
            Ok(ExitCode::SUCCESS)
        }
        Command::SendSample(args) => sample::send(args).await,
        Command::Keygen(args) => {
            print!("{}", sample::keygen(&args.kind)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Providers(command) => providers::run(command),
        Command::Asyncapi(args) => {
            let document = asyncapi::document(&load(&args.config)?);
            let text = match args.format.as_str() {
                "json" => serde_json::to_string_pretty(&document)? + "\n",
                _ => serde_norway::to_string(&document)?,
            };
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}")).with_context(|| format!("loading {}", path.display()))
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The configured bus, and where it is (for the log).
async fn open_bus(config: &Config) -> anyhow::Result<(Arc<dyn hookbridge_bus::Bus>, String)> {
    let bus =
        hookbridge_bus::open(&config.bus).await.with_context(|| format!("opening the {} bus", config.bus.backend()))?;
    Ok((bus, config.bus.location()))
}

/// How long a stopping relay waits for its consumers to leave their groups.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Which halves of hookbridge a process runs.
#[derive(Debug, Clone, Copy)]
struct Role {
    ingress: bool,
    relay: bool,
}

async fn run_role(path: &std::path::Path, role: Role) -> anyhow::Result<ExitCode> {
    // Signals are taken from the first moment: a SIGTERM while starting
    // (a rollout that changed its mind) stops the process cleanly instead
    // of killing it with the default action.
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(shutdown.clone()));
    let config = load(path)?;
    if role.ingress && config.ingress.sources.is_empty() {
        anyhow::bail!("no [[ingress.sources]] are configured: nothing would be received");
    }
    if role.relay && !role.ingress && config.relay.subscribers.is_empty() {
        anyhow::bail!("no [[relay.subscribers]] are configured: nothing would be delivered");
    }
    init_logging(&config);
    serve(config, role, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Opens the bus, binds the listeners, serves until SIGTERM or Ctrl-C, then
/// drains within the grace period: readiness drops, webhooks in flight are
/// answered, deliveries in flight finish and are settled.
async fn serve(config: Config, role: Role, shutdown: CancellationToken) -> anyhow::Result<()> {
    let spans = otel::install(&config.tracing)?;
    let (bus, where_) = tokio::select! {
        opened = open_bus(&config) => opened?,
        () = shutdown.cancelled() => {
            tracing::info!("shutdown requested while opening the bus");
            return Ok(());
        }
    };
    let publisher: Arc<dyn hookbridge_bus::Publisher> = bus.clone();
    let health = Health::new(publisher.clone());
    let registry = metrics_registry(role)?;
    let relay = if role.relay && !config.relay.subscribers.is_empty() {
        Some(
            Relay::start(bus.clone(), config.relay.clone(), shutdown.clone(), &registry)
                .await
                .context("starting the relay")?,
        )
    } else {
        None
    };
    let ingress = if role.ingress {
        Some(Arc::new(
            Ingress::new(&config.ingress, publisher.clone(), &registry).context("registering ingress metrics")?,
        ))
    } else {
        None
    };
    let registry_for_streams = registry.clone();
    let registry_for_console = registry.clone();
    let mut admin_router = hookbridge_ingress::admin_router(health.clone(), registry);
    if let Some(relay) = &relay {
        admin_router = admin_router.merge(hookbridge_relay::api::router(relay.clone(), config.admin.token.as_ref()));
        // The web console, where the relay runs (docs/console.md).
        let console = hookbridge_console::Console::new(
            relay.clone(),
            bus.clone(),
            registry_for_console,
            config.admin.token.as_ref(),
            shutdown.clone(),
        );
        admin_router = admin_router.merge(console.router());
    }
    // The AsyncAPI document names brokers and subscribers: behind the token.
    // Serialized once: the config does not change while the process runs.
    let document = bytes::Bytes::from(serde_json::to_vec(&asyncapi::document(&config))?);
    admin_router = admin_router.merge(hookbridge_relay::api::require_token(
        axum::Router::new().route(
            "/asyncapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { ([(http::header::CONTENT_TYPE, "application/json")], document) }
            }),
        ),
        config.admin.token.as_ref(),
    ));
    let streams = match &config.streams {
        Some(settings) => {
            let metrics =
                hookbridge_streams::StreamMetrics::new(&registry_for_streams).context("registering stream metrics")?;
            let listener = TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("binding streams.listen {}", settings.listen))?;
            let addr = listener.local_addr()?;
            let router = hookbridge_streams::router(bus.clone(), settings.clone(), metrics, shutdown.clone());
            Some((addr, tokio::spawn(hookbridge_streams::serve(listener, router, shutdown.clone()))))
        }
        None => None,
    };
    let admin = TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("binding admin.listen {}", config.admin.listen))?;
    let listener = if role.ingress {
        Some(
            TcpListener::bind(config.ingress.listen)
                .await
                .with_context(|| format!("binding ingress.listen {}", config.ingress.listen))?,
        )
    } else {
        None
    };
    let load_tls = |files: &Option<hookbridge_ingress::serve::TlsFiles>, key: &str| {
        files.clone().map(TlsReloader::load).transpose().with_context(|| format!("loading {key}"))
    };
    let ingress_tls = if role.ingress { load_tls(&config.ingress.listener.tls, "ingress.tls")? } else { None };
    let admin_tls = load_tls(&config.admin.listener.tls, "admin.tls")?;
    reload_tls_on_hangup(ingress_tls.iter().chain(&admin_tls).cloned().collect());
    tracing::info!(
        tls = match (&ingress_tls, &admin_tls) {
            (Some(_), Some(_)) => "webhooks and admin",
            (Some(_), None) => "webhooks",
            (None, Some(_)) => "admin",
            (None, None) => "off",
        },
        webhooks = %listener.as_ref().and_then(|l| l.local_addr().ok()).map_or("-".to_owned(), |a| a.to_string()),
        admin = %admin.local_addr()?,
        streams = %streams.as_ref().map_or("-".to_owned(), |(addr, _)| addr.to_string()),
        backend = bus.backend(),
        bus = %where_,
        sources = if role.ingress { config.ingress.sources.len() } else { 0 },
        subscribers = relay.as_ref().map_or(0, |_| config.relay.subscribers.len()),
        "hookbridge listening"
    );
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(hookbridge_ingress::serve_admin(
        admin,
        admin_router,
        config.admin.listener.clone(),
        admin_tls,
        admin_stop.clone(),
    ));

    let grace = config.ingress.shutdown_grace.max(config.relay_shutdown_grace);
    let work = async {
        if let (Some(listener), Some(ingress)) = (listener, ingress) {
            hookbridge_ingress::serve_webhooks(ingress, health.clone(), listener, ingress_tls, shutdown.clone()).await;
        } else {
            shutdown.cancelled().await;
            health.start_draining();
        }
        if let Some(relay) = &relay {
            relay.wait().await;
        }
        anyhow::Ok(())
    };
    tokio::select! {
        result = work => result.context("serving")?,
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "shutdown grace period over with work in flight; exiting");
        }
    }
    // The relay's consumers leave their groups (Kafka), so the other
    // replicas take over its partitions now, not after a session timeout.
    if relay.is_some() && tokio::time::timeout(CLOSE_WAIT, bus.close()).await.is_err() {
        tracing::warn!(wait = ?CLOSE_WAIT, "the bus's consumers did not close in time; other relays take over after the session timeout");
    }
    if let Some((_, streams)) = streams {
        // Its streams ended when shutdown fired (each with a `disconnect`).
        if tokio::time::timeout(CLOSE_WAIT, streams).await.is_err() {
            tracing::warn!("stream connections did not close in time");
        }
    }
    admin_stop.cancel();
    let _ = admin_task.await;
    otel::shutdown(spans).await;
    tracing::info!("hookbridge stopped");
    Ok(())
}

/// The process's metrics: build info, process metrics, and what the roles
/// register on it.
fn metrics_registry(role: Role) -> anyhow::Result<prometheus::Registry> {
    let registry = prometheus::Registry::new();
    let build = prometheus::IntGaugeVec::new(
        prometheus::Opts::new("hookbridge_build_info", "Always 1; labels say which hookbridge runs in which role."),
        &["version", "role"],
    )?;
    let name = match (role.ingress, role.relay) {
        (true, true) => "all",
        (true, false) => "ingress",
        _ => "relay",
    };
    build.with_label_values(&[env!("CARGO_PKG_VERSION"), name]).set(1);
    registry.register(Box::new(build))?;
    registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
    Ok(registry)
}

/// Loads the listeners' certificates again on SIGHUP (they are also
/// reloaded when their files change). Without TLS, SIGHUP keeps its
/// default action.
fn reload_tls_on_hangup(reloaders: Vec<Arc<TlsReloader>>) {
    #[cfg(unix)]
    if !reloaders.is_empty() {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; certificates reload only when their files change");
            return;
        };
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!(listeners = reloaders.len(), "SIGHUP: reloading TLS certificates");
                for reloader in &reloaders {
                    if let Err(error) = reloader.reload() {
                        tracing::error!(%error, "TLS certificate not reloaded; still serving the previous one");
                    }
                }
            }
        });
    }
}

/// Fires `token` on SIGTERM (Kubernetes) or Ctrl-C.
fn shutdown_on_signal(token: CancellationToken) -> impl Future<Output = ()> {
    // Registered when called, not when first polled: a SIGTERM that comes
    // right after must drain, not kill with the default action.
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    };
    async move {
        #[cfg(unix)]
        match signals {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested; draining");
        token.cancel();
    }
}
