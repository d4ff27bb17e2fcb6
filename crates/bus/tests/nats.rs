//! The NATS JetStream backend against a real nats-server: the shared
//! conformance suite, then what only NATS does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use hookbridge_brokers::NatsServer;
use hookbridge_bus::Bus;
use hookbridge_bus::conformance::Store;
use hookbridge_bus::nats::{NatsBus, NatsOptions};

static STREAMS: AtomicU64 = AtomicU64::new(0);

struct Nats {
    server: NatsServer,
    stream: String,
}

impl Nats {
    fn new() -> Self {
        Self { server: NatsServer::start(), stream: format!("HB{}", STREAMS.fetch_add(1, Ordering::Relaxed)) }
    }
}

impl Nats {
    fn options(&self) -> NatsOptions {
        let mut options = NatsOptions::new(vec![self.server.url()], "hookbridge");
        options.stream = self.stream.clone();
        // Deliveries a vanished consumer had prefetched come back after
        // ack_wait; short here so that restarts within a test are quick.
        options.ack_wait = std::time::Duration::from_secs(2);
        options
    }
}

#[async_trait]
impl Store for Nats {
    async fn open(&self) -> Arc<dyn Bus> {
        Arc::new(NatsBus::open(self.options()).await.expect("NATS bus opens"))
    }

    async fn open_with_max_age(&self, max_age: std::time::Duration) -> Option<Arc<dyn Bus>> {
        let mut options = self.options();
        options.max_age = Some(max_age);
        Some(Arc::new(NatsBus::open(options).await.expect("NATS bus opens")))
    }

    fn stop_broker(&mut self) -> bool {
        self.server.stop();
        true
    }

    fn resume_broker(&mut self) {
        self.server.resume();
    }

    fn redelivers_in_order_after_restart(&self) -> bool {
        false
    }
}

hookbridge_bus::conformance_tests!(Nats::new());

/// A delivery held longer than `ack_wait` (a slow subscriber) is reported in
/// progress, so JetStream does not offer it to another member meanwhile;
/// once its holder dies (its runtime, connection and tasks end without a
/// word), it comes again after `ack_wait`.
#[test]
fn a_delivery_in_flight_is_not_redelivered_until_its_holder_dies() {
    use std::time::Duration;

    use hookbridge_bus::{NewGroup, StartFrom, SubscribeOptions};
    use hookbridge_event::EventPattern;

    let store = Arc::new(Nats::new());
    let options = SubscribeOptions {
        group: "slow".into(),
        patterns: vec![EventPattern::All],
        start: StartFrom::Committed { if_new: NewGroup::Earliest },
    };
    let event = hookbridge_bus::conformance::event("email.sent");
    let runtime = || tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();

    // The holder, in a runtime of its own: shutting it down is its death.
    let holder = runtime();
    let (store2, options2, event2) = (store.clone(), options.clone(), event.clone());
    let held = holder.block_on(async move {
        let bus = store2.open().await;
        bus.publish(&event2).await.unwrap();
        let mut consumer = bus.subscribe(options2).await.unwrap();
        let held = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await.unwrap().unwrap();
        (bus, consumer, held)
    });

    let other = runtime();
    other.block_on(async {
        let bus = store.open().await;
        let mut second = bus.subscribe(options).await.unwrap();
        // Three times ack_wait (2 s): no other member gets it.
        if let Ok(again) = tokio::time::timeout(Duration::from_secs(6), second.next()).await {
            panic!("redelivered while in flight: {:?}", again.map(|d| d.event.id));
        }
        std::mem::forget(held);
        holder.shutdown_background();
        let again = tokio::time::timeout(Duration::from_secs(10), second.next()).await.unwrap().unwrap();
        assert_eq!(again.event.id, event.id);
        again.ack().await.unwrap();
    });
}
