//! The embedded backend: the shared conformance suite, then what only the
//! embedded log does (retention, dedup window).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hookbridge_bus::conformance::{self, Store};
use hookbridge_bus::embedded::{EmbeddedBus, EmbeddedOptions, Retention};
use hookbridge_bus::{Bus, NewGroup, PublishOutcome, Publisher, StartFrom, SubscribeOptions};
use hookbridge_event::EventPattern;
use tempfile::TempDir;

struct Embedded {
    dir: TempDir,
    retention: Retention,
}

impl Embedded {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap(), retention: Retention::default() }
    }
}

#[async_trait]
impl Store for Embedded {
    async fn open(&self) -> Arc<dyn Bus> {
        let mut options = EmbeddedOptions::new(self.dir.path());
        options.retention = self.retention;
        Arc::new(EmbeddedBus::open(options).unwrap())
    }

    async fn open_with_max_age(&self, max_age: Duration) -> Option<Arc<dyn Bus>> {
        let mut options = EmbeddedOptions::new(self.dir.path());
        options.retention = Retention { max_age: Some(max_age), ..self.retention };
        options.maintenance_interval = Duration::from_millis(100);
        Some(Arc::new(EmbeddedBus::open(options).unwrap()))
    }
}

hookbridge_bus::conformance_tests!(Embedded::new());

fn open(dir: &TempDir, retention: Retention) -> EmbeddedBus {
    let mut options = EmbeddedOptions::new(dir.path());
    options.retention = retention;
    EmbeddedBus::open(options).unwrap()
}

#[tokio::test]
async fn retention_by_size_drops_the_oldest_events() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(
        &dir,
        Retention {
            max_age: None,
            max_bytes: Some(2_000),
            dedup_window: Duration::from_secs(60),
            ..Retention::default()
        },
    );
    let events: Vec<_> = (0..20).map(|_| conformance::event("email.delivered")).collect();
    for e in &events {
        bus.publish(e).await.unwrap();
    }
    bus.maintain().await.unwrap();
    let kept: Vec<String> = bus.read_all().unwrap().into_iter().map(|e| e.id).collect();
    assert!(!kept.is_empty() && kept.len() < events.len(), "kept {}", kept.len());
    let newest: Vec<String> = events[events.len() - kept.len()..].iter().map(|e| e.id.clone()).collect();
    assert_eq!(kept, newest, "the newest events are the ones kept");
    // A group that starts at the earliest retained event starts there.
    let mut c = bus
        .subscribe(SubscribeOptions {
            group: "g".into(),
            patterns: vec![EventPattern::All],
            start: StartFrom::Earliest,
        })
        .await
        .unwrap();
    assert_eq!(c.next().await.unwrap().event.id, kept[0]);
}

#[tokio::test]
async fn dedup_window_expires() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(
        &dir,
        Retention { max_age: None, max_bytes: None, dedup_window: Duration::from_millis(50), ..Retention::default() },
    );
    let e = conformance::event("email.delivered");
    assert_eq!(bus.publish(&e).await.unwrap(), PublishOutcome::Published);
    assert_eq!(bus.publish(&e).await.unwrap(), PublishOutcome::Duplicate);
    tokio::time::sleep(Duration::from_millis(80)).await;
    bus.maintain().await.unwrap();
    assert_eq!(bus.publish(&e).await.unwrap(), PublishOutcome::Published, "outside the window it is new again");
}

/// The dedup window is rebuilt from its journal at start-up: ids published
/// before a restart are still duplicates after it, new ids are not.
#[tokio::test]
async fn dedup_window_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let seen: Vec<_> = (0..500).map(|_| conformance::event("email.delivered")).collect();
    {
        let bus = open(&dir, Retention::default());
        for e in &seen {
            assert_eq!(bus.publish(e).await.unwrap(), PublishOutcome::Published);
        }
        bus.close().await;
    }
    let bus = open(&dir, Retention::default());
    for e in &seen {
        assert_eq!(bus.publish(e).await.unwrap(), PublishOutcome::Duplicate, "{} after a restart", e.id);
    }
    let fresh = conformance::event("email.delivered");
    assert_eq!(bus.publish(&fresh).await.unwrap(), PublishOutcome::Published);
    assert_eq!(bus.publish(&fresh).await.unwrap(), PublishOutcome::Duplicate);
}

#[tokio::test]
async fn a_second_open_of_a_held_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _bus = open(&dir, Retention::default());
    let err = EmbeddedBus::open(EmbeddedOptions::new(dir.path())).unwrap_err();
    assert!(err.to_string().contains("cannot open"), "{err}");
}

#[tokio::test]
async fn new_group_at_latest_keeps_its_start_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let e = conformance::event("email.queued");
    {
        let bus = open(&dir, Retention::default());
        bus.publish(&conformance::event("email.queued")).await.unwrap();
        let opts = SubscribeOptions {
            group: "late".into(),
            patterns: vec![EventPattern::All],
            start: StartFrom::Committed { if_new: NewGroup::Latest },
        };
        let _c = bus.subscribe(opts).await.unwrap();
        bus.publish(&e).await.unwrap();
    }
    let bus = open(&dir, Retention::default());
    let opts = SubscribeOptions {
        group: "late".into(),
        patterns: vec![EventPattern::All],
        start: StartFrom::Committed { if_new: NewGroup::Latest },
    };
    let mut c = bus.subscribe(opts).await.unwrap();
    assert_eq!(c.next().await.unwrap().event.id, e.id);
}

/// Attempts older than `attempts_max_age` go at maintenance, with their
/// index entries: no query finds them by subscriber or by event.
#[tokio::test]
async fn attempts_expire_by_age() {
    use hookbridge_bus::{AttemptQuery, AttemptRecord};
    let dir = tempfile::tempdir().unwrap();
    let bus = open(&dir, Retention { attempts_max_age: Duration::from_secs(3600), ..Retention::default() });
    let record = |event: &str, age_secs: i64| AttemptRecord {
        event_id: event.into(),
        event_type: "email.sent".into(),
        published_at: chrono::Utc::now(),
        subscriber: "crm".into(),
        attempt: 1,
        at: chrono::Utc::now() - chrono::Duration::seconds(age_secs),
        outcome: "delivered".into(),
        status: Some(200),
        error: None,
        latency_ms: 1.0,
        response: String::new(),
        next_attempt_at: None,
        replay: None,
    };
    bus.record_attempts(&[record("old", 7200), record("new", 10)]).await.unwrap();
    bus.maintain().await.unwrap();
    let crm = AttemptQuery { subscriber: Some("crm".into()), ..AttemptQuery::default() };
    let kept: Vec<_> = bus.attempts(&crm).await.unwrap().into_iter().map(|r| r.event_id).collect();
    assert_eq!(kept, ["new"]);
    let old = AttemptQuery { event: Some("old".into()), ..AttemptQuery::default() };
    assert!(bus.attempts(&old).await.unwrap().is_empty());
    assert_eq!(bus.attempts(&AttemptQuery::default()).await.unwrap().len(), 1);
}
