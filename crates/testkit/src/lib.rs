//! Helpers for hookbridge's tests: real servers on `127.0.0.1:0`, real
//! signatures, and the event schema every produced event is checked against.
//!
//! - [`keys`]: fixed test keys and secrets, and signing of sample webhooks.
//! - [`TestApp`]: the ingress on an embedded bus in a temp dir, served on
//!   ephemeral loopback ports, stopped on drop.
//! - [`assert_valid_event`]: JSON Schema validation.

pub mod keys;
pub mod recorder;
pub mod sns;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hookbridge_brokers::{KafkaBroker, NatsServer};
use hookbridge_bus::embedded::{EmbeddedBus, EmbeddedOptions};
use hookbridge_bus::kafka::{KafkaBus, KafkaOptions};
use hookbridge_bus::nats::{NatsBus, NatsOptions};
use hookbridge_bus::{Bus, BusOptions, Publisher};
use hookbridge_config::Config;
use hookbridge_event::Event;
use hookbridge_ingress::{Health, Ingress};
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Asserts `event` is valid against the event JSON Schema.
///
/// # Panics
/// With every validation error when it is not.
pub fn assert_valid_event(event: &Value) {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = SCHEMA.get_or_init(|| {
        let schema: Value = serde_json::from_str(hookbridge_event::SCHEMA_JSON).expect("schema is JSON");
        jsonschema::options().should_validate_formats(true).build(&schema).expect("schema compiles")
    });
    let errors: Vec<String> = validator.iter_errors(event).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "event does not match the schema: {errors:#?}\n{event:#}");
}

/// The event as JSON, schema-checked.
pub fn checked(event: &Event) -> Value {
    let value: Value = serde_json::from_slice(&event.to_json()).expect("event is JSON");
    assert_valid_event(&value);
    value
}

/// A config with one source per provider and Whippy scheme, on an embedded
/// bus in `bus_dir`, listening on ephemeral loopback ports.
pub fn config_toml(bus_dir: &std::path::Path) -> String {
    format!(
        r#"
[bus]
backend = "embedded"
topic_prefix = "hookbridge"
[bus.embedded]
path = "{bus}"
[ingress]
listen = "127.0.0.1:0"
max_body_bytes = 65536
publish_timeout = "2s"
[[ingress.sources]]
name = "mailpace"
provider = "mailpace"
public_keys = ["{other_key}", "{mailpace_key}"]
[[ingress.sources]]
name = "mailpace-private"
provider = "mailpace"
public_keys = ["{mailpace_key}"]
redact_fields = ["htmlbody", "textbody"]
[[ingress.sources]]
name = "mailpipe"
provider = "mailpipe"
secrets = ["retired-secret", "{mailpipe_secret}"]
[[ingress.sources]]
name = "whippy"
provider = "whippy"
secrets = ["{whippy_secret}"]
signature = "hmac-sha256-hex"
[[ingress.sources]]
name = "whippy-base64"
provider = "whippy"
secrets = ["{whippy_secret}"]
signature = "hmac-sha256-base64"
[[ingress.sources]]
name = "whippy-timestamped"
provider = "whippy"
secrets = ["{whippy_secret}"]
signature = "timestamped"
timestamp_tolerance = "5m"
{catalogue}[[ingress.sources]]
name = "postmark-by-address"
provider = "postmark"
allowed_ips = ["127.0.0.0/8", "::1"]
[[ingress.sources]]
name = "postmark-elsewhere"
provider = "postmark"
username = "{basic_user}"
password = "{basic_password}"
allowed_ips = ["192.0.2.0/24"]
[admin]
listen = "127.0.0.1:0"
"#,
        catalogue = keys::catalogue_sources_toml(),
        basic_user = keys::BASIC_USERNAME,
        basic_password = keys::BASIC_PASSWORD,
        bus = bus_dir.display(),
        other_key = keys::public_key_b64(&keys::other_mailpace_key()),
        mailpace_key = keys::public_key_b64(&keys::mailpace_key()),
        mailpipe_secret = keys::MAILPIPE_SECRET,
        whippy_secret = keys::WHIPPY_SECRET,
    )
}

