//! `hookbridge receive`: a small subscriber for trying the relay. It verifies
//! each delivery's Standard Webhooks signature and prints the event as one
//! JSON line.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::Utc;
use hookbridge_config::secret::SecretRef;
use hookbridge_relay::sign::{self, VerifyKey};

use crate::cli::ReceiveArgs;

/// Deliveries whose timestamp is further than this from now are refused.
const TOLERANCE_SECS: i64 = 300;

struct Receiver {
    keys: Vec<VerifyKey>,
    status: StatusCode,
}

pub async fn run(args: ReceiveArgs) -> anyhow::Result<ExitCode> {
    let keys = args
        .secrets
        .iter()
        .map(|s| Ok(VerifyKey::parse(&SecretRef::parse(s).resolve()?)?))
        .collect::<anyhow::Result<Vec<_>>>()
        .context("--secret")?;
    let status = StatusCode::from_u16(args.status).context("--status")?;
    if keys.is_empty() {
        eprintln!("no --secret given: deliveries are printed without verifying their signature");
    }
    let receiver = Arc::new(Receiver { keys, status });
    let app = axum::Router::new().fallback(post(receive)).with_state(receiver);
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    eprintln!("receiving on http://{} (Ctrl-C to stop)", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}

async fn receive(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if receiver.keys.is_empty() {
        println!("{}", String::from_utf8_lossy(&body));
        return receiver.status;
    }
    let verdict = sign::verify(
        &receiver.keys,
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        &body,
        Utc::now().timestamp(),
        TOLERANCE_SECS,
    );
    match verdict {
        Ok(()) => {
            println!("{}", String::from_utf8_lossy(&body));
            receiver.status
        }
        Err(rejected) => {
            eprintln!("rejected a delivery: {rejected}");
            StatusCode::UNAUTHORIZED
        }
    }
}
