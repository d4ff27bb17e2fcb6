//! Cases about what is delivered to whom, in which order, from where.

#[allow(clippy::wildcard_imports)]
use super::*;

pub async fn publish_delivers_matching_events_in_order(store: &dyn Store) {
    let bus = store.open().await;
    let events = [event("email.bounced"), event("email.delivered"), event("message.created"), event("email.bounced")];
    publish(&bus, &events).await;
    let mut consumer = bus.subscribe(options("billing", &["email.bounced", "message.*"], FROM_START)).await.unwrap();
    let expected = [&events[0], &events[2], &events[3]];
    let mut received = Vec::new();
    for _ in expected {
        let delivery = next(&mut consumer).await;
        let sent = expected.iter().find(|e| e.id == delivery.event.id).expect("a matching event");
        assert_eq!(delivery.event.ty, sent.ty);
        assert_eq!(delivery.event.data.get(), sent.data.get());
        assert_eq!(delivery.attempt, 1);
        received.push(delivery.event.id.clone());
        delivery.ack().await.unwrap();
    }
    let ids = |events: &[&Event]| events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    if store.orders_across_types() {
        assert_eq!(received, ids(&expected));
    } else {
        // Each type in publish order.
        let bounced: Vec<_> = received.iter().filter(|id| **id != events[2].id).cloned().collect();
        assert_eq!(bounced, ids(&[&events[0], &events[3]]));
        assert!(received.contains(&events[2].id));
    }
    assert_quiet(&mut consumer, Duration::from_millis(200)).await;
}

pub async fn duplicate_ids_are_stored_once(store: &dyn Store) {
    let bus = store.open().await;
    let e = event("email.delivered");
    assert_eq!(bus.publish(&e).await.unwrap(), PublishOutcome::Published);
    assert_eq!(bus.publish(&e).await.unwrap(), PublishOutcome::Duplicate);
    // Concurrent duplicates: exactly one is stored.
    let f = event("email.delivered");
    let outcomes = futures_join(bus.clone(), f.clone(), 8).await;
    assert_eq!(outcomes.iter().filter(|o| **o == PublishOutcome::Published).count(), 1, "{outcomes:?}");
    let mut consumer = bus.subscribe(options("dups", &["*"], FROM_START)).await.unwrap();
    for expected in [&e, &f] {
        let d = next(&mut consumer).await;
        assert_eq!(d.event.id, expected.id);
        d.ack().await.unwrap();
    }
    assert_quiet(&mut consumer, Duration::from_millis(200)).await;
}

