//! Cases about what survives: retries, dead letters, state, retention,
//! and the broker going away or being killed.

#[allow(clippy::wildcard_imports)]
use super::*;

fn failure(status: u16) -> Failure {
    Failure { attempts: 3, last_status: Some(status), last_error: format!("HTTP {status}") }
}

pub async fn dead_letters_are_kept_replayed_and_discarded(store: &dyn Store) {
    let (a, b) = (event("email.bounced"), event("email.bounced"));
    {
        let bus = store.open().await;
        publish(&bus, &[a.clone(), b.clone()]).await;
        let mut consumer = bus.subscribe(options("dlq", &["*"], FROM_START)).await.unwrap();
        for _ in 0..2 {
            next(&mut consumer).await.dead_letter("dlq", failure(500)).await.unwrap();
        }
        assert_quiet(&mut consumer, Duration::from_millis(200)).await;
    }
    // Dead letters survive a restart, with why they failed.
    let bus = store.open().await;
    let letters = bus.dead_letters("dlq").await.unwrap();
    assert_eq!(letters.iter().map(|l| l.event.id.as_str()).collect::<Vec<_>>(), [a.id.as_str(), b.id.as_str()]);
    assert_eq!(letters[0].failure, failure(500));
    assert_eq!(bus.dead_letters("another-group").await.unwrap().len(), 0);

    let mut consumer = bus.subscribe(options("dlq", &["*"], FROM_START)).await.unwrap();
    assert_eq!(bus.replay_dead_letters("dlq", Some(&letters[0].id)).await.unwrap(), 1);
    let d = next(&mut consumer).await;
    assert_eq!((d.event.id.as_str(), d.attempt), (a.id.as_str(), 1), "replayed as a first attempt");
    d.ack().await.unwrap();
    assert_eq!(bus.dead_letters("dlq").await.unwrap().len(), 1);
    assert_eq!(bus.discard_dead_letters("dlq", None).await.unwrap(), 1);
    assert!(bus.dead_letters("dlq").await.unwrap().is_empty());
    assert_quiet(&mut consumer, Duration::from_millis(200)).await;
}

pub async fn group_status_counts_outstanding_work(store: &dyn Store) {
    let bus = store.open().await;
    let patterns = [EventPattern::parse("email.*").unwrap()];
    let mut consumer = bus.subscribe(options("status", &["email.*"], StartFrom::Latest)).await.unwrap();
    publish(&bus, &[event("email.bounced"), event("message.created"), event("email.queued"), event("email.opened")])
        .await;
    let status = bus.group_status("status", &patterns).await.unwrap();
    assert_eq!(status.backlog, 3, "{status:?}");
    assert!(status.oldest_undelivered.is_some());
    next(&mut consumer).await.ack().await.unwrap();
    next(&mut consumer).await.nack(Duration::from_secs(60)).await.unwrap();
    let status = bus.group_status("status", &patterns).await.unwrap();
    // Two unsettled: one waiting for its retry, one not delivered yet.
    assert_eq!((status.backlog, status.dead_letters), (2, 0), "{status:?}");
    assert!((1..=2).contains(&status.pending_retries), "{status:?}");
}

pub async fn state_is_shared_and_durable(store: &dyn Store) {
    {
        let bus = store.open().await;
        assert_eq!(bus.get_state("relay.billing").await.unwrap(), None);
        bus.put_state("relay.billing", Some(b"disabled".to_vec())).await.unwrap();
        bus.put_state("relay.other", Some(b"x".to_vec())).await.unwrap();
        bus.put_state("relay.other", None).await.unwrap();
    }
    let bus = store.open().await;
    assert_eq!(bus.get_state("relay.billing").await.unwrap().as_deref(), Some(&b"disabled"[..]));
    assert_eq!(bus.get_state("relay.other").await.unwrap(), None);
}

