//! noida-db's Kafka engine, in this process.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A Kafka-protocol broker in this process (noida-db's Kafka engine) on a
/// free loopback port. Stopping it closes the listener and every
/// connection while its log stays in memory; resuming listens again on the
/// same port: a broker that goes away and comes back with its data.
pub struct KafkaBroker {
    pub port: u16,
    engine: noida::kafka::engine::Engine,
    running: Option<Arc<Listening>>,
    /// With [`KafkaBroker::start_holding_fetches`]: where the engine
    /// listens behind the relays that hold empty fetches, and what they
    /// share.
    held: Option<(std::net::SocketAddr, Arc<crate::held_fetch::Shared>)>,
}

impl std::fmt::Debug for KafkaBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBroker").field("port", &self.port).finish_non_exhaustive()
    }
}

struct Listening {
    stopped: std::sync::atomic::AtomicBool,
    connections: std::sync::Mutex<Vec<std::net::TcpStream>>,
}

impl KafkaBroker {
    /// Starts one on a free loopback port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// One that holds a Fetch finding no records, as a Kafka broker does,
    /// until records are produced or the request's `max_wait_ms` (at most
    /// 1 s) has passed. noida-db's engine answers such a fetch at once, so
    /// each idle consumer polls it in a busy loop; benchmarks that measure
    /// the client next to idle groups use this one.
    ///
    /// # Panics
    /// When no port can be bound.
    pub fn start_holding_fetches() -> Self {
        Self::start_with(Some(Duration::ZERO))
    }

    /// [`KafkaBroker::start_holding_fetches`], whose groups' first joins
    /// also wait `delay`, as Kafka's `group.initial.rebalance.delay.ms`
    /// (3 s by default) makes a new group's first members wait.
    ///
    /// # Panics
    /// When no port can be bound.
    pub fn start_holding_fetches_with_first_join_delay(delay: Duration) -> Self {
        Self::start_with(Some(delay))
    }

    fn start_with(hold: Option<Duration>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().unwrap().port();
        let engine = noida::kafka::engine::Engine::new("127.0.0.1".into(), i32::from(port));
        engine.spawn_log_cleaner();
        let held = hold.map(|delay| {
            (crate::held_fetch::engine_listener(engine.clone()), Arc::new(crate::held_fetch::Shared::new(delay)))
        });
        let mut broker = Self { port, engine, running: None, held };
        broker.serve(listener);
        broker
    }

    /// The Fetch requests answered so far by a broker that holds them
    /// ([`KafkaBroker::start_holding_fetches`]); 0 for one that does not.
    pub fn fetches_answered(&self) -> u64 {
        self.held.as_ref().map_or(0, |(_, shared)| shared.fetches.load(Ordering::Relaxed))
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn serve(&mut self, listener: std::net::TcpListener) {
        let listening = Arc::new(Listening { stopped: false.into(), connections: std::sync::Mutex::new(Vec::new()) });
        let (state, engine, held) = (listening.clone(), self.engine.clone(), self.held.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if state.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                if let Ok(handle) = stream.try_clone() {
                    state.connections.lock().unwrap().push(handle);
                }
                if let Some((addr, produced)) = &held {
                    let (addr, produced) = (*addr, produced.clone());
                    std::thread::spawn(move || crate::held_fetch::relay(stream, addr, &produced));
                    continue;
                }
                let engine = engine.clone();
                std::thread::spawn(move || noida::kafka::connection::handle_connection(stream, engine));
            }
        });
        self.running = Some(listening);
    }

    /// The broker goes away: no listener, every connection closed.
    pub fn stop(&mut self) {
        if let Some(listening) = self.running.take() {
            listening.stopped.store(true, Ordering::SeqCst);
            // Wake the accept loop so it drops the listener.
            let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
            for connection in listening.connections.lock().unwrap().drain(..) {
                let _ = connection.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Listens again on the same port, with the same data.
    ///
    /// # Panics
    /// When the port cannot be bound again.
    pub fn resume(&mut self) {
        if self.running.is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match std::net::TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cannot listen on {} again: {e}", self.port);
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        self.serve(listener);
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.stop();
    }
}
