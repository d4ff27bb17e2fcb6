//! The `hookbridge` CLI: `check`, `keygen`, `send-sample`, `receive`, and
//! the admin verbs against a running process.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use hookbridge_bus::embedded::{EmbeddedBus, EmbeddedOptions};
use hookbridge_testkit::recorder::{Recorder, Reply};
use hookbridge_testkit::{checked, config_toml, keys};

use crate::support::{BIN, Running, cli, send, sigterm, subscriber_toml, write_config, write_config_with};

#[test]
fn check_reports_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[bus]\ntopic_prefix = \"\"\n[[ingress.sources]]\nname = \"x\"\nprovider = \"mailpace\"\n[[ingress.sources]]\nname = \"y\"\nprovider = \"mailpipe\"\nsecrets = [\"env:HOOKBRIDGE_IT_UNSET\"]\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["check", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "bus.topic_prefix",
        "ingress.sources[0].public_keys",
        "ingress.sources[1].secrets[0]",
        "HOOKBRIDGE_IT_UNSET is not set",
        "3 problems",
    ] {
        assert!(stderr.contains(expected), "missing {expected}:\n{stderr}");
    }

    let good = write_config(dir.path());
    let out = Command::new(BIN).args(["check", "--config"]).arg(&good).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("POST /webhooks/mailpace") && !stdout.contains(keys::MAILPIPE_SECRET), "{stdout}");
}