pub async fn count_between_counts_a_window(store: &dyn Store) {
    if !store.finds_offsets_by_time() {
        eprintln!("skipped: this broker cannot find offsets by time");
        return;
    }
    let bus = store.open().await;
    publish(&bus, &[event("email.bounced")]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish(&bus, &[event("email.bounced"), event("message.created"), event("email.queued")]).await;
    let patterns = [EventPattern::parse("email.*").unwrap()];
    tokio::time::sleep(Duration::from_millis(20)).await;
    let until = Utc::now();
    let count = bus.count_between(&patterns, since, until).await.unwrap();
    // The embedded bus and NATS always tell; Kafka where the broker can.
    if matches!(bus.backend(), "embedded" | "nats") {
        assert_eq!(count, Some(2), "{}", bus.backend());
    }
    if let Some(count) = count {
        assert_eq!(count, 2);
    }
    // What is published after the window is not counted in it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish(&bus, &[event("email.bounced")]).await;
    if let Some(count) = bus.count_between(&patterns, since, until).await.unwrap() {
        assert_eq!(count, 2, "an event published after the window was counted");
    }
}

pub async fn retention_by_age(store: &dyn Store) {
    let Some(bus) = store.open_with_max_age(Duration::from_secs(1)).await else {
        eprintln!("skipped: this backend's retention is not configurable in tests");
        return;
    };
    let old = event("email.queued");
    publish(&bus, std::slice::from_ref(&old)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fresh = event("email.queued");
    publish(&bus, std::slice::from_ref(&fresh)).await;
    // Expiry runs in the background: wait for it with a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut group = 0;
    loop {
        group += 1;
        let mut consumer =
            bus.subscribe(options(&format!("retention{group}"), &["*"], StartFrom::Earliest)).await.unwrap();
        let first = next(&mut consumer).await;
        let first_id = first.event.id.clone();
        first.ack().await.unwrap();
        if first_id == fresh.id {
            break;
        }
        assert_eq!(first_id, old.id);
        assert!(Instant::now() < deadline, "the old event was not expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn a_broker_outage_loses_nothing_acknowledged(store: &mut dyn Store) {
    let bus = store.open().await;
    let before = event("email.sent");
    publish(&bus, std::slice::from_ref(&before)).await;
    if !store.stop_broker() {
        eprintln!("skipped: this backend has no broker to lose");
        return;
    }
    // While the broker is away nothing is acknowledged: an error or no answer.
    let during = event("email.sent");
    let outcome = tokio::time::timeout(Duration::from_secs(3), bus.publish(&during)).await;
    assert!(!matches!(outcome, Ok(Ok(_))), "a publish was acknowledged with the broker down: {outcome:?}");
    assert!(bus.check_ready().await.is_err(), "ready with the broker down");
    store.resume_broker();
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = event("email.sent");
    loop {
        if let Ok(Ok(outcome)) = tokio::time::timeout(Duration::from_secs(2), bus.publish(&after)).await {
            assert_eq!(outcome, PublishOutcome::Published);
            break;
        }
        assert!(Instant::now() < deadline, "publishing did not recover after the broker came back");
    }
    assert!(bus.check_ready().await.is_ok());
    let mut consumer = bus.subscribe(options("outage", &["*"], FROM_START)).await.unwrap();
    let mut ids = HashSet::new();
    while !(ids.contains(&before.id) && ids.contains(&after.id)) {
        let d = next(&mut consumer).await;
        ids.insert(d.event.id.clone());
        d.ack().await.unwrap();
    }
}

/// Dead letters, and what a replay did to them, survive the broker being
/// killed: none is lost, whether it was written a moment or many seconds
/// before the crash.
pub async fn dead_letters_survive_a_broker_crash(store: &mut dyn Store) {
    const N: usize = 40;
    let events: Vec<Event> = (0..N).map(|_| event("email.bounced")).collect();
    let bus = store.open().await;
    publish(&bus, &events).await;
    {
        let mut consumer = bus.subscribe(options("crash", &["*"], FROM_START)).await.unwrap();
        for _ in 0..N {
            next(&mut consumer).await.dead_letter("crash", failure(410)).await.unwrap();
        }
    }
    let ids = |letters: &[crate::DeadLetter]| letters.iter().map(|l| l.event.id.clone()).collect::<HashSet<_>>();
    assert_eq!(ids(&bus.dead_letters("crash").await.unwrap()).len(), N);
    tokio::time::sleep(Duration::from_secs(3)).await;
    if !store.stop_broker() {
        eprintln!("skipped: this backend has no broker to lose");
        return;
    }
    store.resume_broker();
    let bus = store.open().await;
    let letters = bus.dead_letters("crash").await.unwrap();
    assert_eq!(ids(&letters), events.iter().map(|e| e.id.clone()).collect(), "dead letters lost in a broker crash");

    // Half replayed, then the broker killed: each is a dead letter or back on the bus.
    for letter in &letters[..N / 2] {
        assert_eq!(bus.replay_dead_letters("crash", Some(&letter.id)).await.unwrap(), 1);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    store.stop_broker();
    store.resume_broker();
    let bus = store.open().await;
    let left = ids(&bus.dead_letters("crash").await.unwrap());
    assert_eq!(left, ids(&letters[N / 2..]), "replayed dead letters came back or others went");
    let mut consumer = bus.subscribe(options("crash", &["*"], FROM_START)).await.unwrap();
    let mut replayed = HashSet::new();
    while replayed.len() < N / 2 {
        let d = next(&mut consumer).await;
        replayed.insert(d.event.id.clone());
        d.ack().await.unwrap();
    }
    assert_eq!(replayed, ids(&letters[..N / 2]));
}
