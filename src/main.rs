//! The `hookbridge` command: parses arguments and config, sets up logging,
//! binds, and hands over to the library crates.

mod cli;
mod sample;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use hookbridge_bus::embedded::EmbeddedBus;
use hookbridge_config::{Config, LogFormat};
use hookbridge_ingress::{Health, Ingress};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};

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
        Command::Ingress(args) | Command::Run(args) => {
            let config = load(&args.config)?;
            init_logging(&config);
            serve(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => {
            let config = load(&args.config)?;
            print!("{}", cli::summary(&config));
            Ok(ExitCode::SUCCESS)
        }
        Command::SendSample(args) => sample::send(args).await,
        Command::Keygen => {
            print!("{}", sample::keygen()?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
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

/// Opens the bus, binds both listeners, serves until SIGTERM or Ctrl-C, then
/// drains within the grace period.
async fn serve(config: Config) -> anyhow::Result<()> {
    let bus = EmbeddedBus::open(config.bus.embedded.clone()).context("opening the embedded bus")?;
    let listener = TcpListener::bind(config.ingress.listen)
        .await
        .with_context(|| format!("binding ingress.listen {}", config.ingress.listen))?;
    let admin = TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("binding admin.listen {}", config.admin.listen))?;
    tracing::info!(
        webhooks = %listener.local_addr()?,
        admin = %admin.local_addr()?,
        backend = "embedded",
        bus = %bus.path().display(),
        sources = config.ingress.sources.len(),
        "hookbridge listening"
    );
    let publisher = Arc::new(bus);
    let ingress = Arc::new(Ingress::new(&config.ingress, publisher.clone()));
    let health = Health::new(publisher.clone());
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(shutdown.clone()));
    let grace = config.ingress.shutdown_grace;
    let server = hookbridge_ingress::run(ingress, health, listener, admin, shutdown.clone());
    tokio::select! {
        result = server => result.context("serving")?,
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "shutdown grace period over with requests in flight; exiting");
        }
    }
    tracing::info!("hookbridge stopped");
    Ok(())
}

/// Fires `token` on SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested; draining");
    token.cancel();
}