#[test]
fn the_example_configs_are_valid() {
    for example in ["examples/hookbridge.toml", "examples/hookbridge-nats.toml", "examples/hookbridge-kafka.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(example);
        let out = Command::new(BIN).args(["check", "--config"]).arg(path).output().unwrap();
        assert!(out.status.success(), "{example}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Runs `send-sample --source S --url base` with each run's arguments (and
/// one environment variable); every sample must be answered 200.
fn send_samples(base: &str, runs: &[(&str, &[&str])], env: (&str, &str)) {
    for (source, extra) in runs {
        let out = Command::new(BIN)
            .args(["send-sample", "--source", source, "--url", base])
            .args(*extra)
            .env(env.0, env.1)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{source}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.lines().all(|l| l.starts_with("200 ")), "{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_and_send_sample_reach_a_running_hookbridge() {
    let dir = tempfile::tempdir().unwrap();
    let keygen = Command::new(BIN).arg("keygen").output().unwrap();
    let text = String::from_utf8(keygen.stdout).unwrap();
    let value = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} = \""))).unwrap().trim_end_matches('"').to_owned()
    };
    let (private, public) = (value("private_key"), value("public_key"));
    let config = config_toml(&dir.path().join("bus")).replace(&keys::public_key_b64(&keys::mailpace_key()), &public);
    let path = dir.path().join("hookbridge.toml");
    std::fs::write(&path, config).unwrap();
    let mut running = Running::start(&path);
    let base = format!("http://{}", running.webhooks);
    let runs: [(&str, &[&str]); 4] = [
        ("mailpace", &["--key", &private, "--event", "email.bounced"]),
        ("mailpipe", &["--secret", keys::MAILPIPE_SECRET, "--event", "email.sent", "--count", "3"]),
        (
            "whippy-timestamped",
            &[
                "--provider",
                "whippy",
                "--secret",
                keys::WHIPPY_SECRET,
                "--scheme",
                "timestamped",
                "--event",
                "message.created",
            ],
        ),
        ("whippy", &["--secret", "env:HOOKBRIDGE_IT_WHIPPY", "--event", "contact.created"]),
    ];
    send_samples(&base, &runs, ("HOOKBRIDGE_IT_WHIPPY", keys::WHIPPY_SECRET));
    let out = Command::new(BIN)
        .args(["send-sample", "--source", "mailpipe", "--url", &base, "--secret", "wrong", "--event", "email.sent"])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("401 "));

    let ready = reqwest::get(format!("http://{}/readyz", running.admin)).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    sigterm(&running.child);
    let status = tokio::task::spawn_blocking(move || running.child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");

    let bus = EmbeddedBus::open(EmbeddedOptions::new(dir.path().join("bus"))).unwrap();
    let types: Vec<String> =
        bus.read_all().unwrap().iter().map(|e| checked(e)["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        types,
        [
            "email.bounced",
            "email.delivered",
            "email.delivered",
            "email.delivered",
            "message.created",
            "contact.created"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_subscribers_dead_letters_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::spawn().await;
    recorder.answer(Reply::status(503));
    let config =
        write_config_with(dir.path(), &subscriber_toml("billing", &recorder.url(), "retry_schedule = [\"50ms\"]"));
    let running = Running::start(&config);
    let since = Utc::now().to_rfc3339();
    let id = send(&reqwest::Client::new(), &running, 7).await;
    recorder.wait_for(2, Duration::from_secs(10)).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let (ok, out) = cli(&config, running.admin, &["dead-letters", "list", "--subscriber", "billing"]);
        assert!(ok, "{out}");
        if out.contains(&id) {
            break out;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter listed: {out}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(listed.contains("503") && listed.contains("1 dead letter"), "{listed}");

    recorder.answer(Reply::status(200));
    let (ok, out) = cli(&config, running.admin, &["dead-letters", "replay", "--subscriber", "billing"]);
    assert!(ok && out.contains("1 dead letter handed back"), "{out}");
    assert_eq!(recorder.wait_for(3, Duration::from_secs(10)).await[2].event_id(), id);

    let (ok, out) = cli(&config, running.admin, &["replay", "--subscriber", "billing", "--since", &since]);
    assert!(ok && out.contains("1 delivered, 0 failed"), "{out}");
    assert_eq!(recorder.wait_for(4, Duration::from_secs(10)).await[3].event_id(), id);

    let (ok, out) = cli(&config, running.admin, &["subscribers", "disable", "--subscriber", "billing"]);
    assert!(ok && out.contains("disabled by an operator"), "{out}");
    let (ok, out) = cli(&config, running.admin, &["subscribers", "enable", "--subscriber", "billing"]);
    assert!(ok && out.contains("healthy"), "{out}");
    let (ok, out) = cli(&config, running.admin, &["subscribers", "list"]);
    assert!(ok && out.contains("billing") && out.contains("healthy"), "{out}");

    let (ok, out) = cli(&config, running.admin, &["subscribers", "list", "--token", "not-the-token-at-all"]);
    assert!(!ok && out.contains("401"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_verifies_and_prints_what_the_relay_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut receiver = Command::new(BIN)
        .args(["receive", "--listen", "127.0.0.1:0", "--secret", secret])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(receiver.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("receive says where").to_owned();
    let config = write_config_with(dir.path(), &subscriber_toml("printer", &url, &format!("secret = \"{secret}\"")));
    let running = Running::start(&config);
    let id = send(&reqwest::Client::new(), &running, 3).await;
    let mut stdout = BufReader::new(receiver.stdout.take().unwrap());
    let printed = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        line
    });
    let printed = tokio::time::timeout(Duration::from_secs(10), printed).await.expect("a delivery is printed").unwrap();
    let event: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(event["id"], id.as_str());
    hookbridge_testkit::assert_valid_event(&event);
    let _ = receiver.kill();
    let _ = receiver.wait();
}

/// The worked example of docs/provider-definitions.md, as it is written there.
fn acme_definition() -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/provider-definitions.md")).unwrap();
    let after = &doc[doc.find("`providers/acme.toml`:").expect("the worked example")..];
    let start = after.find("```toml\n").unwrap() + "```toml\n".len();
    let end = after[start..].find("```").unwrap();
    after[start..start + end].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_defined_provider_and_the_catalogue_work_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let providers = dir.path().join("providers");
    std::fs::create_dir(&providers).unwrap();
    std::fs::write(providers.join("acme.toml"), acme_definition()).unwrap();
    let keygen = Command::new(BIN).args(["keygen", "--kind", "p256"]).output().unwrap();
    let text = String::from_utf8(keygen.stdout).unwrap();
    let value = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} = \""))).unwrap().trim_end_matches('"').to_owned()
    };
    let (private, public) = (value("private_key"), value("public_key"));
    let config = config_toml(&dir.path().join("bus"))
        .replace("[ingress]\n", &format!("[ingress]\nprovider_dirs = [\"{}\"]\n", providers.display()))
        .replace(&keys::sendgrid_key().1, &public)
        + "[[ingress.sources]]\nname = \"acme\"\nprovider = \"acme\"\nsecrets = [\"acme-secret\"]\n";
    let path = dir.path().join("hookbridge.toml");
    std::fs::write(&path, &config).unwrap();

    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let config_arg = path.to_str().unwrap();
    let (ok, out) = run(&["check", "--config", config_arg]);
    assert!(ok && out.contains("POST /webhooks/acme  provider acme"), "{out}");
    let (ok, out) = run(&["providers", "list", "--config", config_arg]);
    assert!(ok, "{out}");
    for line in ["acme ", "sendgrid ", "mandrill ", "mailpace "] {
        assert!(out.lines().any(|l| l.starts_with(line)), "{line} in\n{out}");
    }
    assert!(out.lines().any(|l| l.starts_with("acme") && l.contains("user")), "{out}");
    let (ok, out) = run(&["providers", "show", "sendgrid"]);
    assert!(
        ok && out.contains("X-Twilio-Email-Event-Webhook-Signature") && out.contains("spamreport -> email.complained"),
        "{out}"
    );
    assert!(out.contains("unconfirmed:"), "{out}");
    let (ok, out) = run(&["providers", "show", "acme", "--config", config_arg]);
    assert!(
        ok && out.contains("HMAC-SHA512 (base64url) of `{timestamp}.{body}`") && out.contains("acme.toml"),
        "{out}"
    );
    let (ok, out) = run(&["providers", "show", "nope"]);
    assert!(!ok && out.contains("unknown provider `nope`"), "{out}");

    // A broken definition: the file and the key path of each problem.
    std::fs::write(providers.join("broken.toml"), "name = \"broken\"\n[[auth]]\ntype = \"hmac\"\nsignature = { header = \"x-sig\" }\nsigned = \"{nonce}\"\n[event]\ntype = \"kind\"\n").unwrap();
    let (ok, out) = run(&["check", "--config", config_arg]);
    assert!(!ok, "{out}");
    for expected in ["broken.toml auth[0].signed", "`{nonce}` is not one of", "broken.toml event.type"] {
        assert!(out.contains(expected), "{expected} in\n{out}");
    }
    std::fs::remove_file(providers.join("broken.toml")).unwrap();

    let sns = hookbridge_testkit::sns::serve().await;
    let mut running = Running::start(&path);
    let base = format!("http://{}", running.webhooks);
    let rsa_key = format!("file:{}", hookbridge_testkit::sns::pki().key_path.display());
    let cert_url = hookbridge_testkit::sns::cert_url();
    let runs: [(&str, &[&str]); 6] = [
        ("acme", &["--secret", "acme-secret", "--event", "mail.bounced", "--config", config_arg]),
        ("sendgrid", &["--key", &private, "--event", "bounce", "--batch", "3"]),
        ("mandrill", &["--secret", keys::CATALOGUE_SECRET, "--webhook-url", keys::MANDRILL_URL, "--event", "open"]),
        (
            "postmark",
            &["--username", keys::BASIC_USERNAME, "--password", "env:IT_POSTMARK_PASSWORD", "--event", "Delivery"],
        ),
        ("resend", &["--secret", keys::CATALOGUE_SECRET, "--event", "email.complained", "--count", "2"]),
        (
            "ses",
            &[
                "--key",
                &rsa_key,
                "--signing-cert-url",
                &cert_url,
                "--topic-arn",
                hookbridge_testkit::sns::TOPIC_ARN,
                "--event",
                "Bounce",
            ],
        ),
    ];
    send_samples(&base, &runs, ("IT_POSTMARK_PASSWORD", keys::BASIC_PASSWORD));
    let out = Command::new(BIN)
        .args(["send-sample", "--source", "acme", "--url", &base, "--secret", "wrong", "--event", "mail.bounced"])
        .args(["--config", config_arg])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("401 "));
    sigterm(&running.child);
    let status = tokio::task::spawn_blocking(move || running.child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");

    let bus = EmbeddedBus::open(EmbeddedOptions::new(dir.path().join("bus"))).unwrap();
    let events: Vec<serde_json::Value> = bus.read_all().unwrap().iter().map(checked).collect();
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|e| (e["provider"].as_str().unwrap().to_owned(), e["type"].as_str().unwrap().to_owned()))
        .collect();
    let count = |p: &str, t: &str| summary.iter().filter(|(a, b)| a == p && b == t).count();
    assert_eq!(count("acme", "email.bounced"), 1, "{summary:?}");
    assert_eq!(count("sendgrid", "email.bounced"), 3, "{summary:?}");
    assert_eq!(count("mandrill", "email.opened"), 1, "{summary:?}");
    assert_eq!(count("postmark", "email.delivered"), 1, "{summary:?}");
    assert_eq!(count("resend", "email.complained"), 2, "{summary:?}");
    assert_eq!(count("ses", "email.bounced"), 1, "{summary:?}");
    assert_eq!(sns.cert_fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
    let acme = events.iter().find(|e| e["provider"] == "acme").unwrap();
    assert_eq!(acme["data"]["bounce"], serde_json::json!({"kind": "soft", "code": null, "message": "mailbox full"}));
    assert!(acme["subject"].as_str().unwrap().ends_with(".sample@acme.example>"), "{acme}");
}
