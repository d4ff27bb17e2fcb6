//! The delivery record end to end: every attempt of the relay, with the
//! subscriber's answer, read back through the admin API and the CLI, on the
//! test's bus (`HB_TEST_BACKEND`).

use std::process::Command;
use std::time::Duration;

use hookbridge_testkit::recorder::{Recorder, Reply};
use hookbridge_testkit::{ADMIN_TOKEN, TestApp};
use reqwest::Method;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
use crate::support::BIN;

fn subscriber(name: &str, recorder: &Recorder, events: &str) -> String {
    format!(
        "[[relay.subscribers]]\nname = \"{name}\"\nurl = \"{}\"\nevents = {events}\nretry_schedule = [\"100ms\", \"200ms\", \"200ms\"]\n",
        recorder.url()
    )
}

/// Polls the admin API until `path` answers a list of `n` items.
async fn wait_for_list(app: &TestApp, path: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = app.admin(Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        let list = body.as_array().cloned().unwrap_or_default();
        if list.len() >= n {
            return list;
        }
        assert!(tokio::time::Instant::now() < deadline, "{path}: {} of {n} within {WAIT:?}: {body}", list.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_is_recorded_with_the_subscribers_answer() {
    let (flaky, fine, messages) = (Recorder::spawn().await, Recorder::spawn().await, Recorder::spawn().await);
    let app = TestApp::spawn_relay(
        &[
            subscriber("flaky", &flaky, r#"["email.*"]"#),
            subscriber("fine", &fine, r#"["email.bounced"]"#),
            subscriber("messages", &messages, r#"["message.*"]"#),
        ]
        .concat(),
    )
    .await;
    let long = "database is down; ".repeat(200);
    flaky.script([
        Reply::with_body(500, r#"{"error":"database is down"}"#),
        Reply::with_body(503, &long),
        Reply::status(204),
    ]);
    let id = app.send("mailpipe", "email.bounced", 1).await;
    flaky.wait_for(3, WAIT).await;
    fine.wait_for(1, WAIT).await;

    let path = "/admin/subscribers/flaky/attempts";
    let attempts = wait_for_list(&app, path, 3).await;
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    let field = |i: usize, key: &str| attempts[i][key].clone();
    // Newest first.
    assert_eq!(
        (field(0, "attempt"), field(0, "outcome"), field(0, "status")),
        (3.into(), "delivered".into(), 204.into())
    );
    assert_eq!(
        (field(1, "attempt"), field(1, "outcome"), field(1, "status")),
        (2.into(), "retry_scheduled".into(), 503.into())
    );
    assert_eq!(
        (field(2, "attempt"), field(2, "outcome"), field(2, "status")),
        (1.into(), "retry_scheduled".into(), 500.into())
    );
    assert_eq!(field(2, "response"), r#"{"error":"database is down"}"#, "the response excerpt");
    let excerpt = field(1, "response");
    assert_eq!(excerpt.as_str().unwrap().len(), 1024, "the first 1 KiB of a long body");
    assert!(long.starts_with(excerpt.as_str().unwrap()));
    for a in &attempts {
        assert_eq!(a["event_id"], id.as_str());
        assert_eq!(a["event_type"], "email.bounced");
        assert_eq!(a["subscriber"], "flaky");
        assert!(a["latency_ms"].as_f64().unwrap() >= 0.0);
    }
    assert!(field(2, "next_attempt_at").is_string(), "a retry's time is kept");
    assert!(field(0, "next_attempt_at").is_null());

    // Filters.
    let count = |body: &Value| body.as_array().map_or(0, Vec::len);
    for (query, expected) in [
        ("status=failed", 2),
        ("status=5xx", 2),
        ("status=500", 1),
        ("status=delivered", 1),
        ("status=4xx", 0),
        ("limit=1", 1),
        (&format!("event={id}") as &str, 3),
        ("event=nothing-like-it", 0),
        ("since=2999-01-01T00:00:00Z", 0),
    ] {
        let (status, body) = app.admin(Method::GET, &format!("{path}?{query}"), None).await;
        assert_eq!((status, count(&body)), (200, expected), "{query}: {body}");
    }
    let (status, body) = app.admin(Method::GET, &format!("{path}?status=bogus"), None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid")), "{body}");
    let (status, body) = app.admin(Method::GET, &format!("{path}?since=yesterday"), None).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = app.admin(Method::GET, "/admin/subscribers/nobody/attempts", None).await;
    assert_eq!(status, 404);
    let unauthorized = app.client.get(format!("http://{}{path}", app.admin_addr)).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401, "the token is required");

    // The event and its fate at every subscriber.
    wait_for_list(&app, "/admin/subscribers/fine/attempts", 1).await;
    let (status, view) = app.admin(Method::GET, &format!("/admin/events/{id}"), None).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["event"]["id"], id.as_str(), "the CloudEvent, read from the bus: {view}");
    assert_eq!(view["type"], "email.bounced");
    let fates: Vec<(String, String, u64)> = view["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["subscriber"].as_str().unwrap().to_owned(),
                s["fate"].as_str().unwrap().to_owned(),
                s["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        fates,
        [
            ("flaky".into(), "delivered".into(), 3),
            ("fine".into(), "delivered".into(), 1),
            ("messages".into(), "not_subscribed".into(), 0)
        ]
    );
    assert_eq!(view["attempts"].as_array().unwrap().len(), 4);
    let (status, body) = app.admin(Method::GET, "/admin/events/no-such-event", None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "{body}");

    // The CLI reads the same record.
    let out = Command::new(BIN)
        .args(["attempts", "list", "--subscriber", "flaky", "--status", "failed", "--responses"])
        .args(["--admin-url", &format!("http://{}", app.admin_addr), "--token", ADMIN_TOKEN])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&id) && stdout.contains("retry_scheduled"), "{stdout}");
    assert!(stdout.contains(" 500 ") && stdout.contains(" 503 "), "{stdout}");
    assert!(stdout.contains(r#"response: {"error":"database is down"}"#), "{stdout}");
    assert!(stdout.contains("2 attempts"), "{stdout}");
    assert!(!stdout.contains("delivered"), "only failed ones: {stdout}");
}

/// An attempt that got no answer keeps why; a dead letter's last attempt
/// says so; a replay's attempts name the replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_without_an_answer_and_dead_letters_are_recorded() {
    let down = hookbridge_brokers::free_port();
    let config = format!(
        "[[relay.subscribers]]\nname = \"down\"\nurl = \"http://127.0.0.1:{down}/hooks\"\nevents = [\"*\"]\nretry_schedule = [\"100ms\"]\n"
    );
    let app = TestApp::spawn_relay(&config).await;
    let id = app.send("mailpace", "email.delivered", 7).await;
    let attempts = wait_for_list(&app, "/admin/subscribers/down/attempts", 2).await;
    assert_eq!(attempts[0]["outcome"], "dead_lettered", "{attempts:?}");
    assert_eq!(attempts[1]["outcome"], "retry_scheduled");
    for a in &attempts {
        assert!(a["status"].is_null());
        assert!(a["error"].as_str().unwrap().starts_with("connection failed"), "{a}");
        assert_eq!(a["event_id"], id.as_str());
    }
    let (_, view) = app.admin(Method::GET, &format!("/admin/events/{id}"), None).await;
    assert_eq!(view["subscribers"][0]["fate"], "dead_lettered", "{view}");
}

/// With `record_attempts = "failures"`, a first attempt that delivered is
/// not recorded; every attempt at an event that failed is, up to how it
/// ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_failures_and_how_they_ended_are_recorded_when_asked() {
    let (fine, flaky) = (Recorder::spawn().await, Recorder::spawn().await);
    let config = format!(
        "[relay]\nrecord_attempts = \"failures\"\n{}{}",
        subscriber("fine", &fine, r#"["email.*"]"#),
        subscriber("flaky", &flaky, r#"["email.*"]"#)
    );
    let app = TestApp::spawn_relay(&config).await;
    flaky.script([Reply::status(500), Reply::status(503)]);
    let failed = app.send("mailpipe", "email.bounced", 1).await;
    fine.wait_for(1, WAIT).await;
    flaky.wait_for(3, WAIT).await;
    // A second event both take at the first attempt.
    let fine_at_once = app.send("mailpipe", "email.bounced", 2).await;
    fine.wait_for(2, WAIT).await;
    flaky.wait_for(4, WAIT).await;
    // And a third that fails once more at `flaky`, made after the others:
    // once its attempts are readable, so would theirs be.
    flaky.script([Reply::status(502)]);
    let last = app.send("mailpipe", "email.bounced", 3).await;
    flaky.wait_for(6, WAIT).await;

    let attempts = wait_for_list(&app, "/admin/subscribers/flaky/attempts", 5).await;
    let seen: Vec<(String, u64, String)> = attempts
        .iter()
        .map(|a| {
            (
                a["event_id"].as_str().unwrap().to_owned(),
                a["attempt"].as_u64().unwrap(),
                a["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (last.clone(), 2, "delivered".into()),
            (last, 1, "retry_scheduled".into()),
            (failed.clone(), 3, "delivered".into()),
            (failed.clone(), 2, "retry_scheduled".into()),
            (failed.clone(), 1, "retry_scheduled".into()),
        ],
        "the second event, delivered at once, is not recorded"
    );
    let (status, body) = app.admin(Method::GET, "/admin/subscribers/fine/attempts", None).await;
    assert_eq!((status, body.as_array().map(Vec::len)), (200, Some(0)), "fine never failed: {body}");

    let (status, view) = app.admin(Method::GET, &format!("/admin/events/{failed}"), None).await;
    assert_eq!(status, 200, "{view}");
    let fate = |name: &str| {
        let s = view["subscribers"].as_array().unwrap().iter().find(|s| s["subscriber"] == name).unwrap().clone();
        (s["fate"].as_str().unwrap().to_owned(), s["attempts"].as_u64().unwrap())
    };
    assert_eq!(fate("flaky"), ("delivered".into(), 3));
    assert_eq!(fate("fine"), ("no_failure_recorded".into(), 0), "{view}");
    let (status, _) = app.admin(Method::GET, &format!("/admin/events/{fine_at_once}"), None).await;
    assert_eq!(status, 404, "an event with no recorded attempt is not found through the record");
}
