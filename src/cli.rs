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
    /// Run the relay: deliver events to the configured subscribers.
    Relay(ConfigArg),
    /// Run ingress and relay in one process on the configured bus.
    Run(ConfigArg),
    /// Show subscribers, or enable or disable one (through the admin API).
    #[command(subcommand)]
    Subscribers(SubscribersCommand),
    /// List, replay or discard a subscriber's dead letters (through the admin API).
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Re-deliver to a subscriber what the bus retains since a time (through the admin API).
    Replay(ReplayArgs),
    /// The delivery record: every attempt at a subscriber, with its answer (through the admin API).
    #[command(subcommand)]
    Attempts(AttemptsCommand),
    /// Receive deliveries: verify their Standard Webhooks signature and print them.
    Receive(ReceiveArgs),
    /// Validate a config file and print what it configures, without secrets.
    Check(ConfigArg),
    /// Sign a realistic sample webhook the way its provider does and POST it.
    SendSample(SendSampleArgs),
    /// Generate a key pair for test signing: Ed25519 (MailPace-style) or P-256 (SendGrid-style).
    Keygen(KeygenArgs),
    /// The provider catalogue: what each provider sends and how it is verified.
    #[command(subcommand)]
    Providers(ProvidersCommand),
    /// Print the AsyncAPI 3.0 document of the events this configuration publishes and delivers.
    Asyncapi(AsyncapiArgs),
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// `ed25519` (MailPace) or `p256` (SendGrid's ECDSA).
    #[arg(long, default_value = "ed25519")]
    pub kind: String,
}

#[derive(Debug, Subcommand)]
pub enum ProvidersCommand {
    /// Every provider: name, authentication, whether it batches, its events.
    List(ProvidersArgs),
    /// One provider: setup steps, authentication, body, every event and its type, what is unconfirmed.
    Show(ProvidersShowArgs),
}

#[derive(Debug, Args)]
pub struct ProvidersArgs {
    /// Also list the definitions the config's `ingress.provider_dirs` hold.
    #[arg(long, short, env = "HOOKBRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ProvidersShowArgs {
    pub name: String,
    #[command(flatten)]
    pub config: ProvidersArgs,
}

#[derive(Debug, Args)]
pub struct AsyncapiArgs {
    /// The TOML config file.
    #[arg(long, short, env = "HOOKBRIDGE_CONFIG")]
    pub config: PathBuf,
    /// `yaml` or `json`.
    #[arg(long, default_value = "yaml", value_parser = ["yaml", "json"])]
    pub format: String,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The TOML config file.
    #[arg(long, short, env = "HOOKBRIDGE_CONFIG")]
    pub config: PathBuf,
}

/// Where the admin API is: from the config file, overridable by flags.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The config file whose admin.listen and admin.token are used.
    #[arg(long, short, env = "HOOKBRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Base URL of the admin API, e.g. http://10.0.0.5:9090 (default: from admin.listen).
    #[arg(long, env = "HOOKBRIDGE_ADMIN_URL")]
    pub admin_url: Option<String>,
    /// Bearer token (default: admin.token). Also accepts env:NAME and file:PATH.
    #[arg(long, env = "HOOKBRIDGE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SubscribersCommand {
    /// Each subscriber's state, backlog, pending retries and dead letters.
    List(AdminArgs),
    /// Resume deliveries to a subscriber (closes its circuit).
    Enable(SubscriberArgs),
    /// Stop deliveries to a subscriber; its events wait on the bus.
    Disable(SubscriberArgs),
}

#[derive(Debug, Args)]
pub struct SubscriberArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[arg(long)]
    pub subscriber: String,
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// The subscriber's dead letters with why they failed.
    List(SubscriberArgs),
    /// Deliver dead letters again (one with --id, otherwise all).
    Replay(DeadLetterArgs),
    /// Delete dead letters (one with --id, otherwise all).
    Discard(DeadLetterArgs),
}

