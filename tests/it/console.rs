//! The web console in a real browser: headless chromium (through
//! playwright-core, `tools/browser/console.mjs`) against the `hookbridge`
//! binary on loopback. Signs in (a wrong token refused), watches a failing
//! subscriber's circuit open, reads a failed attempt's response excerpt,
//! replays a dead letter and sees it delivered, disables and enables a
//! subscriber, is refused an action without its CSRF token, visits every
//! page, follows the live tail and signs out. Every page is saved as a
//! screenshot in `target/console-screenshots/` (the ones in
//! `docs/console/` come from this test).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hookbridge_testkit::recorder::{Recorder, Reply};
use serde_json::Value;

use crate::support::{Running, send_event, subscriber_toml, write_config_with};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_the_console_in_a_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tool = root.join("tools/browser");
    assert!(
        tool.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run scripts/setup (npm ci --prefix tools/browser)"
    );
    let shots = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), std::path::PathBuf::from)
        .join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);

    let (failing, crm) = (Recorder::spawn().await, Recorder::spawn().await);
    // Two failures (500 with a body): dead-lettered, and the circuit opens;
    // then it answers 200.
    failing.script([
        Reply::with_body(500, r#"{"error":"database is down"}"#),
        Reply::with_body(500, r#"{"error":"database is down"}"#),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let subscribers = [
        subscriber_toml(
            "failing",
            &failing.url(),
            "retry_schedule = [\"100ms\"]\ncircuit_failure_threshold = 2\ncircuit_probe_interval = \"4s\"",
        )
        .replace("events = [\"*\"]", "events = [\"email.bounced\"]"),
        subscriber_toml("crm", &crm.url(), "").replace("events = [\"*\"]", "events = [\"email.*\"]"),
    ]
    .concat();
    let config = write_config_with(dir.path(), &format!("[relay]\nstatus_interval = \"1s\"\n{subscribers}"));
    let running = Running::start(&config);
    let base = format!("http://{}", running.admin);

    let mut node = Command::new("node")
        .arg(tool.join("console.mjs"))
        .args([&base, hookbridge_testkit::ADMIN_TOKEN])
        .arg(&shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut stdin = node.stdin.take().unwrap();
    let mut stdout = BufReader::new(node.stdout.take().unwrap());
    let mut ready = String::new();
    tokio::task::block_in_place(|| stdout.read_line(&mut ready)).unwrap();
    assert_eq!(ready.trim(), "ready", "the browser started");
    let failure = shots.join("failure.png");
    let mut step = move |command: &str| -> Value {
        writeln!(stdin, "{command}").unwrap();
        let mut line = String::new();
        tokio::task::block_in_place(|| stdout.read_line(&mut line)).unwrap();
        let name = command.split(' ').next().unwrap();
        let Some(result) = line.trim().strip_prefix(&format!("ok {name} ")) else {
            panic!("the browser step `{command}` failed: {line} (the page is in {})", failure.display());
        };
        serde_json::from_str(result).unwrap()
    };

    assert_eq!(step("login-wrong")["status"], 401);
    let cookie = step("login")["cookie"].as_str().unwrap().to_owned();
    // The admin API takes only the token, never the console's cookie.
    let client = reqwest::Client::new();
    let with_cookie =
        client.get(format!("{base}/admin/subscribers")).header("cookie", &cookie).send().await.unwrap().status();
    assert_eq!(with_cookie, 401, "the admin API refuses the session cookie");

    let bounced = send_event(&client, &running, "email.bounced", 1).await;
    for seq in 2..5 {
        send_event(&client, &running, "email.sent", seq).await;
    }
    failing.wait_for(2, WAIT).await;
    crm.wait_for(4, WAIT).await;
    let circuit = step("circuit");
    assert!(circuit["row"].as_str().unwrap().contains("HTTP 500"), "the last error is shown: {circuit}");
    assert!(step("attempt")["excerpt"].as_str().unwrap().contains("database is down"));
    step("dead-letter-replay");
    // The replayed dead letter reaches the subscriber, now answering 200.
    let requests = failing.wait_for(3, Duration::from_secs(30)).await;
    assert_eq!(requests[2].event_id(), bounced);
    step(&format!("delivered {bounced}"));
    step("overview");

    step("disable-enable");
    let csrf = step("csrf");
    assert_eq!(csrf["statuses"], serde_json::json!([403, 403]), "actions without their CSRF token are refused");
    assert_eq!(csrf["state"], "healthy", "and did nothing");

    // A forged webhook, refused: the sources page counts it.
    let forged = client.post(running.url("mailpipe")).body("{}").send().await.unwrap();
    assert_eq!(forged.status(), 401);
    step("pages");
    step("tail-open");
    let tailed = send_event(&client, &running, "email.opened", 9).await;
    let first = step("tail-wait");
    assert!(first["first"].as_str().unwrap().contains(&tailed), "{first}");
    step("logout");

    drop(step); // closes the browser's stdin: it quits
    let status = tokio::task::block_in_place(|| node.wait()).unwrap();
    assert!(status.success());
    for page in [
        "sign-in",
        "sign-in-refused",
        "overview",
        "subscribers-circuit-open",
        "attempts-failed",
        "dead-letters",
        "attempts-after-replay",
        "event",
        "subscriber-disabled",
        "events",
        "sources",
        "replay-form",
        "replay-done",
        "live-tail",
    ] {
        assert!(shots.join(format!("{page}.png")).is_file(), "no screenshot of {page}");
    }
}
