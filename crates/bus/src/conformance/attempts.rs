//! The delivery record: attempts are kept, answered by subscriber, event,
//! status and time, newest first, across a restart.

use chrono::{DateTime, Utc};

use super::Store;
use crate::{AttemptQuery, AttemptRecord, StatusFilter};

fn attempt(subscriber: &str, event: &str, n: u32, at: DateTime<Utc>, status: Option<u16>) -> AttemptRecord {
    let outcome = match status {
        Some(200..=299) => "delivered",
        Some(410) => "gone",
        _ if n >= 3 => "dead_lettered",
        _ => "retry_scheduled",
    };
    AttemptRecord {
        event_id: event.into(),
        event_type: "email.bounced".into(),
        published_at: at,
        subscriber: subscriber.into(),
        attempt: n,
        at,
        outcome: outcome.into(),
        status,
        error: status.is_none().then(|| "connection failed: Connection refused".into()),
        latency_ms: 12.5,
        response: if status == Some(500) { r#"{"error":"database is down"}"#.into() } else { String::new() },
        next_attempt_at: (outcome == "retry_scheduled").then(|| at + chrono::Duration::seconds(30)),
        replay: None,
    }
}

/// Attempts of two subscribers are recorded and read back by each filter,
/// newest first, and again after the bus is opened anew.
pub async fn attempts_are_recorded_and_answered(store: &impl Store) {
    let t0 = Utc::now() - chrono::Duration::seconds(60);
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    let (e1, e2, e3) = (
        format!("{}-a", super::event("x").id),
        format!("{}-b", super::event("x").id),
        format!("{}-c", super::event("x").id),
    );
    let records = vec![
        attempt("crm", &e1, 1, at(1), Some(500)),
        attempt("crm", &e1, 2, at(31), None),
        attempt("crm", &e1, 3, at(50), Some(204)),
        attempt("audit", &e1, 1, at(2), Some(200)),
        attempt("crm", &e2, 1, at(10), Some(410)),
        attempt("audit", &e3, 1, at(20), Some(503)),
    ];
    {
        let bus = store.open().await;
        if store.counts_batched_records() {
            bus.record_attempts(&records[..3]).await.expect("attempts are recorded");
            bus.record_attempts(&records[3..]).await.expect("attempts are recorded");
        } else {
            for record in &records {
                bus.record_attempts(std::slice::from_ref(record)).await.expect("an attempt is recorded");
            }
        }
        bus.record_attempts(&[]).await.expect("nothing to record is fine");
    }
    let bus = store.open().await;
    let ids = |found: &[AttemptRecord]| found.iter().map(|r| (r.event_id.clone(), r.attempt)).collect::<Vec<_>>();
    let crm = AttemptQuery { subscriber: Some("crm".into()), ..AttemptQuery::default() };
    let found = bus.attempts(&crm).await.unwrap();
    let mut expected: Vec<&AttemptRecord> = records.iter().filter(|r| r.subscriber == "crm").collect();
    expected.sort_by_key(|r| std::cmp::Reverse(r.at));
    assert_eq!(
        ids(&found),
        expected.iter().map(|r| (r.event_id.clone(), r.attempt)).collect::<Vec<_>>(),
        "newest first"
    );
    assert_eq!(found[0..].iter().find(|r| r.status == Some(500)).unwrap(), &records[0], "kept whole");

    let by_event = bus.attempts(&AttemptQuery { event: Some(e1.clone()), ..AttemptQuery::default() }).await.unwrap();
    assert_eq!(by_event.len(), 4, "every subscriber's attempts at the event: {by_event:?}");
    assert!(by_event.iter().all(|r| r.event_id == e1));

    let failed = AttemptQuery { status: Some(StatusFilter::Failed), ..crm.clone() };
    let found = bus.attempts(&failed).await.unwrap();
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found.iter().all(AttemptRecord::failed));
    let fives = AttemptQuery { status: Some("5xx".parse().unwrap()), subscriber: None, ..AttemptQuery::default() };
    let found: Vec<_> =
        bus.attempts(&fives).await.unwrap().into_iter().filter(|r| [&e1, &e2, &e3].contains(&&r.event_id)).collect();
    assert_eq!(found.len(), 2, "{found:?}");

    let recent = AttemptQuery { since: Some(at(15)), ..crm.clone() };
    assert_eq!(ids(&bus.attempts(&recent).await.unwrap()), [(e1.clone(), 3), (e1.clone(), 2)]);
    let limited = AttemptQuery { limit: 2, ..crm };
    assert_eq!(bus.attempts(&limited).await.unwrap().len(), 2);
    let nobody = AttemptQuery { subscriber: Some("nobody".into()), ..AttemptQuery::default() };
    assert!(bus.attempts(&nobody).await.unwrap().is_empty());
}
