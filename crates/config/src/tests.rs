// figment's Jail returns its own (large) error type.
#![allow(clippy::result_large_err)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use figment::Jail;

use super::*;
use hookbridge_bus::nats::NatsAuth;
use hookbridge_providers::Provider;

fn public_key() -> String {
    STANDARD.encode(SigningKey::from_bytes(&[3; 32]).verifying_key().to_bytes())
}

fn example() -> String {
    format!(
        r#"
[bus]
backend = "embedded"
topic_prefix = "acme"
[bus.embedded]
path = "/tmp/bus"
dedup_window = "1h"
[bus.embedded.retention]
max_age = "3d"
max_bytes = 1000000
[ingress]
listen = "127.0.0.1:8080"
max_body_bytes = 4096
[[ingress.sources]]
name = "mailpace"
provider = "mailpace"
public_keys = ["{key}"]
redact_fields = ["htmlbody", "textbody"]
[[ingress.sources]]
name = "mailpipe"
provider = "mailpipe"
secrets = ["env:TEST_MAILPIPE_SECRET"]
[[ingress.sources]]
name = "whippy"
provider = "whippy"
secrets = ["inline-whippy-key"]
signature = "timestamped"
timestamp_tolerance = "2m"
[admin]
listen = "127.0.0.1:9090"
"#,
        key = public_key()
    )
}

#[test]
fn a_complete_file_loads() {
    Jail::expect_with(|jail| {
        jail.set_env("TEST_MAILPIPE_SECRET", "s3cr3t-value");
        let config = Config::from_toml(&example()).map_err(|e| e.to_string())?;
        assert_eq!(config.topic_prefix, "acme");
        let BusOptions::Embedded(embedded) = &config.bus else { panic!("embedded by default") };
        assert_eq!(embedded.retention.max_age, Some(Duration::from_secs(3 * 86400)));
        assert_eq!(embedded.retention.max_bytes, Some(1_000_000));
        assert_eq!(embedded.retention.dedup_window, Duration::from_secs(3600));
        assert_eq!(config.ingress.max_body_bytes, 4096);
        let names: Vec<_> = config.ingress.sources.iter().map(|s| (s.name.as_str(), s.provider.clone())).collect();
        assert_eq!(
            names,
            [("mailpace", Provider::MailPace), ("mailpipe", Provider::Mailpipe), ("whippy", Provider::Whippy)]
        );
        assert_eq!(config.source("mailpipe").unwrap().meta.event_source, "urn:hookbridge:source:mailpipe");
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cr3t-value") && !debug.contains("inline-whippy-key"), "secrets in Debug: {debug}");
        Ok(())
    });
}

#[test]
fn every_problem_is_reported_at_once_with_its_path() {
    Jail::expect_with(|_| {
        let text = r#"
[bus]
topic_prefix = "Bad Prefix"
[[ingress.sources]]
name = "a"
provider = "mailpace"
public_keys = ["AAAA"]
[[ingress.sources]]
name = "a"
provider = "sendmail"
[[ingress.sources]]
name = "Pipe!"
provider = "mailpipe"
secrets = ["env:HOOKBRIDGE_TEST_UNSET_VAR"]
signature = "timestamped"
[[ingress.sources]]
name = "w"
provider = "whippy"
secrets = ["k"]
signature = "rot13"
"#;
        let err = Config::from_toml(text).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        for expected in [
            "bus.topic_prefix",
            "ingress.sources[0].public_keys[0]",
            "ingress.sources[1].name",
            "ingress.sources[1].provider",
            "ingress.sources[2].name",
            "ingress.sources[2].secrets[0]",
            "ingress.sources[2].signature",
            "ingress.sources[3].signature",
        ] {
            assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
        }
        let text = err.to_string();
        assert!(text.contains("HOOKBRIDGE_TEST_UNSET_VAR is not set"), "{text}");
        assert!(text.contains("decodes to 3 bytes"), "{text}");
        Ok(())
    });
}

