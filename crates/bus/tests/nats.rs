//! The NATS JetStream backend against a real nats-server: the shared
//! conformance suite, then what only NATS does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use hookbridge_bus::Bus;
use hookbridge_bus::conformance::{NatsServer, Store};
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
}

hookbridge_bus::conformance_tests!(Nats::new());
