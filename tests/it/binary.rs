//! The `hookbridge` binary: `check`, `keygen`, `send-sample`, graceful
//! shutdown, and `kill -9` during publishing losing nothing acknowledged.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use hookbridge_bus::embedded::{EmbeddedBus, EmbeddedOptions};
use hookbridge_testkit::{checked, config_toml, keys};

const BIN: &str = env!("CARGO_BIN_EXE_hookbridge");

/// A running `hookbridge run` and the addresses it bound.
struct Running {
    child: Child,
    webhooks: SocketAddr,
    admin: SocketAddr,
}

impl Running {
    fn start(config: &Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hookbridge starts");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let field = |name: &str| {
                    line.split_whitespace().find_map(|f| f.strip_prefix(name)).map(|a| a.parse::<SocketAddr>().unwrap())
                };
                if line.contains("hookbridge listening") {
                    let _ = tx.send((field("webhooks=").unwrap(), field("admin=").unwrap()));
                }
            }
        });
        let (webhooks, admin) = rx.recv_timeout(Duration::from_secs(30)).expect("hookbridge reports its addresses");
        Self { child, webhooks, admin }
    }

    fn url(&self, source: &str) -> String {
        format!("http://{}/webhooks/{source}", self.webhooks)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("hookbridge.toml");
    std::fs::write(&path, config_toml(&dir.join("bus"))).unwrap();
    path
}

fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

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
fn the_example_config_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hookbridge.toml");
    let out = Command::new(BIN).args(["check", "--config"]).arg(example).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
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
    for (source, extra) in runs {
        let out = Command::new(BIN)
            .args(["send-sample", "--source", source, "--url", &base])
            .args(extra)
            .env("HOOKBRIDGE_IT_WHIPPY", keys::WHIPPY_SECRET)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{source}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.lines().all(|l| l.starts_with("200 ")), "{stdout}");
    }
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
async fn kill_9_during_publishing_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let running = Running::start(&config);
    let url = running.url("mailpipe");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (client, url, acked, stop, seq) =
                (client.clone(), url.clone(), acked.clone(), stop.clone(), seq.clone());
            tokio::spawn(async move {
                let signer = keys::signer("mailpipe");
                let mut failures = 0;
                while !stop.load(Ordering::Relaxed) && failures < 3 {
                    let (body, (name, sig)) =
                        keys::signed(&signer, "email.sent", seq.fetch_add(1, Ordering::Relaxed), Utc::now());
                    match client.post(&url).header(name, sig).body(body).send().await {
                        Ok(r) if r.status().as_u16() == 200 => {
                            let answer: serde_json::Value = r.json().await.unwrap();
                            acked.lock().unwrap().push(answer["id"].as_str().unwrap().to_owned());
                        }
                        _ => failures += 1,
                    }
                }
            })
        })
        .collect();
    // Kill once a good number of publishes has been acknowledged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 500 {
        assert!(tokio::time::Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut running = running;
    running.child.kill().unwrap(); // SIGKILL
    running.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    let sent = seq.load(Ordering::Relaxed) as usize;

    let bus = EmbeddedBus::open(EmbeddedOptions::new(dir.path().join("bus"))).unwrap();
    let stored: HashSet<String> = bus.read_all().unwrap().into_iter().map(|e| e.id).collect();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged events lost: {lost:?}", lost.len(), acked.len());
    assert!(stored.len() <= sent);
    drop(bus);

    // The log reopens under the binary, and an acknowledged event is still a duplicate.
    let running = Running::start(&config);
    let any = acked.iter().next().unwrap().clone();
    let n: u64 = u64::from_str_radix(any.trim_start_matches("evt_"), 16).unwrap();
    let (body, (name, sig)) = keys::signed(&keys::signer("mailpipe"), "email.sent", n, Utc::now());
    let answer: serde_json::Value =
        client.post(running.url("mailpipe")).header(name, sig).body(body).send().await.unwrap().json().await.unwrap();
    assert_eq!((answer["status"].as_str(), answer["id"].as_str()), (Some("duplicate"), Some(any.as_str())));
}
