use std::fmt::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use hookbridge_config::Config;

/// Verifies email and messaging provider webhooks, normalizes them into
/// CloudEvents and publishes them onto a durable bus, one topic per type.
#[derive(Debug, Parser)]
#[command(name = "hookbridge", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook ingress.
    Ingress(ConfigArg),
    /// Run everything in one process (today: the ingress on the configured bus).
    Run(ConfigArg),
    /// Validate a config file and print what it configures, without secrets.
    Check(ConfigArg),
    /// Sign a realistic sample webhook the way its provider does and POST it.
    SendSample(SendSampleArgs),
    /// Generate an Ed25519 key pair for MailPace-style test signing.
    Keygen,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The TOML config file.
    #[arg(long, short, env = "HOOKBRIDGE_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct SendSampleArgs {
    /// The source name on the ingress: the request goes to <URL>/webhooks/<SOURCE>.
    #[arg(long)]
    pub source: String,
    /// The provider's own event name, e.g. email.delivered.
    #[arg(long)]
    pub event: String,
    /// Base URL of the ingress, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    /// mailpace, mailpipe or whippy; defaults to the source name when it is one.
    #[arg(long)]
    pub provider: Option<String>,
    /// MailPace: the Ed25519 private key (base64 32-byte seed, from `hookbridge keygen`).
    /// Also accepts env:NAME and file:PATH.
    #[arg(long)]
    pub key: Option<String>,
    /// Mailpipe and Whippy: the HMAC secret. Also accepts env:NAME and file:PATH.
    #[arg(long)]
    pub secret: Option<String>,
    /// Whippy: hmac-sha256-hex, hmac-sha256-base64 or timestamped.
    #[arg(long, default_value = "hmac-sha256-hex")]
    pub scheme: String,
    /// How many distinct samples to send.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
}

/// What `check` prints: the shape of the config, never a secret.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config is valid");
    let _ = writeln!(
        out,
        "bus: {} (topic prefix {}, path {})",
        config.bus.backend.as_str(),
        config.bus.topic_prefix,
        config.bus.embedded.path.display()
    );
    let _ = writeln!(out, "ingress: {} (max body {} bytes)", config.ingress.listen, config.ingress.max_body_bytes);
    for source in &config.ingress.sources {
        let _ = writeln!(out, "  POST /webhooks/{}  provider {}", source.name, source.provider);
    }
    let _ = writeln!(out, "admin: {}", config.admin.listen);
    out
}
