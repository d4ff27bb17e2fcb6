//! The CLI's admin commands: clients of the admin API, so they work the
//! same against a local `hookbridge run` and a relay in a cluster.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use hookbridge_config::Config;
use hookbridge_config::secret::SecretRef;
use hookbridge_relay::api::{Count, DeadLetterView, ReplayRequest, Selection};
use hookbridge_relay::replay::ReplayView;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;

use crate::cli::{AdminArgs, AttemptsCommand, DeadLettersCommand, ReplayArgs, SubscribersCommand};

struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    fn new(args: &AdminArgs) -> anyhow::Result<Self> {
        let (listen, config_token) = match &args.config {
            Some(path) => Config::admin_client(path).map_err(|e| anyhow::anyhow!("{e}"))?,
            None => (hookbridge_config::raw::AdminConfig::default().listen, None),
        };
        let base = match &args.admin_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                // A wildcard listen address is reached on loopback.
                let host = if listen.ip().is_unspecified() { "127.0.0.1".to_owned() } else { listen.ip().to_string() };
                format!("http://{host}:{}", listen.port())
            }
        };
        let token = match &args.token {
            Some(t) => Some(SecretRef::parse(t).resolve().map_err(|e| anyhow::anyhow!("--token: {e}"))?),
            None => config_token,
        };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        Ok(Self { base, token, http })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or(text);
            bail!("{status}: {message}");
        }
        serde_json::from_str(&text).with_context(|| format!("unexpected answer from {url}"))
    }
}