async fn futures_join(bus: Arc<dyn Bus>, e: Event, n: usize) -> Vec<PublishOutcome> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (bus, e) = (bus.clone(), e.clone());
            tokio::spawn(async move { bus.publish(&e).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

pub async fn group_position_survives_restart(store: &dyn Store) {
    let events: Vec<_> = (0..4).map(|_| event("email.queued")).collect();
    {
        let bus = store.open().await;
        publish(&bus, &events).await;
        let mut consumer = bus.subscribe(options("resume", &["*"], FROM_START)).await.unwrap();
        for e in &events[..2] {
            let d = next(&mut consumer).await;
            assert_eq!(d.event.id, e.id);
            d.ack().await.unwrap();
        }
    }
    let bus = store.open().await;
    let mut consumer = bus.subscribe(options("resume", &["*"], FROM_START)).await.unwrap();
    for e in &events[2..] {
        let d = next(&mut consumer).await;
        assert_eq!(d.event.id, e.id, "resumes after the acked events");
        d.ack().await.unwrap();
    }
    assert_quiet(&mut consumer, Duration::from_millis(200)).await;
}

pub async fn nack_redelivers_after_delay_without_blocking(store: &dyn Store) {
    let bus = store.open().await;
    let (first, second) = (event("email.bounced"), event("email.bounced"));
    publish(&bus, &[first.clone(), second.clone()]).await;
    let mut consumer = bus.subscribe(options("retry", &["*"], FROM_START)).await.unwrap();
    let d = next(&mut consumer).await;
    assert_eq!(d.event.id, first.id);
    let nacked_at = Instant::now();
    d.nack(Duration::from_millis(1500)).await.unwrap();
    // The newer event is not held back by the pending retry.
    let d = next(&mut consumer).await;
    assert_eq!(d.event.id, second.id);
    assert!(nacked_at.elapsed() < Duration::from_millis(1500), "second event waited for the retry");
    d.ack().await.unwrap();
    let d = next(&mut consumer).await;
    assert_eq!(d.event.id, first.id);
    assert_eq!(d.attempt, 2);
    assert!(nacked_at.elapsed() >= Duration::from_millis(1500), "redelivered before its delay");
    d.ack().await.unwrap();
    assert_quiet(&mut consumer, Duration::from_millis(200)).await;
}

pub async fn nacked_retry_survives_restart(store: &dyn Store) {
    let e = event("email.deferred");
    {
        let bus = store.open().await;
        publish(&bus, std::slice::from_ref(&e)).await;
        let mut consumer = bus.subscribe(options("durable-retry", &["*"], FROM_START)).await.unwrap();
        next(&mut consumer).await.nack(Duration::from_millis(300)).await.unwrap();
    }
    let bus = store.open().await;
    let mut consumer = bus.subscribe(options("durable-retry", &["*"], FROM_START)).await.unwrap();
    let d = next(&mut consumer).await;
    assert_eq!((d.event.id.as_str(), d.attempt), (e.id.as_str(), 2));
    d.ack().await.unwrap();
    assert_quiet(&mut consumer, Duration::from_millis(200)).await;
}

pub async fn dropped_delivery_is_redelivered(store: &dyn Store) {
    let bus = store.open().await;
    let e = event("email.opened");
    publish(&bus, std::slice::from_ref(&e)).await;
    let mut consumer = bus.subscribe(options("drop", &["*"], FROM_START)).await.unwrap();
    drop(next(&mut consumer).await);
    let d = next(&mut consumer).await;
    assert_eq!(d.event.id, e.id);
    d.ack().await.unwrap();
}

pub async fn replay_from_time(store: &dyn Store) {
    if !store.finds_offsets_by_time() {
        eprintln!("skipped: this broker cannot find offsets by time");
        return;
    }
    let bus = store.open().await;
    let before: Vec<_> = (0..3).map(|_| event("email.delivered")).collect();
    publish(&bus, &before).await;
    // Appends are stamped in milliseconds: step past the last one.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after: Vec<_> = (0..3).map(|_| event("email.delivered")).collect();
    publish(&bus, &after).await;
    let mut consumer = bus.subscribe(options("replay", &["*"], StartFrom::Time(since))).await.unwrap();
    for e in &after {
        let d = next(&mut consumer).await;
        assert_eq!(d.event.id, e.id);
        d.ack().await.unwrap();
    }
    assert_quiet(&mut consumer, Duration::from_millis(200)).await;
}

pub async fn earliest_and_latest(store: &dyn Store) {
    let bus = store.open().await;
    let old = event("email.queued");
    publish(&bus, std::slice::from_ref(&old)).await;
    let mut latest = bus.subscribe(options("latest", &["*"], StartFrom::Latest)).await.unwrap();
    let mut earliest = bus.subscribe(options("earliest", &["*"], StartFrom::Earliest)).await.unwrap();
    let new = event("email.queued");
    publish(&bus, std::slice::from_ref(&new)).await;
    for (consumer, expected) in [(&mut latest, &new), (&mut earliest, &old)] {
        let d = next(consumer).await;
        assert_eq!(d.event.id, expected.id);
        d.ack().await.unwrap();
    }
    let d = next(&mut earliest).await;
    assert_eq!(d.event.id, new.id);
    d.ack().await.unwrap();
}

pub async fn concurrent_consumers_share_a_group(store: &dyn Store) {
    let bus = store.open().await;
    let events: Vec<_> = (0..200).map(|_| event("email.delivered")).collect();
    let received = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let mut consumer = bus.subscribe(options("shared", &["*"], FROM_START)).await.unwrap();
        let (received, total) = (received.clone(), events.len() as u64);
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            // Until the two consumers together hold every event.
            while received.load(Ordering::SeqCst) < total && tokio::time::Instant::now() < deadline {
                if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_millis(50), consumer.next()).await {
                    got.push(d.event.id.clone());
                    d.ack().await.unwrap();
                    received.fetch_add(1, Ordering::SeqCst);
                }
            }
            got
        }));
    }
    publish(&bus, &events).await;
    let mut seen = HashSet::new();
    let mut total = 0;
    for task in tasks {
        let got = task.await.unwrap();
        total += got.len();
        seen.extend(got);
    }
    assert_eq!(total, events.len(), "each event delivered to exactly one consumer");
    assert_eq!(seen, events.iter().map(|e| e.id.clone()).collect::<HashSet<_>>());
}