/// The bus a test app runs on: embedded, or with a broker of its own NATS
/// when `HB_TEST_BACKEND=nats`, Kafka (noida-db's engine) when
/// `HB_TEST_BACKEND=kafka`. Opened the way the binary opens it
/// ([`hookbridge_bus::open`]), with the broker it needs kept alive.
#[derive(Debug)]
pub struct TestBus {
    bus: Arc<dyn Bus>,
    _broker: Broker,
}

/// Held only to keep the broker running for the bus's lifetime.
#[derive(Debug)]
#[expect(dead_code, reason = "held, never read: dropping it stops the broker")]
enum Broker {
    None,
    Nats(NatsServer),
    Kafka(Arc<KafkaBroker>),
}

static BROKERS: std::sync::Mutex<Vec<Arc<KafkaBroker>>> = std::sync::Mutex::new(Vec::new());

/// Kafka options for tests: one partition per topic (each type in order),
/// and new topics found within half a second.
pub fn kafka_test_options(address: String) -> KafkaOptions {
    let mut options = KafkaOptions::new(vec![address], "hookbridge");
    options.partitions = 1;
    options.replication_factor = 1;
    options.metadata_refresh = std::time::Duration::from_millis(500);
    options
}

impl TestBus {
    /// The backend the environment asks for, in `dir`.
    pub async fn from_env(dir: &std::path::Path) -> Self {
        let backend = std::env::var("HB_TEST_BACKEND").unwrap_or_default();
        let (options, broker) = match backend.as_str() {
            "nats" => {
                let server = NatsServer::start();
                (BusOptions::Nats(NatsOptions::new(vec![server.url()], "hookbridge")), Broker::Nats(server))
            }
            "kafka" => {
                // Holding empty fetches as Kafka does: the relay's suites
                // then see a Kafka broker's timing, not a busy loop.
                let broker = Arc::new(KafkaBroker::start_holding_fetches());
                // Kept until the test process ends: the app's consumers leave
                // their groups after the test body returns.
                BROKERS.lock().expect("brokers lock").push(broker.clone());
                (BusOptions::Kafka(kafka_test_options(broker.address())), Broker::Kafka(broker))
            }
            _ => (BusOptions::Embedded(EmbeddedOptions::new(dir.join("bus"))), Broker::None),
        };
        let bus = hookbridge_bus::open(&options).await.expect("the test bus opens");
        Self { bus, _broker: broker }
    }

    /// An embedded bus opened by the test itself.
    pub fn embedded(bus: EmbeddedBus) -> Self {
        Self { bus: Arc::new(bus), _broker: Broker::None }
    }

    pub fn bus(&self) -> Arc<dyn Bus> {
        self.bus.clone()
    }

    /// Every event the bus holds (a reading only tests need, so it is each
    /// backend's own method rather than part of [`Bus`]).
    pub async fn read_all(&self) -> Vec<Event> {
        let any: &dyn std::any::Any = &*self.bus;
        if let Some(bus) = any.downcast_ref::<EmbeddedBus>() {
            bus.read_all().expect("bus readable")
        } else if let Some(bus) = any.downcast_ref::<NatsBus>() {
            bus.read_all().await.expect("NATS readable")
        } else if let Some(bus) = any.downcast_ref::<KafkaBus>() {
            bus.read_all().await.expect("Kafka readable")
        } else {
            unreachable!("the test bus is one of the three backends")
        }
    }
}

/// Token of the admin API in test apps.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The ingress (and, with subscribers, the relay and admin API) on an
/// embedded bus, served on ephemeral loopback ports.
#[derive(Debug)]
pub struct TestApp {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub bus: TestBus,
    pub client: reqwest::Client,
    pub relay: Option<Arc<hookbridge_relay::Relay>>,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

impl TestApp {
    /// Starts the ingress with [`config_toml`] on the environment's bus.
    pub async fn spawn() -> Self {
        Self::spawn_relay("").await
    }