pub async fn subscribers(command: SubscribersCommand) -> anyhow::Result<ExitCode> {
    let (client, path) = match &command {
        SubscribersCommand::List(admin) => (Client::new(admin)?, "/admin/subscribers".to_owned()),
        SubscribersCommand::Enable(s) => {
            (Client::new(&s.admin)?, format!("/admin/subscribers/{}/enable", s.subscriber))
        }
        SubscribersCommand::Disable(s) => {
            (Client::new(&s.admin)?, format!("/admin/subscribers/{}/disable", s.subscriber))
        }
    };
    let views: Vec<serde_json::Value> = match command {
        SubscribersCommand::List(_) => client.call(reqwest::Method::GET, &path, None).await?,
        _ => vec![client.call(reqwest::Method::POST, &path, None).await?],
    };
    println!(
        "{:<20} {:<13} {:>9} {:>9} {:>12}  OLDEST UNDELIVERED",
        "SUBSCRIBER", "STATE", "BACKLOG", "RETRIES", "DEAD-LETTERS"
    );
    for v in views {
        println!(
            "{:<20} {:<13} {:>9} {:>9} {:>12}  {}",
            v["name"].as_str().unwrap_or_default(),
            v["state"].as_str().unwrap_or_default(),
            v["backlog"].as_u64().unwrap_or(0),
            v["pending_retries"].as_u64().unwrap_or(0),
            v["dead_letters"].as_u64().unwrap_or(0),
            v["oldest_undelivered"].as_str().unwrap_or("-"),
        );
        if let Some(reason) = v["disabled"]["reason"].as_str() {
            println!("{:<20} disabled: {reason}", "");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn dead_letters(command: DeadLettersCommand) -> anyhow::Result<ExitCode> {
    match command {
        DeadLettersCommand::List(target) => {
            let client = Client::new(&target.admin)?;
            let path = format!("/admin/subscribers/{}/dead-letters", target.subscriber);
            let letters: Vec<DeadLetterView> = client.call(reqwest::Method::GET, &path, None).await?;
            println!("{:<10} {:<38} {:<22} {:>8} {:>7}  LAST ERROR", "ID", "EVENT", "TYPE", "ATTEMPTS", "STATUS");
            for l in &letters {
                println!(
                    "{:<10} {:<38} {:<22} {:>8} {:>7}  {}",
                    l.id,
                    l.event_id,
                    l.ty,
                    l.attempts,
                    l.last_status.map_or("-".to_owned(), |s| s.to_string()),
                    l.last_error
                );
            }
            println!("{} dead letter{}", letters.len(), if letters.len() == 1 { "" } else { "s" });
        }
        DeadLettersCommand::Replay(args) => {
            let client = Client::new(&args.target.admin)?;
            let path = format!("/admin/subscribers/{}/dead-letters/replay", args.target.subscriber);
            let body = serde_json::to_value(Selection { id: args.id })?;
            let count: Count = client.call(reqwest::Method::POST, &path, Some(body)).await?;
            println!("{} dead letter{} handed back for delivery", count.count, if count.count == 1 { "" } else { "s" });
        }
        DeadLettersCommand::Discard(args) => {
            let client = Client::new(&args.target.admin)?;
            let path = format!("/admin/subscribers/{}/dead-letters/discard", args.target.subscriber);
            let body = serde_json::to_value(Selection { id: args.id })?;
            let count: Count = client.call(reqwest::Method::POST, &path, Some(body)).await?;
            println!("{} dead letter{} discarded", count.count, if count.count == 1 { "" } else { "s" });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn attempts(command: AttemptsCommand) -> anyhow::Result<ExitCode> {
    let AttemptsCommand::List(args) = command;
    let client = Client::new(&args.target.admin)?;
    let mut url = reqwest::Url::parse("http://admin/")?;
    url.set_path(&format!("/admin/subscribers/{}/attempts", args.target.subscriber));
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("limit", &args.limit.to_string());
        if let Some(event) = &args.event {
            query.append_pair("event", event);
        }
        if let Some(status) = &args.status {
            query.append_pair("status", status);
        }
        if let Some(since) = &args.since {
            query.append_pair("since", &since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        }
    }
    let path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
    let attempts: Vec<hookbridge_bus::AttemptRecord> = client.call(reqwest::Method::GET, &path, None).await?;
    println!(
        "{:<24} {:<38} {:>3} {:<15} {:>6} {:>9}  {:<24} ERROR",
        "TIME", "EVENT", "#", "OUTCOME", "STATUS", "MS", "NEXT ATTEMPT"
    );
    for a in &attempts {
        println!(
            "{:<24} {:<38} {:>3} {:<15} {:>6} {:>9.1}  {:<24} {}",
            a.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            a.event_id,
            a.attempt,
            a.outcome,
            a.status.map_or("-".to_owned(), |s| s.to_string()),
            a.latency_ms,
            a.next_attempt_at.map_or("-".to_owned(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            a.error.as_deref().unwrap_or(""),
        );
        if args.responses && !a.response.is_empty() {
            println!("    response: {}", a.response.replace('\n', " "));
        }
    }
    println!("{} attempt{}", attempts.len(), if attempts.len() == 1 { "" } else { "s" });
    Ok(ExitCode::SUCCESS)
}

pub async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.target.admin)?;
    let request = ReplayRequest { since: args.since, until: args.until, events: args.events };
    let path = format!("/admin/subscribers/{}/replay", args.target.subscriber);
    let mut view: ReplayView = client.call(reqwest::Method::POST, &path, Some(serde_json::to_value(request)?)).await?;
    let bar = ProgressBar::new(view.total.unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} replaying to {msg} [{bar:30}] {pos}/{len} events, {per_sec}, ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(view.subscriber.clone());
    loop {
        let settled = view.delivered + view.failed + view.skipped;
        bar.set_length(view.total.unwrap_or(0).max(settled));
        bar.set_position(settled);
        if view.done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        view = client.call(reqwest::Method::GET, &format!("/admin/replays/{}", view.id), None).await?;
    }
    bar.finish_and_clear();
    println!(
        "replay {} to {}: {} delivered, {} failed (dead-lettered), {} skipped",
        view.id, view.subscriber, view.delivered, view.failed, view.skipped
    );
    Ok(if view.failed > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
}
