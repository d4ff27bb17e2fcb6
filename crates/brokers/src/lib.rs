//! Real brokers for hookbridge's tests, benchmarks and fault-injection
//! runs, each on a free loopback port and stopped when dropped:
//! [`NatsServer`] (a `nats-server -js` process), [`KafkaBroker`] (noida-db's
//! Kafka engine in this process) and [`Tansu`] (a second, independent
//! Kafka-protocol broker, as a process). `scripts/setup` installs the
//! binaries.
//!
//! Dev-only: nothing here depends on hookbridge, and no production crate
//! depends on this one.

mod held_fetch;
mod nats;
mod noida;
mod tansu;

pub use nats::NatsServer;
pub use noida::KafkaBroker;
pub use tansu::Tansu;

/// A port free on 127.0.0.1 now.
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("bound").port()
}
