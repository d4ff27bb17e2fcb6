//! The relay end to end: provider webhook in, signed CloudEvent out to real
//! recording subscribers on loopback, with retries, dead letters, replay and
//! endpoint health.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hookbridge_testkit::recorder::{Recorder, Reply};
use hookbridge_testkit::{TestApp, assert_valid_event};
use reqwest::Method;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);
const HMAC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn subscriber(name: &str, recorder: &Recorder, events: &str, extra: &str) -> String {
    format!(
        "[[relay.subscribers]]\nname = \"{name}\"\nurl = \"{}\"\nevents = {events}\nretry_schedule = [\"100ms\", \"200ms\"]\n{extra}\n",
        recorder.url()
    )
}

/// Asserts nothing more arrives at `recorder` for a while.
async fn assert_no_more(recorder: &Recorder, expected: usize) {
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(recorder.requests().len(), expected, "unexpected extra deliveries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_fan_out_to_every_matching_subscriber() {
    let (bounces, messages, mailpipe) = (Recorder::spawn().await, Recorder::spawn().await, Recorder::spawn().await);
    let app = TestApp::spawn_relay(
        &[
            subscriber("bounces", &bounces, r#"["email.bounced"]"#, ""),
            subscriber("messages", &messages, r#"["message.*"]"#, ""),
            subscriber("mailpipe-all", &mailpipe, r#"["*"]"#, "providers = [\"mailpipe\"]"),
        ]
        .concat(),
    )
    .await;
    let ids = [
        app.send("mailpace", "email.bounced", 1).await,
        app.send("mailpipe", "email.bounced", 2).await,
        app.send("whippy", "message.created", 3).await,
        app.send("mailpace", "email.queued", 4).await,
    ];
    let got = bounces.wait_for(2, WAIT).await;
    let mut got_ids: Vec<String> = got.iter().map(|r| r.event_id()).collect();
    got_ids.sort();
    let mut want = vec![ids[0].clone(), ids[1].clone()];
    want.sort();
    assert_eq!(got_ids, want);
    assert_eq!(messages.wait_for(1, WAIT).await[0].event_id(), ids[2]);
    assert_eq!(mailpipe.wait_for(1, WAIT).await[0].event_id(), ids[1]);
    for delivery in got {
        assert_eq!(delivery.header("content-type"), "application/cloudevents+json");
        assert_eq!(delivery.header("webhook-id"), delivery.event_id());
        assert!(delivery.header("user-agent").starts_with("hookbridge/"));
        assert!(delivery.header("webhook-signature").is_empty(), "no secret, no signature");
        assert_valid_event(&delivery.json());
    }
    assert_no_more(&bounces, 2).await;
    assert_no_more(&messages, 1).await;
    assert_no_more(&mailpipe, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_with_independent_implementations() {
    let recorder = Recorder::spawn().await;
    let seed = [9u8; 32];
    let ed_secret = format!("whsk_{}", STANDARD.encode(seed));
    let extra = format!(
        "secret = [\"{HMAC_SECRET}\", \"{ed_secret}\"]\nheaders = {{ \"Authorization\" = \"Bearer sub-token\" }}"
    );
    let app = TestApp::spawn_relay(&subscriber("signed", &recorder, r#"["*"]"#, &extra)).await;
    app.send("mailpipe", "email.sent", 1).await;
    let delivery = recorder.wait_for(1, WAIT).await.remove(0);
    assert_eq!(delivery.header("authorization"), "Bearer sub-token");

    // v1: the Standard Webhooks reference library.
    let webhook = standardwebhooks::Webhook::new(HMAC_SECRET).unwrap();
    webhook.verify(&delivery.body, &delivery.headers).expect("v1 signature verifies");
    let mut tampered = delivery.body.to_vec();
    tampered[10] ^= 1;
    assert!(webhook.verify(&tampered, &delivery.headers).is_err());

    // v1a: ring's Ed25519, over `id.timestamp.body`.
    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    let signed = [
        delivery.header("webhook-id").as_bytes(),
        b".",
        delivery.header("webhook-timestamp").as_bytes(),
        b".",
        &delivery.body,
    ]
    .concat();
    let v1a =
        delivery.header("webhook-signature").split(' ').find_map(|s| s.strip_prefix("v1a,")).expect("a v1a signature");
    let v1a = STANDARD.decode(v1a).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public)
        .verify(&signed, &v1a)
        .expect("v1a verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_fails_then_succeeds_gets_the_event_with_one_webhook_id() {
    let recorder = Recorder::spawn().await;
    recorder.script([Reply::status(503), Reply::status(500)]);
    let app = TestApp::spawn_relay(&subscriber("flaky", &recorder, r#"["*"]"#, "")).await;
    let id = app.send("mailpace", "email.delivered", 1).await;
    let requests = recorder.wait_for(3, WAIT).await;
    assert!(requests.iter().all(|r| r.header("webhook-id") == id), "same webhook-id on every attempt");
    assert!(requests[1].at - requests[0].at >= Duration::from_millis(90), "retried after the schedule's delay");
    assert_no_more(&recorder, 3).await;
    let (_, subs) = app.admin(Method::GET, "/admin/subscribers", None).await;
    assert_eq!(subs[0]["dead_letters"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_always_failing_subscriber_dead_letters_and_replays_after_recovery() {
    let recorder = Recorder::spawn().await;
    recorder.answer(Reply::status(503));
    let app = TestApp::spawn_relay(&subscriber("down", &recorder, r#"["*"]"#, "")).await;
    let id = app.send("mailpipe", "email.bounced", 1).await;
    recorder.wait_for(3, WAIT).await;
    // Dead-lettered after the last of 3 attempts.
    let letters = wait_dead_letters(&app, "down", 1).await;
    assert_eq!(
        (letters[0]["event_id"].as_str(), letters[0]["attempts"].as_u64(), letters[0]["last_status"].as_u64()),
        (Some(id.as_str()), Some(3), Some(503))
    );
    assert_no_more(&recorder, 3).await;

    recorder.answer(Reply::status(200));
    let (status, count) = app.admin(Method::POST, "/admin/subscribers/down/dead-letters/replay", Some(json!({}))).await;
    assert_eq!((status, count["count"].as_u64()), (200, Some(1)));
    let requests = recorder.wait_for(4, WAIT).await;
    assert_eq!(requests[3].event_id(), id);
    assert_no_more(&recorder, 4).await;
    assert!(wait_dead_letters(&app, "down", 0).await.is_empty());
}

pub(crate) async fn wait_dead_letters(app: &TestApp, subscriber: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, letters) =
            app.admin(Method::GET, &format!("/admin/subscribers/{subscriber}/dead-letters"), None).await;
        assert_eq!(status, 200, "{letters}");
        let letters = letters.as_array().unwrap().clone();
        if letters.len() == n {
            return letters;
        }
        assert!(tokio::time::Instant::now() < deadline, "expected {n} dead letters, have {}", letters.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_dead_letter_at_once_and_discard_works() {
    let recorder = Recorder::spawn().await;
    recorder.answer(Reply::status(400));
    let app = TestApp::spawn_relay(&subscriber("strict", &recorder, r#"["*"]"#, "")).await;
    app.send("whippy", "message.created", 1).await;
    let letters = wait_dead_letters(&app, "strict", 1).await;
    assert_eq!((letters[0]["attempts"].as_u64(), letters[0]["last_status"].as_u64()), (Some(1), Some(400)));
    assert_no_more(&recorder, 1).await;
    let (_, count) = app
        .admin(Method::POST, "/admin/subscribers/strict/dead-letters/discard", Some(json!({ "id": letters[0]["id"] })))
        .await;
    assert_eq!(count["count"], 1);
    assert!(wait_dead_letters(&app, "strict", 0).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let recorder = Recorder::spawn().await;
    recorder.script([Reply { retry_after: Some("1".into()), ..Reply::status(429) }]);
    let app = TestApp::spawn_relay(&subscriber("limited", &recorder, r#"["*"]"#, "")).await;
    app.send("mailpace", "email.queued", 1).await;
    let requests = recorder.wait_for(2, WAIT).await;
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= Duration::from_millis(950), "retried after {waited:?}, before Retry-After: 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_subscriber_until_it_is_enabled() {
    let recorder = Recorder::spawn().await;
    recorder.script([Reply::status(410)]);
    let app = TestApp::spawn_relay(&subscriber("retired", &recorder, r#"["*"]"#, "")).await;
    let first = app.send("mailpace", "email.queued", 1).await;
    recorder.wait_for(1, WAIT).await;
    wait_dead_letters(&app, "retired", 1).await;
    wait_state(&app, "disabled").await;
    let (_, subs) = app.admin(Method::GET, "/admin/subscribers", None).await;
    assert!(subs[0]["disabled"]["reason"].as_str().unwrap().contains("410"));

    let second = app.send("mailpace", "email.queued", 2).await;
    assert_no_more(&recorder, 1).await;
    let (status, sub) = app.admin(Method::POST, "/admin/subscribers/retired/enable", None).await;
    assert_eq!((status, sub["state"].as_str()), (200, Some("healthy")));
    let requests = recorder.wait_for(2, WAIT).await;
    assert_eq!(requests[1].event_id(), second, "the event held while disabled is delivered");
    assert_ne!(first, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_since_a_time_delivers_exactly_the_window() {
    let recorder = Recorder::spawn().await;
    let app = TestApp::spawn_relay(&subscriber("replayed", &recorder, r#"["email.*"]"#, "")).await;
    app.send("mailpipe", "email.sent", 1).await;
    recorder.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut window = vec![app.send("mailpipe", "email.sent", 2).await, app.send("mailpace", "email.bounced", 3).await];
    app.send("whippy", "message.created", 4).await; // not the subscriber's type
    recorder.wait_for(3, WAIT).await;

    let (status, started) =
        app.admin(Method::POST, "/admin/subscribers/replayed/replay", Some(json!({ "since": since }))).await;
    assert_eq!(status, 200, "{started}");
    assert!(started["total"] == 2 || started["total"].is_null(), "an estimate where the bus can tell: {started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + WAIT;
    let progress = loop {
        let (_, progress) = app.admin(Method::GET, &format!("/admin/replays/{id}"), None).await;
        if progress["done"] == true {
            break progress;
        }
        assert!(tokio::time::Instant::now() < deadline, "replay did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((progress["delivered"].as_u64(), progress["failed"].as_u64()), (Some(2), Some(0)), "{progress}");
    if started["total"] == 2 {
        // Done once the counted window is read, not after a second of quiet.
        let at = |field: &str| progress[field].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        let took = at("finished_at") - at("started_at");
        assert!(took < chrono::Duration::milliseconds(900), "the replay waited {took} after its window");
    }
    let mut replayed: Vec<String> = recorder.requests()[3..].iter().map(|r| r.event_id()).collect();
    replayed.sort();
    window.sort();
    assert_eq!(replayed, window);
    assert_no_more(&recorder, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_does_not_slow_a_fast_one() {
    let (slow, fast) = (Recorder::spawn().await, Recorder::spawn().await);
    slow.answer(Reply { delay: Duration::from_secs(8), ..Reply::status(200) });
    let app = TestApp::spawn_relay(
        &[
            subscriber("slow", &slow, r#"["*"]"#, "max_in_flight = 1\ntimeout = \"20s\""),
            subscriber("fast", &fast, r#"["*"]"#, ""),
        ]
        .concat(),
    )
    .await;
    let started = tokio::time::Instant::now();
    for n in 0..20 {
        app.send("mailpipe", "email.sent", n).await;
    }
    fast.wait_for(20, WAIT).await;
    assert!(started.elapsed() < Duration::from_secs(8), "fast waited {:?}", started.elapsed());
    // The slow one's first delivery may arrive after the fast one is done
    // (its consumer starts on its own); it answers only after 8s.
    slow.wait_for(1, WAIT).await;
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(slow.requests().len(), 1, "the slow one is still on its first event");
}

/// `max_in_flight` bounds the requests a subscriber has open at once, and
/// the relay reaches it: a slot is freed when the endpoint answers, not
/// before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_bounds_the_requests_open_at_once() {
    let recorder = Recorder::spawn().await;
    recorder.answer(Reply { delay: Duration::from_millis(300), ..Reply::status(200) });
    let app = TestApp::spawn_relay(&subscriber("bounded", &recorder, r#"["*"]"#, "max_in_flight = 3")).await;
    for n in 0..15 {
        app.send("mailpipe", "email.sent", n).await;
    }
    recorder.wait_for(15, WAIT).await;
    assert_eq!(recorder.peak_in_flight(), 3, "requests open at once, with max_in_flight = 3");
    assert_no_more(&recorder, 15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_and_a_probe_closes_it() {
    let recorder = Recorder::spawn().await;
    recorder.answer(Reply::status(503));
    let extra = "retry_schedule = [\"50ms\", \"50ms\", \"50ms\", \"50ms\", \"50ms\", \"50ms\"]\ncircuit_failure_threshold = 3\ncircuit_probe_interval = \"2s\"\nmax_in_flight = 1";
    let app = TestApp::spawn_relay(&format!(
        "[[relay.subscribers]]\nname = \"flaky\"\nurl = \"{}\"\nevents = [\"*\"]\n{extra}\n",
        recorder.url()
    ))
    .await;
    app.send("mailpace", "email.queued", 1).await;
    let opened_by = recorder.wait_for(3, WAIT).await[2].at;
    wait_state(&app, "circuit_open").await;
    // Paused: no attempts until the probe interval (2 s) has passed since
    // the failure that opened it, however late the state was seen.
    tokio::time::sleep_until(opened_by + Duration::from_millis(1500)).await;
    assert_eq!(recorder.requests().len(), 3, "no hammering while open");
    recorder.answer(Reply::status(200));
    let requests = recorder.wait_for(4, WAIT).await;
    assert!(requests[3].at - requests[2].at >= Duration::from_millis(1800), "the probe waited for its interval");
    wait_state(&app, "healthy").await;
}

/// An event the subscriber filters out never counts as the probe's answer:
/// while the endpoint keeps failing, the circuit stays open however many
/// filtered events pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_event_does_not_close_the_circuit() {
    let recorder = Recorder::spawn().await;
    recorder.answer(Reply::status(503));
    let extra = "providers = [\"mailpace\"]\nretry_schedule = [\"50ms\", \"50ms\", \"50ms\", \"50ms\", \"50ms\", \"50ms\", \"50ms\", \"50ms\"]\ncircuit_failure_threshold = 3\ncircuit_probe_interval = \"700ms\"\nmax_in_flight = 1";
    let app = TestApp::spawn_relay(&format!(
        "[[relay.subscribers]]\nname = \"mailpace-only\"\nurl = \"{}\"\nevents = [\"*\"]\n{extra}\n",
        recorder.url()
    ))
    .await;
    app.send("mailpace", "email.queued", 1).await;
    recorder.wait_for(3, WAIT).await;
    wait_state(&app, "circuit_open").await;
    for seq in 2..5 {
        app.send("mailpipe", "email.sent", seq).await;
    }
    // Several probe intervals: each probe goes to the failing endpoint.
    let until = tokio::time::Instant::now() + Duration::from_millis(3000);
    while tokio::time::Instant::now() < until {
        let (_, subs) = app.admin(Method::GET, "/admin/subscribers", None).await;
        assert_ne!(subs[0]["state"], "healthy", "the circuit closed without the endpoint answering 2xx");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requests = recorder.requests();
    assert!(requests.len() >= 4, "probes reached the endpoint: {}", requests.len());
    assert!(requests.iter().all(|r| r.json()["provider"] == "mailpace"), "a filtered event was delivered");
}

/// Waits until the first subscriber is in `state`.
async fn wait_state(app: &TestApp, state: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, subs) = app.admin(Method::GET, "/admin/subscribers", None).await;
        if subs[0]["state"] == state {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "not {state}: {subs}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_admin_api_needs_the_token() {
    let recorder = Recorder::spawn().await;
    let app = TestApp::spawn_relay(&subscriber("any", &recorder, r#"["*"]"#, "")).await;
    let url = format!("http://{}/admin/subscribers", app.admin_addr);
    assert_eq!(app.client.get(&url).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(app.client.get(&url).bearer_auth("wrong").send().await.unwrap().status().as_u16(), 401);
    let (status, _) = app.admin(Method::GET, "/admin/subscribers", None).await;
    assert_eq!(status, 200);
    let (status, body) = app.admin(Method::GET, "/admin/subscribers/nobody/dead-letters", None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_continues_from_the_provider_through_the_bus_to_the_subscriber() {
    let recorder = Recorder::spawn().await;
    let app = TestApp::spawn_relay(&subscriber("traced", &recorder, r#"["*"]"#, "")).await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (body, header) = hookbridge_testkit::keys::signed(
        &hookbridge_testkit::keys::signer("mailpipe"),
        "email.sent",
        1,
        chrono::Utc::now(),
    );
    let (status, _) = app.post("mailpipe", body, &[header, ("traceparent", incoming.to_owned())]).await;
    assert_eq!(status, 200);
    // Without a traceparent the ingress starts a trace of its own.
    app.send("mailpipe", "email.sent", 2).await;
    let requests = recorder.wait_for(2, WAIT).await;
    let trace_of = |tp: &str| tp.split('-').nth(1).unwrap().to_owned();
    let span_of = |tp: &str| tp.split('-').nth(2).unwrap().to_owned();
    let first = requests
        .iter()
        .find(|r| r.json()["traceparent"].as_str().is_some_and(|t| trace_of(t) == trace_of(incoming)))
        .expect("the provider's trace is continued");
    let in_event = first.json()["traceparent"].as_str().unwrap().to_owned();
    let on_delivery = first.header("traceparent").to_owned();
    assert_ne!(span_of(&in_event), span_of(incoming), "the ingress span is a child of the caller's");
    assert_eq!(trace_of(&on_delivery), trace_of(incoming), "the delivery continues the trace");
    assert_ne!(span_of(&on_delivery), span_of(&in_event), "the delivery is a span of its own");
    let second = requests.iter().find(|r| r.event_id() != first.event_id()).unwrap();
    let started = second.json()["traceparent"].as_str().unwrap().to_owned();
    assert_ne!(trace_of(&started), trace_of(incoming));
    assert_eq!(trace_of(second.header("traceparent")), trace_of(&started));
    assert_valid_event(&second.json());
}

/// A TLS subscriber offering HTTP/2 and HTTP/1.1 (ALPN), with a certificate
/// from a test CA; it records the protocol version of each request.
async fn tls_subscriber() -> (String, Vec<u8>, std::sync::Arc<std::sync::Mutex<Vec<http::Version>>>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let cert = params.self_signed(&key).unwrap();
    let pem = cert.pem().into_bytes();
    let mut config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let versions = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = versions.clone();
    let url = crate::support::serve_tls(config, move |request| seen.lock().unwrap().push(request.version())).await;
    (url, pem, versions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_subscribers_with_an_internal_ca_get_http2() {
    let (url, pem, versions) = tls_subscriber().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pem).unwrap();
    let app = TestApp::spawn_relay(&format!(
        "[[relay.subscribers]]\nname = \"internal\"\nurl = \"{url}\"\nevents = [\"*\"]\nca_file = \"{}\"\nretry_schedule = [\"100ms\"]\n",
        ca.display()
    ))
    .await;
    for n in 0..3 {
        app.send("mailpipe", "email.sent", n).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while versions.lock().unwrap().len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "TLS deliveries did not arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(versions.lock().unwrap().iter().all(|v| *v == http::Version::HTTP_2), "{:?}", versions.lock().unwrap());
    let (_, subs) = app.admin(Method::GET, "/admin/subscribers", None).await;
    assert_eq!(subs[0]["dead_letters"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_failed_delivery_not_a_silent_one() {
    let (url, _, versions) = tls_subscriber().await;
    let app = TestApp::spawn_relay(&format!(
        "[[relay.subscribers]]\nname = \"untrusted\"\nurl = \"{url}\"\nevents = [\"*\"]\nretry_schedule = [\"50ms\"]\n"
    ))
    .await;
    app.send("mailpipe", "email.sent", 1).await;
    let letters = wait_dead_letters(&app, "untrusted", 1).await;
    assert!(letters[0]["last_status"].is_null(), "{letters:?}");
    assert!(versions.lock().unwrap().is_empty(), "nothing was sent over an unverified connection");
}