/// A group that exists (started once, stopped before it committed anything)
/// misses nothing published while it was away: neither events of a type it
/// had seen, nor those of a type whose topic appeared meanwhile; and, having
/// started at the latest event, nothing from before its first start.
pub async fn a_group_that_exists_misses_nothing_published_while_away(store: &dyn Store) {
    let before = event("email.sent");
    let away = [event("email.sent"), event("email.sent"), event("email.complained"), event("email.complained")];
    {
        let bus = store.open().await;
        publish(&bus, std::slice::from_ref(&before)).await;
        let consumer = bus.subscribe(options("away", &["*"], AS_RELAY)).await.unwrap();
        drop(consumer);
        publish(&bus, &away).await;
    }
    let bus = store.open().await;
    let mut consumer = bus.subscribe(options("away", &["*"], AS_RELAY)).await.unwrap();
    let mut seen = HashSet::new();
    while seen.len() < away.len() {
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("every event published while the group was away, within 30s")
            .expect("consumer works");
        assert_ne!(d.event.id, before.id, "an event from before the group's first start");
        seen.insert(d.event.id.clone());
        d.ack().await.unwrap();
    }
    assert_eq!(seen, away.iter().map(|e| e.id.clone()).collect::<HashSet<_>>());
    assert_quiet(&mut consumer, Duration::from_millis(300)).await;
}

/// A second member (a relay replica, or a restart while the old process is
/// still a member) joins a running group that holds unsettled work on a new
/// type, without needing the group to be empty, and the two together
/// deliver everything.
pub async fn a_member_joins_a_running_group_without_its_help(store: &dyn Store) {
    let bus = store.open().await;
    let mut first = bus.subscribe(options("joined", &["*"], AS_RELAY)).await.unwrap();
    let events: Vec<_> = (0..6).map(|_| event("email.clicked")).collect();
    publish(&bus, &events[..3]).await;
    let held = next(&mut first).await;
    let second = tokio::time::timeout(Duration::from_secs(30), bus.subscribe(options("joined", &["*"], AS_RELAY)))
        .await
        .expect("a member joins within 30s")
        .expect("a member joins a group that has running members");
    drop(held);
    publish(&bus, &events[3..]).await;
    let seen = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let total = events.len();
    let mut tasks = Vec::new();
    for mut consumer in [first, second] {
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            while seen.lock().unwrap().len() < total && tokio::time::Instant::now() < deadline {
                if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_millis(100), consumer.next()).await {
                    seen.lock().unwrap().insert(d.event.id.clone());
                    d.ack().await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*seen.lock().unwrap(), events.iter().map(|e| e.id.clone()).collect::<HashSet<_>>());
}

pub async fn groups_are_independent(store: &dyn Store) {
    let bus = store.open().await;
    let e = event("email.bounced");
    publish(&bus, std::slice::from_ref(&e)).await;
    let mut a = bus.subscribe(options("a", &["*"], FROM_START)).await.unwrap();
    let mut b = bus.subscribe(options("b", &["email.*"], FROM_START)).await.unwrap();
    let held = next(&mut a).await;
    // Group a holding its delivery does not keep it from group b.
    let d = next(&mut b).await;
    assert_eq!(d.event.id, e.id);
    d.ack().await.unwrap();
    held.ack().await.unwrap();
}
