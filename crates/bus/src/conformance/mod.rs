//! The behaviour every bus backend must show, as test functions over the
//! [`Bus`] traits. A backend's tests provide a [`Store`] and run each case
//! (see [`conformance_tests!`](crate::conformance_tests)).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use hookbridge_event::{DATA_CONTENT_TYPE, Event, EventPattern, SPEC_VERSION};
use serde_json::value::RawValue;

mod attempts;
mod delivery;
mod durability;
mod ordering;
mod tail;

pub use attempts::*;
pub use delivery::*;
pub use durability::*;
pub use ordering::*;
pub use tail::*;

use crate::{Bus, Consumer, Delivery, Failure, NewGroup, PublishOutcome, StartFrom, SubscribeOptions};

/// One backend store that can be opened, dropped and opened again (a restart).
#[async_trait]
pub trait Store: Send + Sync {
    async fn open(&self) -> Arc<dyn Bus>;

    /// Opens it with events expiring after `max_age` (applied within a
    /// second or so); `None` when the backend cannot be configured so.
    async fn open_with_max_age(&self, _max_age: Duration) -> Option<Arc<dyn Bus>> {
        None
    }

    /// Stops the broker (`false`: there is none, e.g. the embedded bus).
    fn stop_broker(&mut self) -> bool {
        false
    }

    /// Starts the broker again on the same address and storage.
    fn resume_broker(&mut self) {}

    /// Whether events of different types come in publish order (a log with
    /// one sequence); `false` where only each type keeps its order (Kafka:
    /// one topic per type).
    fn orders_across_types(&self) -> bool {
        true
    }

    /// Whether the events a closed consumer held come back in publish order
    /// after a restart. JetStream redelivers what a gone client had received
    /// only after `ack_wait`, so a later event of the subject may come first.
    fn redelivers_in_order_after_restart(&self) -> bool {
        true
    }

    /// Whether the broker finds offsets by time correctly (tansu's memory
    /// engine does not): the cases that start at a time are skipped without.
    fn finds_offsets_by_time(&self) -> bool {
        true
    }

    /// Whether the broker's high watermark counts every record of a
    /// batch (tansu's memory engine counts a batch of several as one):
    /// without, the cases write one record per request.
    fn counts_batched_records(&self) -> bool {
        true
    }
}

/// Generates one `#[tokio::test]` per conformance case, each with a fresh
/// store from `$store` (an async expression yielding a [`Store`]).
#[macro_export]
macro_rules! conformance_tests {
    ($store:expr) => {
        $crate::conformance_tests!(@cases $store;
            publish_delivers_matching_events_in_order,
            duplicate_ids_are_stored_once,
            group_position_survives_restart,
            nack_redelivers_after_delay_without_blocking,
            nacked_retry_survives_restart,
            dropped_delivery_is_redelivered,
            replay_from_time,
            earliest_and_latest,
            concurrent_consumers_share_a_group,
            groups_are_independent,
            dead_letters_are_kept_replayed_and_discarded,
            group_status_counts_outstanding_work,
            state_is_shared_and_durable,
            count_between_counts_a_window,
            retention_by_age,
            a_group_that_exists_misses_nothing_published_while_away,
            a_member_joins_a_running_group_without_its_help,
            a_tail_resumes_exactly_after_its_cursor_across_a_restart,
            a_tail_finds_a_type_that_appears_while_it_runs,
            a_tail_starts_at_a_time,
            a_cursor_of_another_kind_is_refused,
            a_cursor_older_than_retention_gets_a_resync,
            a_subject_comes_in_publish_order,
            unsettled_events_of_a_subject_come_back_in_order,
            a_subject_belongs_to_one_member_of_a_group,
            attempts_are_recorded_and_answered,
        );
        $crate::conformance_tests!(@mut_cases $store; a_broker_outage_loses_nothing_acknowledged, dead_letters_survive_a_broker_crash);
    };
    (@cases $store:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = $store;
                $crate::conformance::$case(&store).await;
            }
        )*
    };
    (@mut_cases $store:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let mut store = $store;
                $crate::conformance::$case(&mut store).await;
            }
        )*
    };
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A schema-valid event of type `ty` with a unique id.
pub fn event(ty: &str) -> Event {
    use hookbridge_event::data::{Bounce, BounceKind, EmailData, MessagingData, Normalized, ResourceData};
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let id = format!("conf-{}-{n}", std::process::id());
    let normalized = if ty.starts_with("email.") {
        let bounce = matches!(ty, "email.bounced" | "email.deferred").then(|| Bounce {
            kind: BounceKind::Soft,
            code: Some("421".into()),
            message: None,
        });
        Normalized::Email(EmailData {
            message_id: Some(format!("msg-{n}")),
            to: vec!["ada@example.com".into()],
            bounce,
            ..EmailData::default()
        })
    } else if ty.starts_with("message.") {
        Normalized::Messaging(MessagingData { message_id: Some(format!("msg-{n}")), ..MessagingData::default() })
    } else {
        Normalized::Resource(ResourceData { resource_id: Some(id.clone()) })
    };
    let original = RawValue::from_string(format!(r#"{{"seq":{n}}}"#)).unwrap();
    Event {
        specversion: SPEC_VERSION.into(),
        id: id.clone(),
        source: "urn:hookbridge:source:conformance".into(),
        ty: ty.into(),
        time: Utc::now(),
        subject: Some(format!("msg-{n}")),
        datacontenttype: DATA_CONTENT_TYPE.into(),
        provider: "mailpipe".into(),
        providerevent: ty.into(),
        ingesttime: Utc::now(),
        traceparent: None,
        data: normalized.into_data(&original),
    }
}

fn options(group: &str, patterns: &[&str], start: StartFrom) -> SubscribeOptions {
    SubscribeOptions {
        group: group.into(),
        patterns: patterns.iter().map(|p| EventPattern::parse(p).unwrap()).collect(),
        start,
    }
}

const FROM_START: StartFrom = StartFrom::Committed { if_new: NewGroup::Earliest };
/// How the relay subscribes: a new group starts at the latest event.
const AS_RELAY: StartFrom = StartFrom::Committed { if_new: NewGroup::Latest };

async fn next(consumer: &mut Box<dyn Consumer>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery within 10s")
        .expect("consumer works")
}

/// Asserts nothing arrives for `quiet`.
async fn assert_quiet(consumer: &mut Box<dyn Consumer>, quiet: Duration) {
    if let Ok(delivery) = tokio::time::timeout(quiet, consumer.next()).await {
        panic!("expected no delivery, got {:?}", delivery.map(|d| d.event.id));
    }
}

async fn publish(bus: &Arc<dyn Bus>, events: &[Event]) {
    for event in events {
        assert_eq!(bus.publish(event).await.unwrap(), PublishOutcome::Published);
    }
}