#[test]
fn unknown_keys_and_wrong_types_name_their_path() {
    Jail::expect_with(|_| {
        let err = Config::from_toml("[ingress]\nlisten = \"x\"\n").unwrap_err();
        assert_eq!(err.problems[0].path, "ingress.listen", "{err}");
        let err = Config::from_toml("[bus.embedded]\npaht = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("paht"), "{err}");
        Ok(())
    });
}

#[test]
fn environment_overrides_the_file() {
    Jail::expect_with(|jail| {
        jail.set_env("TEST_MAILPIPE_SECRET", "x");
        jail.set_env("HOOKBRIDGE_INGRESS__LISTEN", "127.0.0.1:18080");
        jail.set_env("HOOKBRIDGE_BUS__EMBEDDED__PATH", "/var/lib/hookbridge");
        let config = Config::from_toml(&example()).map_err(|e| e.to_string())?;
        assert_eq!(config.ingress.listen.port(), 18080);
        let BusOptions::Embedded(embedded) = &config.bus else { panic!("embedded") };
        assert_eq!(embedded.path, std::path::PathBuf::from("/var/lib/hookbridge"));
        Ok(())
    });
}

#[test]
fn secrets_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "from-file\n").unwrap();
    assert_eq!(SecretRef::parse(&format!("file:{}", file.display())).resolve().unwrap(), "from-file");
    let missing = SecretRef::parse("file:/nonexistent/secret").resolve().unwrap_err();
    assert!(missing.to_string().contains("/nonexistent/secret"));
    assert!(!format!("{:?}", SecretRef::parse("hunter2")).contains("hunter2"));
}

#[test]
fn a_missing_file_is_one_clear_problem() {
    let err = Config::load(Path::new("/nonexistent/hookbridge.toml")).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn subscribers_load_with_documented_defaults() {
    Jail::expect_with(|jail| {
        jail.set_env("TEST_MAILPIPE_SECRET", "x");
        jail.set_env("TEST_BILLING_TOKEN", "Bearer abc");
        let text = format!(
            "{}token = \"0123456789abcdef\"\n[[relay.subscribers]]\nname = \"billing\"\nurl = \"https://billing.internal/hooks\"\nevents = [\"email.bounced\", \"message.*\"]\nsecret = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", \"whsk_{}\"]\nheaders = {{ \"Authorization\" = \"env:TEST_BILLING_TOKEN\" }}\nproviders = [\"mailpace\"]\n",
            example(),
            STANDARD.encode([4u8; 32])
        );
        let config = Config::from_toml(&text).map_err(|e| e.to_string())?;
        let s = &config.relay.subscribers[0];
        assert_eq!(s.name, "billing");
        assert_eq!(s.events.len(), 2);
        assert_eq!(s.secrets.len(), 2);
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert_eq!(s.max_in_flight, 64);
        assert_eq!(s.retry.schedule.len(), 8);
        assert_eq!(s.retry.schedule[2], Duration::from_secs(120));
        assert_eq!(s.retry.retry_on_status, [408, 425, 429]);
        assert_eq!(s.circuit.failure_threshold, 10);
        assert!(s.enabled);
        assert_eq!(s.headers[0].1.to_str().unwrap(), "Bearer abc");
        assert!(config.admin.token.is_some());
        assert_eq!(config.relay.group("billing"), "acme.relay.billing");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("Bearer abc") && !debug.contains("0123456789abcdef") && !debug.contains("MfKQ9r8"),
            "{debug}"
        );
        Ok(())
    });
}

