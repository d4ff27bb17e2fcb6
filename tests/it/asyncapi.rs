//! The AsyncAPI document: valid for the AsyncAPI project's own parser on
//! every backend, its channel addresses the topics and subjects the bus
//! really uses (read there with plain Kafka and NATS clients), and served
//! by the admin listener behind the token.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt as _;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use serde_json::Value;

use crate::support::{BIN, Running, send_event, write_config_with};

/// `hookbridge asyncapi` for `config`, as JSON.
fn generate(config: &Path, format: &str) -> String {
    let out = Command::new(BIN).args(["asyncapi", "--format", format, "--config"]).arg(config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// What `tools/asyncapi/validate.mjs` (`@asyncapi/parser`) says of each
/// document, in order (one run of node: the parser takes seconds to load).
fn parse(dir: &Path, texts: &[String]) -> Vec<Value> {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/asyncapi");
    assert!(
        tool.join("node_modules/@asyncapi/parser").is_dir(),
        "@asyncapi/parser is not installed: run scripts/setup (npm ci --prefix tools/asyncapi)"
    );
    let files: Vec<_> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let file = dir.join(format!("asyncapi-{i}.doc"));
            std::fs::write(&file, text).unwrap();
            file
        })
        .collect();
    let out = Command::new("node").arg(tool.join("validate.mjs")).args(&files).output().expect("node runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed.len(), texts.len());
    parsed
}

fn config_for(dir: &Path, bus: &str, backend: &str) -> std::path::PathBuf {
    let extra = format!(
        "{bus}[[relay.subscribers]]\nname = \"crm\"\nurl = \"https://crm.internal.example:8443/hooks/email\"\n\
         events = [\"email.*\"]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
         [streams]\nlisten = \"127.0.0.1:0\"\n[[streams.tokens]]\nname = \"dashboard\"\n\
         token = \"stream-token-0123456789\"\nevents = [\"*\"]\n"
    );
    let config = write_config_with(dir, &extra);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("backend = \"embedded\"", &format!("backend = \"{backend}\""))).unwrap();
    config
}

