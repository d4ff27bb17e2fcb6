//! Tails: reading with no group, resuming exactly from a cursor.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookbridge_event::EventPattern;

use super::{Store, event, publish};
use crate::{Bus, Error, Tail, TailFrom, Tailed};

fn patterns(list: &[&str]) -> Vec<EventPattern> {
    list.iter().map(|p| EventPattern::parse(p).unwrap()).collect()
}

/// The next event and its cursor (a resync fails the test).
async fn next_event(tail: &mut Box<dyn Tail>) -> (String, String) {
    match tokio::time::timeout(Duration::from_secs(15), tail.next()).await.expect("an event within 15s").unwrap() {
        Tailed::Event { event, cursor, .. } => (event.id, cursor),
        Tailed::Resync { oldest } => panic!("unexpected resync to {oldest}"),
    }
}

async fn assert_tail_quiet(tail: &mut Box<dyn Tail>, quiet: Duration) {
    if let Ok(item) = tokio::time::timeout(quiet, tail.next()).await {
        panic!("expected nothing more, got {item:?}");
    }
}

async fn open_tail(bus: &Arc<dyn Bus>, list: &[&str], from: TailFrom) -> Box<dyn Tail> {
    tokio::time::timeout(Duration::from_secs(15), bus.tail(patterns(list), from))
        .await
        .expect("a tail opens within 15s")
        .expect("the tail opens")
}

pub async fn a_tail_resumes_exactly_after_its_cursor_across_a_restart(store: &dyn Store) {
    let bus = store.open().await;
    publish(&bus, &[event("email.sent")]).await;
    let mut tail = open_tail(&bus, &["email.*", "message.created"], TailFrom::Now).await;
    let wanted = [event("email.sent"), event("message.created"), event("email.bounced"), event("email.sent")];
    publish(&bus, &[event("message.failed")]).await;
    publish(&bus, &wanted).await;
    publish(&bus, &[event("message.failed")]).await;
    let ids: HashSet<String> = wanted.iter().map(|e| e.id.clone()).collect();
    let (first, _) = next_event(&mut tail).await;
    let (second, cursor) = next_event(&mut tail).await;
    assert!(ids.contains(&first) && ids.contains(&second) && first != second);
    drop(tail);
    drop(bus);

    let bus = store.open().await;
    let mut tail = open_tail(&bus, &["email.*", "message.created"], TailFrom::After(cursor)).await;
    let mut rest = HashSet::new();
    for _ in 0..2 {
        rest.insert(next_event(&mut tail).await.0);
    }
    let expected: HashSet<String> = ids.iter().filter(|id| **id != first && **id != second).cloned().collect();
    assert_eq!(rest, expected, "exactly what came after the cursor");
    let later = event("email.delivered");
    publish(&bus, std::slice::from_ref(&later)).await;
    assert_eq!(next_event(&mut tail).await.0, later.id);
    assert_tail_quiet(&mut tail, Duration::from_millis(500)).await;
}

pub async fn a_tail_finds_a_type_that_appears_while_it_runs(store: &dyn Store) {
    let bus = store.open().await;
    let mut tail = open_tail(&bus, &["*"], TailFrom::Now).await;
    // A type nobody published before: on Kafka its topic is new.
    let ty = format!("resource.t{}", std::process::id() % 100_000);
    let new = event(&ty);
    publish(&bus, std::slice::from_ref(&new)).await;
    let (id, cursor) = next_event(&mut tail).await;
    assert_eq!(id, new.id);
    let after = event(&ty);
    publish(&bus, std::slice::from_ref(&after)).await;
    let mut resumed = open_tail(&bus, &["*"], TailFrom::After(cursor)).await;
    assert_eq!(next_event(&mut resumed).await.0, after.id);
    assert_eq!(next_event(&mut tail).await.0, after.id);
}

pub async fn a_tail_starts_at_a_time(store: &dyn Store) {
    if !store.finds_offsets_by_time() {
        eprintln!("skipped: this broker does not find offsets by time");
        return;
    }
    let bus = store.open().await;
    publish(&bus, &[event("email.opened")]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let since = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = [event("email.opened"), event("email.clicked")];
    publish(&bus, &after).await;
    let mut tail = open_tail(&bus, &["email.*"], TailFrom::Time(since)).await;
    let got: HashSet<String> = [next_event(&mut tail).await.0, next_event(&mut tail).await.0].into();
    assert_eq!(got, after.iter().map(|e| e.id.clone()).collect());
    assert_tail_quiet(&mut tail, Duration::from_millis(300)).await;
}

pub async fn a_cursor_of_another_kind_is_refused(store: &dyn Store) {
    let bus = store.open().await;
    for bad in ["", "garbage", "e-1", "n", "k!!", "x123"] {
        match bus.tail(patterns(&["*"]), TailFrom::After(bad.into())).await {
            Err(Error::Invalid(_)) => {}
            other => panic!("cursor {bad:?} not refused: {:?}", other.map(|_| ())),
        }
    }
}

pub async fn a_cursor_older_than_retention_gets_a_resync(store: &dyn Store) {
    let Some(bus) = store.open_with_max_age(Duration::from_secs(1)).await else {
        eprintln!("skipped: this backend's retention is not configurable in tests");
        return;
    };
    let mut tail = open_tail(&bus, &["*"], TailFrom::Now).await;
    let old = [event("email.queued"), event("email.queued")];
    publish(&bus, &old).await;
    let (_, cursor) = next_event(&mut tail).await;
    drop(tail);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fresh = event("email.queued");
    publish(&bus, std::slice::from_ref(&fresh)).await;
    // Expiry runs in the background: look again until it has.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut tail = open_tail(&bus, &["*"], TailFrom::After(cursor.clone())).await;
        let item = tokio::time::timeout(Duration::from_secs(15), tail.next()).await.expect("within 15s").unwrap();
        match item {
            Tailed::Resync { oldest } => {
                assert_ne!(oldest, cursor);
                assert_eq!(next_event(&mut tail).await.0, fresh.id, "reading goes on from the oldest retained");
                let mut again = open_tail(&bus, &["*"], TailFrom::After(oldest)).await;
                assert_eq!(next_event(&mut again).await.0, fresh.id, "the oldest cursor resumes there");
                return;
            }
            Tailed::Event { event, .. } => assert_eq!(event.id, old[1].id, "not expired yet: the next old event"),
        }
        assert!(Instant::now() < deadline, "no resync for a cursor whose events expired");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