#[test]
fn every_subscriber_problem_is_reported_with_its_path() {
    Jail::expect_with(|_| {
        let text = r#"
[[relay.subscribers]]
name = "a"
url = "ftp://x"
events = ["email.*.x"]
secret = "plain"
retry_on_status = [500]
providers = ["sendmail"]
headers = { "X-Token" = "env:HOOKBRIDGE_TEST_UNSET_TOKEN" }
[[relay.subscribers]]
name = "a"
url = "not a url"
events = []
max_in_flight = 0
[admin]
token = "short"
"#;
        let err = Config::from_toml(text).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        for expected in [
            "relay.subscribers[0].url",
            "relay.subscribers[0].events[0]",
            "relay.subscribers[0].secret",
            "relay.subscribers[0].retry_on_status[0]",
            "relay.subscribers[0].providers[0]",
            "relay.subscribers[0].headers.X-Token",
            "relay.subscribers[1].name",
            "relay.subscribers[1].url",
            "relay.subscribers[1].events",
            "relay.subscribers[1].max_in_flight",
            "admin.token",
        ] {
            assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
        }
        assert!(!err.to_string().contains("plain\""), "secret values are not echoed: {err}");
        Ok(())
    });
}

#[test]
fn a_nats_bus_is_configured_and_checked() {
    Jail::expect_with(|jail| {
        jail.set_env("TEST_MAILPIPE_SECRET", "x");
        jail.set_env("TEST_NATS_TOKEN", "nats-secret-token");
        let text = example().replace("backend = \"embedded\"", "backend = \"nats\"")
            + "[bus.nats]\nurl = [\"nats://a:4222\", \"nats://b:4222\"]\nstream = \"EVENTS\"\ntoken = \"env:TEST_NATS_TOKEN\"\nstorage = \"memory\"\nreplicas = 3\nduplicate_window = \"5m\"\n";
        let config = Config::from_toml(&text).map_err(|e| e.to_string())?;
        let BusOptions::Nats(nats) = &config.bus else { panic!("nats options") };
        assert_eq!(nats.urls, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!((nats.stream.as_str(), nats.replicas, nats.topic_prefix.as_str()), ("EVENTS", 3, "acme"));
        assert!(matches!(nats.auth, NatsAuth::Token(_)));
        assert!(!format!("{config:?}").contains("nats-secret-token"));
        Ok(())
    });
}

#[test]
fn nats_problems_are_reported_with_their_paths() {
    Jail::expect_with(|_| {
        let text = r#"
[bus]
backend = "nats"
[bus.nats]
url = "http://x"
token = "t"
user = "u"
storage = "ssd"
max_age = "1m"
duplicate_window = "2m"
tls = { cert_file = "/c.pem" }
[[relay.subscribers]]
name = "slow"
url = "http://127.0.0.1:9/"
events = ["*"]
timeout = "90s"
"#;
        let err = Config::from_toml(text).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        for expected in [
            "bus.nats.url[0]",
            "bus.nats",
            "bus.nats.password",
            "bus.nats.storage",
            "bus.nats.duplicate_window",
            "bus.nats.tls.key_file",
        ] {
            assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
        }
        Ok(())
    });
}

#[test]
fn a_kafka_bus_is_configured_with_passed_through_properties() {
    Jail::expect_with(|jail| {
        jail.set_env("TEST_MAILPIPE_SECRET", "x");
        jail.set_env("TEST_SASL_PASSWORD", "kafka-sasl-secret");
        let text = example().replace("backend = \"embedded\"", "backend = \"kafka\"")
            + r#"[bus.kafka]
brokers = ["b1:9092", "b2:9092"]
partitions = 12
replication_factor = 3
retention = "3d"
[bus.kafka.properties]
"security.protocol" = "SASL_SSL"
"sasl.mechanisms" = "SCRAM-SHA-512"
"sasl.username" = "hookbridge"
"sasl.password" = "env:TEST_SASL_PASSWORD"
"session.timeout.ms" = 10000
"#;
        let config = Config::from_toml(&text).map_err(|e| e.to_string())?;
        let BusOptions::Kafka(kafka) = &config.bus else { panic!("kafka options") };
        assert_eq!(kafka.brokers, ["b1:9092", "b2:9092"]);
        assert_eq!((kafka.partitions, kafka.replication_factor, kafka.topic_prefix.as_str()), (12, 3, "acme"));
        assert_eq!(kafka.retention, Some(std::time::Duration::from_secs(3 * 24 * 3600)));
        let props: std::collections::HashMap<&str, &str> =
            kafka.properties.iter().map(|(k, v)| (k.as_str(), secrecy::ExposeSecret::expose_secret(v))).collect();
        assert_eq!(props["sasl.password"], "kafka-sasl-secret");
        assert_eq!(props["session.timeout.ms"], "10000");
        assert!(!format!("{config:?}").contains("kafka-sasl-secret"), "secrets stay out of Debug");
        Ok(())
    });
}

#[test]
fn kafka_problems_are_reported_with_their_paths() {
    Jail::expect_with(|_| {
        let text = r#"
[bus]
backend = "kafka"
[bus.kafka]
brokers = ["kafka://b1:9092"]
partitions = 0
replication_factor = -3
[bus.kafka.properties]
"enable.auto.commit" = true
"sasl.password" = "env:HB_TEST_UNSET_VARIABLE"
"group.instance.id" = "relay-0"
"#;
        let err = Config::from_toml(text).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        for expected in [
            "bus.kafka.brokers[0]",
            "bus.kafka.partitions",
            "bus.kafka.replication_factor",
            "bus.kafka.properties.\"enable.auto.commit\"",
            "bus.kafka.properties.\"sasl.password\"",
            "bus.kafka.properties.\"group.instance.id\"",
        ] {
            assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
        }
        Ok(())
    });
}

#[test]
fn a_relay_takes_its_kafka_instance_id_from_the_environment() {
    Jail::expect_with(|jail| {
        jail.set_env("TEST_MAILPIPE_SECRET", "x");
        let kafka = example().replace("backend = \"embedded\"", "backend = \"kafka\"")
            + "[bus.kafka]\nbrokers = [\"b1:9092\"]\n";
        let config = Config::from_toml(&kafka).map_err(|e| e.to_string())?;
        let BusOptions::Kafka(options) = &config.bus else { panic!("kafka options") };
        assert_eq!(options.instance_id, None, "dynamic membership unless asked");
        // As a StatefulSet's manifest gives it: the pod's name.
        jail.set_env("HOOKBRIDGE_BUS__KAFKA__INSTANCE_ID", "hookbridge-relay-2");
        let config = Config::from_toml(&kafka).map_err(|e| e.to_string())?;
        let BusOptions::Kafka(options) = &config.bus else { panic!("kafka options") };
        assert_eq!(options.instance_id.as_deref(), Some("hookbridge-relay-2"));
        jail.set_env("HOOKBRIDGE_BUS__KAFKA__INSTANCE_ID", "relay 2/a");
        let err = Config::from_toml(&kafka).unwrap_err();
        assert_eq!(err.problems.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(), ["bus.kafka.instance_id"]);
        Ok(())
    });
}

#[test]
fn streams_are_off_unless_configured_and_their_tokens_are_checked() {
    Jail::expect_with(|jail| {
        jail.set_env("TEST_STREAM_TOKEN", "stream-token-from-env-0123");
        jail.set_env("TEST_MAILPIPE_SECRET", "s3cr3t-value");
        let off = Config::from_toml(&example()).map_err(|e| e.to_string())?;
        assert!(off.streams.is_none());
        let on = format!(
            "{}\n[streams]\nlisten = \"127.0.0.1:8081\"\ncors_origins = [\"https://status.example.com\"]\n\
             [[streams.tokens]]\nname = \"dash\"\ntoken = \"env:TEST_STREAM_TOKEN\"\nevents = [\"email.*\"]\n",
            example()
        );
        let config = Config::from_toml(&on).map_err(|e| e.to_string())?;
        let streams = config.streams.as_ref().expect("configured");
        assert_eq!(streams.heartbeat, Duration::from_secs(15));
        assert_eq!((streams.client_buffer, streams.max_clients), (1024, 10_000));
        assert_eq!(streams.tokens[0].events, [hookbridge_event::EventPattern::parse("email.*").unwrap()]);
        assert!(!format!("{config:?}").contains("stream-token-from-env"), "the token stays out of Debug");

        let bad = format!(
            "{}\n[streams]\nlisten = \"127.0.0.1:8080\"\ncors_origins = [\"https://x.example/path\"]\nclient_buffer = 0\n\
             [[streams.tokens]]\nname = \"a\"\ntoken = \"short\"\nevents = [\"email.**\"]\n\
             [[streams.tokens]]\nname = \"a\"\ntoken = \"env:TEST_STREAM_TOKEN\"\nevents = []\n",
            example()
        );
        let error = Config::from_toml(&bad).expect_err("refused");
        let paths: Vec<&str> = error.problems.iter().map(|p| p.path.as_str()).collect();
        for path in [
            "streams.listen",
            "streams.cors_origins[0]",
            "streams.client_buffer",
            "streams.tokens[0].token",
            "streams.tokens[0].events[0]",
            "streams.tokens[1].name",
            "streams.tokens[1].events",
        ] {
            assert!(paths.contains(&path), "{path} in {paths:?}");
        }
        let none = format!("{}\n[streams]\nlisten = \"127.0.0.1:8081\"\n", example());
        let error = Config::from_toml(&none).expect_err("no token");
        assert!(error.problems.iter().any(|p| p.path == "streams.tokens"));
        Ok(())
    });
}

#[test]
fn subscriber_transport_and_auth_problems_name_their_path_and_hide_secrets() {
    Jail::expect_with(|jail| {
        jail.create_file("ca.pem", "not a certificate")?;
        jail.create_file("client.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")?;
        let text = r#"
[[relay.subscribers]]
name = "a"
url = "https://a.internal/hooks"
events = ["*"]
ca_file = "ca.pem"
tls = { ca = "ca.pem", cert = "client.pem" }
proxy = "ftp://user:proxy-password@proxy:21"
auth = { type = "oauth2", token_url = "file:///token", client_id = "", client_secret = "env:HOOKBRIDGE_TEST_UNSET_SECRET" }
headers = { "Authorization" = "Bearer x" }
[[relay.subscribers]]
name = "b"
url = "https://b.internal/hooks"
events = ["*"]
tls = { key = "env:HOOKBRIDGE_TEST_UNSET_KEY" }
auth = { type = "oauth2", token_url = "https://id.example/token", client_id = "relay", client_secret = "" }
[[relay.subscribers]]
name = "c"
url = "https://c.internal/hooks"
events = ["*"]
tls = { cert = "client.pem", key = "env:HOOKBRIDGE_TEST_UNSET_KEY" }
"#;
        let err = Config::from_toml(text).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        for expected in [
            "relay.subscribers[0].tls.ca",
            "relay.subscribers[0].tls.key",
            "relay.subscribers[0].proxy",
            "relay.subscribers[0].auth.token_url",
            "relay.subscribers[0].auth.client_id",
            "relay.subscribers[0].auth.client_secret",
            "relay.subscribers[0].headers.Authorization",
            "relay.subscribers[1].tls.cert",
            "relay.subscribers[1].auth.client_secret",
            "relay.subscribers[2].tls.key",
        ] {
            assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
        }
        assert!(!err.to_string().contains("proxy-password"), "proxy credentials are not echoed: {err}");
        Ok(())
    });
}

#[test]
fn oauth2_mtls_and_proxy_load_and_stay_out_of_debug() {
    Jail::expect_with(|jail| {
        jail.set_env("TEST_OAUTH_CLIENT_SECRET", "oauth-client-secret-value");
        let text = r#"
[[relay.subscribers]]
name = "a"
url = "https://a.internal/hooks"
events = ["*"]
ordering = "subject"
proxy = "http://relay:proxy-password@127.0.0.1:3128"
auth = { type = "oauth2", token_url = "https://id.example/oauth/token", client_id = "relay", client_secret = "env:TEST_OAUTH_CLIENT_SECRET", scopes = ["hooks:write"], client_auth = "post", audience = "https://a.internal" }
"#;
        let config = Config::from_toml(text).expect("valid");
        let s = &config.relay.subscribers[0];
        assert_eq!(s.ordering, hookbridge_relay::ordering::Ordering::Subject);
        let auth = s.auth.as_ref().expect("oauth2");
        assert_eq!(auth.token_url.as_str(), "https://id.example/oauth/token");
        assert_eq!(auth.scopes, ["hooks:write"]);
        assert_eq!(auth.client_auth, hookbridge_relay::oauth2::ClientAuth::Post);
        assert!(s.proxy.is_some());
        let debug = format!("{config:?}");
        assert!(!debug.contains("oauth-client-secret-value"), "the client secret stays out of Debug");
        assert!(!debug.contains("proxy-password"), "proxy credentials stay out of Debug");
        Ok(())
    });
}

#[test]
fn catalogue_source_problems_name_their_path() {
    Jail::expect_with(|_| {
        let text = r#"
[[ingress.sources]]
name = "mandrill"
provider = "mandrill"
secrets = ["k"]
webhook_url = "ftp://hooks.example/x"
[[ingress.sources]]
name = "postmark"
provider = "postmark"
username = "u"
password = ""
allowed_ips = ["10.0.0.0/8", "not-an-address"]
[[ingress.sources]]
name = "ses"
provider = "ses"
topic_arns = ["my-topic"]
signing_cert_ca = "/nonexistent/ca.pem"
[[ingress.sources]]
name = "mailgun"
provider = "mailgun"
topic_arns = ["arn:aws:sns:eu-west-1:1:t"]
"#;
        let err = Config::from_toml(text).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        for expected in [
            "ingress.sources[0].webhook_url",
            "ingress.sources[1].password",
            "ingress.sources[1].allowed_ips[1]",
            "ingress.sources[2].topic_arns[0]",
            "ingress.sources[2].signing_cert_ca",
            "ingress.sources[3].topic_arns",
        ] {
            assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
        }
        Ok(())
    });
}

#[test]
fn record_attempts_is_a_switch_or_a_choice() {
    Jail::expect_with(|jail| {
        jail.set_env("TEST_MAILPIPE_SECRET", "x");
        let with = |value: &str| Config::from_toml(&format!("{}[relay]\nrecord_attempts = {value}\n", example()));
        let config = Config::from_toml(&example()).map_err(|e| e.to_string())?;
        assert_eq!(config.relay.record_attempts, RecordAttempts::All, "every attempt by default");
        for (value, expected) in [
            ("true", RecordAttempts::All),
            ("\"all\"", RecordAttempts::All),
            ("\"failures\"", RecordAttempts::Failures),
            ("false", RecordAttempts::Off),
            ("\"off\"", RecordAttempts::Off),
        ] {
            assert_eq!(with(value).map_err(|e| e.to_string())?.relay.record_attempts, expected, "{value}");
        }
        let err = with("\"some\"").unwrap_err();
        assert_eq!(err.problems[0].path, "relay.record_attempts", "{err}");
        assert!(err.problems[0].message.contains("\"failures\""), "{err}");
        jail.set_env("HOOKBRIDGE_RELAY__RECORD_ATTEMPTS", "failures");
        assert_eq!(
            Config::from_toml(&example()).map_err(|e| e.to_string())?.relay.record_attempts,
            RecordAttempts::Failures
        );
        jail.set_env("HOOKBRIDGE_RELAY__RECORD_ATTEMPTS", "false");
        assert_eq!(
            Config::from_toml(&example()).map_err(|e| e.to_string())?.relay.record_attempts,
            RecordAttempts::Off
        );
        Ok(())
    });
}
