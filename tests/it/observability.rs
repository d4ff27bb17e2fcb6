//! The dashboards and alerts are proven against a real Prometheus: it
//! scrapes a running hookbridge that has seen every outcome, then every
//! panel query of the dashboard must return data, every metric the
//! dashboard and the alerts name must be exported, and the alert rules
//! must load and fire.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use hookbridge_testkit::keys;
use hookbridge_testkit::recorder::{Recorder, Reply};
use serde_json::Value;

use crate::support::{Running, subscriber_toml, write_config_with};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool is installed (scripts/setup installs Debian's prometheus)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_are_valid_and_their_unit_tests_pass() {
    let rules = repo("deploy/prometheus/alerts.yml");
    assert!(promtool(&["check", "rules", rules.to_str().unwrap()]).contains("SUCCESS: 10 rules found"));
    let tests = repo("deploy/prometheus/alerts.test.yml");
    assert!(promtool(&["test", "rules", tests.to_str().unwrap()]).contains("SUCCESS"));
}

/// A Prometheus server on a free loopback port, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: hookbridge\n    static_configs:\n      - targets: ['{target}']\n",
                repo("deploy/prometheus/alerts.yml").display()
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (scripts/setup installs Debian's prometheus)");
        Self { child, url: format!("http://127.0.0.1:{port}"), _dir: dir }
    }

    async fn query(&self, client: &reqwest::Client, expr: &str) -> Vec<Value> {
        let answer: Value = client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        answer["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `expr` returns data.
    async fn wait_for(&self, client: &reqwest::Client, expr: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client.get(format!("{}/-/ready", self.url)).send().await.is_ok_and(|r| r.status().is_success());
            if ready && !self.query(client, expr).await.is_empty() {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "Prometheus never returned data for {expr}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `targets[].expr` of the dashboard, as Grafana would run it with
/// every source and subscriber selected.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("deploy/grafana/hookbridge.json")).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "30s")
                .replace("$source", ".*")
                .replace("$subscriber", ".*");
            queries.push((panel["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    queries
}

/// Metric names (`hookbridge_*`, `process_*`) an expression uses.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if (rest.starts_with("hookbridge_") || rest.starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        {
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            i += name.len();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .fold(name.clone(), |n, s| n.strip_suffix(s).map_or(n.clone(), str::to_owned));
            names.insert(base);
        } else {
            i += 1;
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_returns_data_from_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, failing) = (Recorder::spawn().await, Recorder::spawn().await);
    failing.answer(Reply::status(400));
    let extra = format!(
        "[relay]\nstatus_interval = \"1s\"\n{}{}",
        subscriber_toml("ok", &ok.url(), ""),
        subscriber_toml("failing", &failing.url(), "")
    );
    let config = write_config_with(dir.path(), &extra);
    let running = Running::start(&config);
    let prometheus = Prometheus::start(running.admin);
    let client = reqwest::Client::new();
    prometheus.wait_for(&client, "count_over_time(up{job=\"hookbridge\"}[1m]) >= 3").await;

    // Traffic that exercises every outcome, after scraping began, so that
    // rates and increases see it.
    let now = Utc::now();
    for (n, (source, signer)) in keys::sources().into_iter().enumerate() {
        for event in keys::events(signer.provider()).iter().take(2) {
            let (body, (name, sig)) = keys::signed(&signer, event, n as u64 * 10, now);
            for _ in 0..2 {
                // The second one is a duplicate.
                client.post(running.url(source)).header(name, sig.clone()).body(body.clone()).send().await.unwrap();
            }
        }
        let (body, (name, _)) = keys::signed(&signer, "email.sent", 99, now);
        client.post(running.url(source)).header(name, "AAAA").body(body.clone()).send().await.unwrap();
        client.post(running.url(source)).body(body).send().await.unwrap();
        let garbage = b"not json".to_vec();
        let header = signer.header(&garbage, now);
        client.post(running.url(source)).header(header.0, header.1).body(garbage).send().await.unwrap();
    }
    client.post(running.url("no-such-source")).body("{}").send().await.unwrap();
    client.post(running.url("mailpipe")).body(vec![b'x'; 70_000]).send().await.unwrap();
    ok.wait_for(1, Duration::from_secs(10)).await;
    failing.wait_for(1, Duration::from_secs(10)).await;
    let replay = running
        .admin_json(
            &client,
            reqwest::Method::POST,
            "/admin/subscribers/ok/replay",
            Some(serde_json::json!({ "since": now - chrono::Duration::minutes(1) })),
        )
        .await;
    assert!(replay["id"].is_string(), "{replay}");
    prometheus.wait_for(&client, "hookbridge_relay_dead_letters{subscriber=\"failing\"} > 0").await;
    prometheus.wait_for(&client, "increase(hookbridge_relay_replay_events_total{outcome=\"delivered\"}[1m]) > 0").await;
    prometheus.wait_for(&client, "count_over_time(hookbridge_relay_dead_letters[1m]) >= 3").await;

    // Every panel query returns data.
    let mut empty = Vec::new();
    let queries = dashboard_queries();
    assert!(queries.len() >= 25, "the dashboard has {} queries", queries.len());
    for (title, expr) in &queries {
        if prometheus.query(&client, expr).await.is_empty() {
            empty.push(format!("{title}: {expr}"));
        }
    }
    assert!(empty.is_empty(), "panel queries without data:\n{}", empty.join("\n"));

    // Every metric the dashboard and the alerts use is exported.
    let exported = client.get(format!("http://{}/metrics", running.admin)).send().await.unwrap().text().await.unwrap();
    let alerts = std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap();
    let used: BTreeSet<String> =
        queries.iter().flat_map(|(_, e)| metric_names(e)).chain(metric_names(&alerts)).collect();
    assert!(used.len() >= 15, "{used:?}");
    let missing: Vec<&String> = used.iter().filter(|name| !exported.contains(&format!("# TYPE {name} "))).collect();
    assert!(missing.is_empty(), "used but not exported: {missing:?}");

    // Every exported hookbridge metric is documented.
    let documented = std::fs::read_to_string(repo("docs/metrics.md")).unwrap();
    let undocumented: Vec<&str> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with("hookbridge_") && !documented.contains(&format!("`{name}`")))
        .collect();
    assert!(undocumented.is_empty(), "exported but not in docs/metrics.md: {undocumented:?}");

    // The rules load in Prometheus, and the dead letter fires its alert.
    let rules: Value =
        client.get(format!("{}/api/v1/rules", prometheus.url)).send().await.unwrap().json().await.unwrap();
    let loaded: Vec<&Value> =
        rules["data"]["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
    assert_eq!(loaded.len(), 10);
    assert!(loaded.iter().all(|r| r["health"] == "ok"), "{rules}");
    prometheus
        .wait_for(&client, "ALERTS{alertname=\"HookbridgeDeadLetters\", subscriber=\"failing\", alertstate=\"firing\"}")
        .await;
}
