//! Cases about the order of the events of one subject (the provider's
//! message id): what the relay's `ordering = "subject"` stands on.
//!
//! - A group receives the events of a subject in publish order: across all
//!   types on a log with one sequence (embedded, NATS), within each type on
//!   Kafka (a topic per type, the subject as the record key).
//! - Events handed out and not settled come back in that order when
//!   dropped in this process, and after a restart (except on JetStream,
//!   see [`Store::redelivers_in_order_after_restart`]).
//! - On Kafka, a subject belongs to one member of a group at a time.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Events of three subjects, interleaved; of several types where the
/// backend orders across types, else all of one type.
fn interleaved(store: &dyn Store, per_subject: usize) -> Vec<Event> {
    let types =
        if store.orders_across_types() { ["email.sent", "email.delivered", "email.opened"] } else { ["email.sent"; 3] };
    let run = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut events = Vec::new();
    for i in 0..per_subject {
        for s in 0..3 {
            let mut e = event(types[(i + s) % types.len()]);
            e.subject = Some(format!("order-{}-{run}-{s}", std::process::id()));
            events.push(e);
        }
    }
    events
}

/// The ids of each subject's events, in the order given.
fn by_subject<'a>(events: impl IntoIterator<Item = &'a Event>) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut subjects = std::collections::BTreeMap::<String, Vec<String>>::new();
    for e in events {
        subjects.entry(e.subject.clone().unwrap_or_default()).or_default().push(e.id.clone());
    }
    subjects
}

pub async fn a_subject_comes_in_publish_order(store: &dyn Store) {
    let bus = store.open().await;
    let events = interleaved(store, 10);
    publish(&bus, &events).await;
    let mut consumer = bus.subscribe(options("ordered", &["email.*"], FROM_START)).await.unwrap();
    let mut received = Vec::new();
    for _ in &events {
        let d = next(&mut consumer).await;
        received.push(d.event.clone());
        d.ack().await.unwrap();
    }
    assert_eq!(by_subject(&received), by_subject(&events), "each subject in publish order");
    assert_quiet(&mut consumer, Duration::from_millis(200)).await;
}

/// Takes every event without settling it; settles those of the other
/// subjects and returns the held deliveries of `subject`, in the order
/// received (which is publish order, by the case above).
async fn hold(consumer: &mut Box<dyn Consumer>, events: &[Event], subject: &str) -> Vec<Delivery> {
    let mut held = Vec::new();
    for _ in events {
        let d = next(consumer).await;
        if d.event.subject.as_deref() == Some(subject) {
            held.push(d);
        } else {
            d.ack().await.unwrap();
        }
    }
    held
}

pub async fn unsettled_events_of_a_subject_come_back_in_order(store: &dyn Store) {
    let events = interleaved(store, 4);
    let subject = events[0].subject.clone().unwrap();
    let expected: Vec<_> =
        events.iter().filter(|e| e.subject.as_deref() == Some(subject.as_str())).map(|e| e.id.clone()).collect();
    let ids = |ds: &[Delivery]| ds.iter().map(|d| d.event.id.clone()).collect::<Vec<_>>();
    // Dropped in this process (a relay's subscriber disabled, or its
    // deliveries abandoned at shutdown): they come back in order.
    {
        let bus = store.open().await;
        publish(&bus, &events).await;
        let mut consumer = bus.subscribe(options("ordered-back", &["email.*"], FROM_START)).await.unwrap();
        let held = hold(&mut consumer, &events, &subject).await;
        assert_eq!(ids(&held), expected);
        drop(held);
        let mut again = Vec::new();
        for _ in &expected {
            again.push(next(&mut consumer).await);
        }
        assert_eq!(ids(&again), expected, "dropped deliveries come back in publish order");
        // Left unsettled across a restart: they come back in order again.
        drop(again);
    }
    let bus = store.open().await;
    let mut consumer = bus.subscribe(options("ordered-back", &["email.*"], FROM_START)).await.unwrap();
    // Settled events after the first unsettled one may come again (a
    // group's position is the lowest unsettled event): at least once.
    let mut after = Vec::new();
    while after.len() < expected.len() {
        let d = next(&mut consumer).await;
        if d.event.subject.as_deref() == Some(subject.as_str()) {
            after.push(d.event.id.clone());
        }
        d.ack().await.unwrap();
    }
    if store.redelivers_in_order_after_restart() {
        assert_eq!(after, expected, "unsettled deliveries come back in publish order after a restart");
    } else {
        after.sort();
        let mut expected = expected;
        expected.sort();
        assert_eq!(after, expected, "unsettled deliveries come back after a restart");
    }
}

pub async fn a_subject_belongs_to_one_member_of_a_group(store: &dyn Store) {
    if store.orders_across_types() {
        // One log, pulled by every member: the relay orders within one
        // process (see docs/relay.md); nothing to check here.
        return;
    }
    let bus = store.open().await;
    let first = bus.subscribe(options("ordered-members", &["email.*"], AS_RELAY)).await.unwrap();
    let second = tokio::time::timeout(
        Duration::from_secs(30),
        bus.subscribe(options("ordered-members", &["email.*"], AS_RELAY)),
    )
    .await
    .expect("a member joins within 30s")
    .unwrap();
    // Both are members once `subscribe` returns: 24 subjects, spread
    // over the partitions of both.
    let events: Vec<_> = (0..8).flat_map(|_| interleaved(store, 3)).collect();
    publish(&bus, &events).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(usize, Event)>::new()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let total = events.len();
    let mut tasks = Vec::new();
    for (member, mut consumer) in [first, second].into_iter().enumerate() {
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            while seen.lock().unwrap().len() < total && tokio::time::Instant::now() < deadline {
                if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_millis(100), consumer.next()).await {
                    seen.lock().unwrap().push((member, d.event.clone()));
                    d.ack().await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), total);
    let mut owner = std::collections::HashMap::new();
    for (member, e) in seen.iter() {
        let subject = e.subject.clone().unwrap();
        assert_eq!(*owner.entry(subject.clone()).or_insert(*member), *member, "{subject} went to both members");
    }
    assert_eq!(by_subject(seen.iter().map(|(_, e)| e)), by_subject(&events), "each subject in publish order");
}