    /// Starts ingress, relay and admin API with these `[[relay.subscribers]]`.
    pub async fn spawn_relay(subscribers: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let bus = TestBus::from_env(dir.path()).await;
        let publisher: Arc<dyn Publisher> = bus.bus();
        Self::spawn_config(dir, bus, publisher, subscribers).await
    }

    /// Starts the ingress publishing to `publisher` (for fault tests).
    pub async fn spawn_with(dir: TempDir, bus: EmbeddedBus, publisher: Arc<dyn Publisher>) -> Self {
        Self::spawn_config(dir, TestBus::embedded(bus), publisher, "").await
    }

    async fn spawn_config(dir: TempDir, bus: TestBus, publisher: Arc<dyn Publisher>, subscribers: &str) -> Self {
        let text = format!("{}token = \"{ADMIN_TOKEN}\"\n{subscribers}", config_toml(&dir.path().join("bus")));
        let config = Config::from_toml(&text).expect("test config is valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let (addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
        let registry = prometheus::Registry::new();
        let ingress = Arc::new(Ingress::new(&config.ingress, publisher.clone(), &registry).expect("metrics register"));
        let health = Health::new(publisher);
        let shutdown = CancellationToken::new();
        let relay_registry = registry.clone();
        let mut admin_router = hookbridge_ingress::admin_router(health.clone(), registry);
        let relay = if config.relay.subscribers.is_empty() {
            None
        } else {
            let relay =
                hookbridge_relay::Relay::start(bus.bus(), config.relay.clone(), shutdown.clone(), &relay_registry)
                    .await
                    .expect("relay starts");
            admin_router =
                admin_router.merge(hookbridge_relay::api::router(relay.clone(), config.admin.token.as_ref()));
            Some(relay)
        };
        let server =
            tokio::spawn(hookbridge_ingress::run(ingress, health, listener, admin, admin_router, shutdown.clone()));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        Self { addr, admin_addr, bus, client, relay, shutdown, server: Some(server), _dir: dir }
    }

    pub fn url(&self, source: &str) -> String {
        format!("http://{}/webhooks/{source}", self.addr)
    }

    /// Sends a signed sample request of a catalogue provider to `source`.
    pub async fn post_signed(
        &self,
        source: &str,
        request: &hookbridge_providers::defined::SignedRequest,
    ) -> (u16, Value) {
        let mut post = self
            .client
            .post(self.url(source))
            .query(&request.query)
            .header("content-type", request.content_type)
            .body(request.body.clone());
        for (name, value) in &request.headers {
            post = post.header(name, value);
        }
        let response = post.send().await.expect("request is answered");
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap_or(Value::Null))
    }

    /// POSTs `body` with `headers` to `/webhooks/{source}`.
    pub async fn post(&self, source: &str, body: Vec<u8>, headers: &[(&str, String)]) -> (u16, Value) {
        let request = hookbridge_providers::defined::SignedRequest {
            body,
            content_type: "application/json",
            headers: headers.iter().map(|(name, value)| ((*name).to_owned(), value.clone())).collect(),
            query: Vec::new(),
        };
        self.post_signed(source, &request).await
    }

    /// Calls the admin API with the test token.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request =
            self.client.request(method, format!("http://{}{path}", self.admin_addr)).bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("admin API answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Posts a signed sample of `event` from test source `source`.
    pub async fn send(&self, source: &str, event: &str, seq: u64) -> String {
        let (body, header) = keys::signed(&keys::signer(source), event, seq, chrono::Utc::now());
        let (status, answer) = self.post(source, body, &[header]).await;
        assert_eq!(status, 200, "{source} {event}: {answer}");
        answer["id"].as_str().expect("an id").to_owned()
    }

    /// Every event the bus holds, each checked against the schema.
    pub async fn published(&self) -> Vec<Event> {
        let events = self.bus.read_all().await;
        events.iter().for_each(|e| {
            checked(e);
        });
        events
    }

    /// Stops the servers, waiting for requests in flight.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server ran");
        }
        if let Some(relay) = &self.relay {
            relay.wait().await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
