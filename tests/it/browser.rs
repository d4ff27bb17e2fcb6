//! A real browser: headless chromium opens an `EventSource` on a page
//! served from another origin (CORS), receives events, and after hookbridge
//! is killed with SIGKILL and started again resumes by itself with
//! `Last-Event-ID`: no gap, no duplicate.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::streams::{TOKEN, streams_toml};
use crate::support::{Running, send_event, write_config_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_eventsource_resumes_after_kill_9_with_no_gap_and_no_duplicate() {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/browser");
    assert!(
        tool.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run scripts/setup (npm ci --prefix tools/browser)"
    );
    // The page, from its own origin.
    let page = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", page.local_addr().unwrap());
    let streams_port = hookbridge_brokers::free_port();
    let dir = tempfile::tempdir().unwrap();
    let streams = streams_toml(&format!("127.0.0.1:{streams_port}"), "").replace("http://127.0.0.1:1", &origin);
    let config = write_config_with(dir.path(), &streams);
    let html = format!(
        r#"<!doctype html><title>hookbridge stream</title><script>
window.received = []; window.opened = false;
const es = new EventSource("http://127.0.0.1:{streams_port}/streams/events?types=email.*&access_token={TOKEN}");
es.onopen = () => {{ window.opened = true; }};
for (const type of ["email.delivered", "email.bounced", "resync", "disconnect"]) {{
  es.addEventListener(type, (e) => window.received.push({{ type: e.type, cursor: e.lastEventId, id: JSON.parse(e.data).id }}));
}}
</script>"#
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let html = html.clone();
            async move { axum::response::Html(html) }
        }),
    );
    tokio::spawn(async move { axum::serve(page, app).await.unwrap() });

    let running = Running::start(&config);
    let mut node = Command::new("node")
        .arg(tool.join("eventsource.mjs"))
        .arg(format!("{origin}/"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut stdin = node.stdin.take().unwrap();
    let mut stdout = BufReader::new(node.stdout.take().unwrap());
    let mut line = String::new();
    let mut read_line = move || {
        line.clear();
        stdout.read_line(&mut line).unwrap();
        line.trim().to_owned()
    };
    assert_eq!(tokio::task::block_in_place(&mut read_line), "ready", "the page's EventSource opened");

    let client = reqwest::Client::new();
    let mut sent = Vec::new();
    for seq in 0..3 {
        sent.push(send_event(&client, &running, if seq % 2 == 0 { "email.sent" } else { "email.bounced" }, seq).await);
    }
    writeln!(stdin, "wait 3").unwrap();
    let first: Vec<Value> = serde_json::from_str(&tokio::task::block_in_place(&mut read_line)).unwrap();
    assert_eq!(first.iter().map(|e| e["id"].as_str().unwrap()).collect::<Vec<_>>(), sent);

    drop(running); // SIGKILL; the browser's stream breaks and it retries
    let running = Running::start(&config);
    for seq in 3..6 {
        sent.push(send_event(&client, &running, if seq % 2 == 0 { "email.sent" } else { "email.bounced" }, seq).await);
    }
    writeln!(stdin, "wait 6").unwrap();
    let all: Vec<Value> = serde_json::from_str(&tokio::task::block_in_place(&mut read_line)).unwrap();
    let ids: Vec<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, sent, "every event once, in order, across the restart");
    assert!(all.iter().all(|e| e["type"] == "email.delivered" || e["type"] == "email.bounced"));
    writeln!(stdin, "quit").unwrap();
    drop(stdin);
    let status = tokio::task::block_in_place(|| node.wait()).unwrap();
    assert!(status.success());
}
