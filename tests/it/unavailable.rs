//! A bus that cannot acknowledge: the ingress answers 503 (with
//! Retry-After) and never 200; readiness follows the bus.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use hookbridge_bus::embedded::{EmbeddedBus, EmbeddedOptions};
use hookbridge_bus::{Error, PublishOutcome, Publisher, Result};
use hookbridge_event::Event;
use hookbridge_testkit::{TestApp, keys};

/// A bus that never acknowledges, or refuses at once.
#[derive(Debug)]
enum Broken {
    NeverAcks,
    Refuses,
}

#[async_trait]
impl Publisher for Broken {
    async fn publish(&self, _: &Event) -> Result<PublishOutcome> {
        match self {
            Self::NeverAcks => std::future::pending().await,
            Self::Refuses => Err(Error::Unavailable("broker unreachable".into())),
        }
    }
    async fn check_ready(&self) -> Result<()> {
        Err(Error::Unavailable("broker unreachable".into()))
    }
    fn backend(&self) -> &'static str {
        "broken"
    }
}

async fn app_with(publisher: Broken) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(EmbeddedOptions::new(dir.path().join("unused"))).unwrap();
    TestApp::spawn_with(dir, bus, Arc::new(publisher)).await
}

#[tokio::test]
async fn no_acknowledgement_in_time_is_503() {
    let app = app_with(Broken::NeverAcks).await;
    let (body, header) = keys::signed(&keys::signer("mailpipe"), "email.sent", 1, Utc::now());
    let started = Instant::now();
    let response = app.client.post(app.url("mailpipe")).header(header.0, header.1).body(body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert!(started.elapsed() >= Duration::from_secs(2), "waited for the publish timeout");
    assert_eq!(response.headers()["retry-after"], "5");
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "unavailable");
}

#[tokio::test]
async fn a_refusing_bus_is_503_and_not_ready() {
    let app = app_with(Broken::Refuses).await;
    let (body, header) = keys::signed(&keys::signer("mailpace"), "email.queued", 1, Utc::now());
    let (status, answer) = app.post("mailpace", body, &[header]).await;
    assert_eq!((status, answer["error"].as_str()), (503, Some("unavailable")));
    assert!(!answer.to_string().contains("broker unreachable"), "5xx bodies do not leak causes");
    let ready = app.client.get(format!("http://{}/readyz", app.admin_addr)).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let alive = app.client.get(format!("http://{}/healthz", app.admin_addr)).send().await.unwrap();
    assert_eq!(alive.status().as_u16(), 200);
}

#[tokio::test]
async fn a_healthy_bus_is_ready() {
    let app = TestApp::spawn().await;
    let ready = app.client.get(format!("http://{}/readyz", app.admin_addr)).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    app.stop().await;
}