#[test]
fn the_document_is_valid_asyncapi_on_every_backend() {
    let backends = [
        ("embedded", ""),
        ("nats", "[bus.nats]\nurl = [\"nats://127.0.0.1:4222\", \"nats://127.0.0.1:4223\"]\n"),
        ("kafka", "[bus.kafka]\nbrokers = [\"127.0.0.1:9092\"]\npartitions = 3\nreplication_factor = 1\n"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for (backend, bus) in backends {
        let backend_dir = dir.path().join(backend);
        std::fs::create_dir(&backend_dir).unwrap();
        let config = config_for(&backend_dir, bus, backend);
        for format in ["yaml", "json"] {
            runs.push((backend, format, generate(&config, format)));
        }
    }
    let texts: Vec<String> = runs.iter().map(|(_, _, text)| text.clone()).collect();
    for ((backend, format, _), parsed) in runs.iter().zip(parse(dir.path(), &texts)) {
        assert_eq!(parsed["parsed"], true, "{backend} {format}: {parsed}");
        assert_eq!(parsed["problems"], serde_json::json!([]), "{backend} {format}: errors or warnings");
        let channels = parsed["channels"].as_array().unwrap();
        // Every type the configured providers publish, at `<prefix>.<type>`.
        for ty in ["email.bounced", "email.delivered", "email.rejected", "message.created", "domain.verified"] {
            let channel = channels
                .iter()
                .find(|c| c["id"] == ty.replace('.', "-"))
                .unwrap_or_else(|| panic!("{backend}: no channel for {ty}"));
            assert_eq!(channel["address"], format!("hookbridge.{ty}"));
        }
        assert!(
            !channels.iter().any(|c| c["id"] == "email-spam"),
            "MailPace's email.spam is published as email.rejected"
        );
        // The subscriber's webhooks carry only what its patterns match.
        let webhook = channels.iter().find(|c| c["id"] == "webhook-crm").expect("the subscriber's channel");
        assert_eq!(webhook["address"], "/hooks/email");
        let messages: Vec<&str> = webhook["messages"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
        assert!(messages.contains(&"webhook-email-bounced"), "{messages:?}");
        assert!(!messages.iter().any(|m| m.contains("message-")), "{messages:?}");
        // The streams listener's two channels carry every type, and the resync.
        for (id, address) in [("streams-events", "/streams/events"), ("streams-ws", "/streams/ws")] {
            let channel = channels.iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("{backend}: no {id}"));
            assert_eq!(channel["address"], address);
            let messages = channel["messages"].as_array().unwrap();
            for message in ["stream-email-bounced", "stream-message-created", "stream-resync", "stream-disconnect"] {
                assert!(messages.iter().any(|m| m == message), "{id}: {message} in {messages:?}");
            }
        }
    }
    for (backend, bus) in backends {
        let backend_dir = dir.path().join(backend);
        let config = config_for(&backend_dir, bus, backend);
        let document: Value = serde_json::from_str(&generate(&config, "json")).unwrap();
        let servers = document["servers"].as_object().unwrap();
        match backend {
            "nats" => {
                assert_eq!(servers["nats-0"]["host"], "127.0.0.1:4222");
                assert_eq!(servers["nats-1"]["protocol"], "nats");
            }
            "kafka" => {
                assert_eq!(servers["kafka-0"]["host"], "127.0.0.1:9092");
                let binding = &document["channels"]["email-bounced"]["bindings"]["kafka"];
                assert_eq!(
                    (binding["topic"].as_str(), binding["partitions"].as_i64()),
                    (Some("hookbridge.email.bounced"), Some(3))
                );
            }
            _ => assert!(!servers.keys().any(|s| s.starts_with("nats") || s.starts_with("kafka"))),
        }
        assert_eq!(servers["subscriber-crm"]["host"], "crm.internal.example:8443");
    }
}

/// The address of `ty`'s channel in the document of `config`.
fn address(config: &Path, ty: &str) -> String {
    let document: Value = serde_json::from_str(&generate(config, "json")).unwrap();
    document["channels"][ty.replace('.', "-")]["address"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_client_reads_an_event_at_its_channel_address() {
    let server = hookbridge_brokers::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path(), &format!("[bus.nats]\nurl = \"{}\"\n", server.url()), "nats");
    let subject = address(&config, "email.bounced");
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut messages = client.subscribe(subject.clone()).await.unwrap();
    client.flush().await.unwrap();
    let running = Running::start(&config);
    let id = send_event(&reqwest::Client::new(), &running, "email.bounced", 1).await;
    let message = tokio::time::timeout(Duration::from_secs(10), messages.next()).await.expect("a message").unwrap();
    let event: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!((event["id"].as_str(), event["type"].as_str()), (Some(id.as_str()), Some("email.bounced")));
    assert_eq!(message.subject.as_str(), subject);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_client_reads_an_event_at_its_channel_address() {
    let broker = hookbridge_brokers::KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let bus = format!("[bus.kafka]\nbrokers = [\"{}\"]\npartitions = 1\nreplication_factor = 1\n", broker.address());
    let config = config_for(dir.path(), &bus, "kafka");
    let topic = address(&config, "email.bounced");
    let running = Running::start(&config);
    let id = send_event(&reqwest::Client::new(), &running, "email.bounced", 1).await;
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "asyncapi-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(20), consumer.recv()).await.expect("a record").unwrap();
    let event: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
    assert_eq!((event["id"].as_str(), event["type"].as_str()), (Some(id.as_str()), Some("email.bounced")));
    assert_eq!(message.topic(), topic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_serves_the_document_behind_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path(), "", "embedded");
    let running = Running::start(&config);
    let url = format!("http://{}/asyncapi.json", running.admin);
    let client = reqwest::Client::new();
    assert_eq!(client.get(&url).send().await.unwrap().status().as_u16(), 401);
    let served: Value = client
        .get(&url)
        .bearer_auth(hookbridge_testkit::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let printed: Value = serde_json::from_str(&generate(&config, "json")).unwrap();
    assert_eq!(served, printed);
}