#[derive(Debug, Args)]
pub struct DeadLetterArgs {
    #[command(flatten)]
    pub target: SubscriberArgs,
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AttemptsCommand {
    /// A subscriber's attempts, newest first: time, event, attempt, outcome, status, latency, next retry.
    List(AttemptsArgs),
}

#[derive(Debug, Args)]
pub struct AttemptsArgs {
    #[command(flatten)]
    pub target: SubscriberArgs,
    /// Only the attempts at this event id.
    #[arg(long)]
    pub event: Option<String>,
    /// `failed`, an outcome (delivered, retry_scheduled, slowed_down, dead_lettered, gone),
    /// an HTTP status (500) or a class (5xx).
    #[arg(long)]
    pub status: Option<String>,
    /// Only attempts made since this time (RFC 3339).
    #[arg(long)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// At most this many (at most 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Also print each attempt's response excerpt.
    #[arg(long)]
    pub responses: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub target: SubscriberArgs,
    /// Start of the window (RFC 3339, e.g. 2026-11-22T10:00:00Z).
    #[arg(long)]
    pub since: chrono::DateTime<chrono::Utc>,
    /// End of the window (default: now).
    #[arg(long)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only these event types (exact, family.*); repeatable.
    #[arg(long = "events")]
    pub events: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Address to listen on, e.g. 127.0.0.1:9000.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: std::net::SocketAddr,
    /// whsec_ secret (v1) or whpk_/whsk_ key (v1a) to verify with; repeatable.
    /// Also accepts env:NAME and file:PATH. Without one, deliveries are
    /// printed unverified (for subscribers configured without a secret).
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// Status to answer verified deliveries with.
    #[arg(long, default_value_t = 204)]
    pub status: u16,
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
    /// The provider (see `hookbridge providers list`); defaults to the source name when it is one.
    #[arg(long)]
    pub provider: Option<String>,
    /// A private key: MailPace's Ed25519 seed (base64, from `hookbridge keygen`), SendGrid's
    /// P-256 PKCS#8 key (base64, from `hookbridge keygen --kind p256`).
    /// Also accepts env:NAME and file:PATH.
    #[arg(long)]
    pub key: Option<String>,
    /// The HMAC or Standard Webhooks secret, or the token. Also accepts env:NAME and file:PATH.
    #[arg(long)]
    pub secret: Option<String>,
    /// Basic authentication (Postmark, SparkPost, Brevo). Also accept env:NAME and file:PATH.
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long)]
    pub password: Option<String>,
    /// Providers that sign the URL (Mandrill): the URL as configured at the provider;
    /// defaults to the URL posted to.
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// SES (SNS): the URL where the certificate of --key is served (https, on a host the
    /// source's signing_cert_host allows). --key is then the RSA private key (PKCS#8, PEM or
    /// base64 DER; file:PATH).
    #[arg(long)]
    pub signing_cert_url: Option<String>,
    /// SES (SNS): the TopicArn of the messages.
    #[arg(long, default_value = "arn:aws:sns:us-east-1:123456789012:hookbridge-sample")]
    pub topic_arn: String,
    /// Providers that batch: events per request.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// A config file whose `ingress.provider_dirs` define more providers.
    #[arg(long, short, env = "HOOKBRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
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
        "bus: {} (topic prefix {}, {})",
        config.bus.backend(),
        config.topic_prefix,
        config.bus.location()
    );
    let _ = writeln!(out, "ingress: {} (max body {} bytes)", config.ingress.listen, config.ingress.max_body_bytes);
    for source in &config.ingress.sources {
        let _ = writeln!(out, "  POST /webhooks/{}  provider {}", source.name, source.provider);
    }
    for s in &config.relay.subscribers {
        let events: Vec<String> = s.events.iter().map(ToString::to_string).collect();
        let mut notes = Vec::new();
        if !s.enabled {
            notes.push("disabled".to_owned());
        }
        if s.ordering == hookbridge_relay::ordering::Ordering::Subject {
            notes.push("in order per subject".to_owned());
        }
        if s.filter.is_some() {
            notes.push("filtered".to_owned());
        }
        if let Some(limit) = s.rate_limit {
            notes.push(format!("at most {}/s", limit.per_second));
        }
        let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join(", ")) };
        let _ = writeln!(out, "  deliver {} to subscriber {}{notes}", events.join(", "), s.name);
    }
    let _ = writeln!(
        out,
        "admin: {} (admin API {})",
        config.admin.listen,
        if config.admin.token.is_some() { "enabled" } else { "off: no admin.token" }
    );
    if let Some(streams) = &config.streams {
        let _ = writeln!(out, "streams: {} (GET /streams/events, GET /streams/ws)", streams.listen);
        for token in &streams.tokens {
            let events: Vec<String> = token.events.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "  token {} may read {}", token.name, events.join(", "));
        }
    }
    out
}
