//! Every provider × every documented event: signed → exactly one event on
//! the right topic, schema-valid, with the right fields.

use chrono::Utc;
use hookbridge_event::TopicName;
use hookbridge_testkit::{TestApp, checked, keys};
use serde_json::Value;

/// (source, provider event, expected normalized type)
const CASES: &[(&str, &str, &str)] = &[
    ("mailpace", "email.queued", "email.queued"),
    ("mailpace", "email.delivered", "email.delivered"),
    ("mailpace", "email.deferred", "email.deferred"),
    ("mailpace", "email.bounced", "email.bounced"),
    ("mailpace", "email.spam", "email.rejected"),
    ("mailpipe", "email.received", "email.received"),
    ("mailpipe", "email.sent", "email.delivered"),
    ("mailpipe", "email.bounced", "email.bounced"),
    ("mailpipe", "email.opened", "email.opened"),
    ("mailpipe", "domain.verified", "domain.verified"),
    ("whippy", "message.created", "message.created"),
    ("whippy", "message.updated", "message.updated"),
    ("whippy", "campaign.updated", "campaign.updated"),
    ("whippy", "call.analyzed", "call.analyzed"),
    ("whippy", "contact.created", "contact.created"),
    ("whippy", "conversation.updated", "conversation.updated"),
    ("whippy", "sequence.updated", "sequence.updated"),
    ("whippy-base64", "message.created", "message.created"),
    ("whippy-timestamped", "message.created", "message.created"),
];

#[tokio::test]
async fn the_cases_cover_every_documented_event() {
    for (source, signer) in keys::sources() {
        if source == "mailpace" || source == "mailpipe" || source == "whippy" {
            for event in keys::events(signer.provider()) {
                assert!(CASES.iter().any(|(s, e, _)| *s == source && e == event), "{source} {event} not covered");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_event_is_published_once_on_its_topic() {
    let app = TestApp::spawn().await;
    for (n, (source, provider_event, expected_type)) in CASES.iter().enumerate() {
        let signer = keys::signer(source);
        let (body, header) = keys::signed(&signer, provider_event, n as u64, Utc::now());
        let original: Value = serde_json::from_slice(&body).unwrap();
        let (status, answer) = app.post(source, body, &[header]).await;
        assert_eq!(status, 200, "{source} {provider_event}: {answer}");
        assert_eq!(answer["status"], "accepted");

        let events = app.published().await;
        assert_eq!(events.len(), n + 1, "exactly one new event for {source} {provider_event}");
        let event = events.last().unwrap();
        assert_eq!(answer["id"], event.id.as_str());
        assert_eq!(TopicName::new("hookbridge", &event.ty).as_str(), format!("hookbridge.{expected_type}"));
        let json = checked(event);
        assert_eq!(json["type"], *expected_type);
        assert_eq!(json["providerevent"], *provider_event);
        assert_eq!(json["provider"], signer.provider().as_str());
        assert_eq!(json["source"], format!("urn:hookbridge:source:{source}"));
        assert_eq!(json["data"]["original"], original, "original payload kept untouched");
        check_fields(signer.provider().as_str(), expected_type, &json, &original);
    }
}

fn check_fields(provider: &str, ty: &str, event: &Value, original: &Value) {
    let data = &event["data"];
    match provider {
        "mailpace" => {
            let payload = &original["payload"];
            assert_eq!(event["subject"], payload["message_id"]);
            assert_eq!(data["message_id"], payload["message_id"]);
            assert_eq!(data["to"], serde_json::json!(["ada@example.com", "grace@example.org"]));
            assert_eq!(data["bcc"], serde_json::json!(["audit@acme.example"]));
            assert_eq!(data["cc"], serde_json::json!([]));
            assert_eq!(data["tags"], serde_json::json!(["invoice", "billing"]));
            assert_eq!(data["subject"], payload["subject"]);
            assert_eq!(event["time"].as_str().unwrap()[..19], payload["updated_at"].as_str().unwrap()[..19]);
            match ty {
                "email.bounced" => assert_eq!(data["bounce"]["kind"], "hard"),
                "email.deferred" => assert_eq!(data["bounce"]["kind"], "soft"),
                "email.rejected" => assert_eq!(data["rejection"]["reason"], "spam"),
                _ => assert!(data.get("bounce").is_none() && data.get("rejection").is_none()),
            }
        }
        "mailpipe" => {
            assert_eq!(event["id"], original["id"], "Mailpipe's id is the event id");
            let d = &original["data"];
            match ty {
                "email.bounced" => {
                    assert_eq!(
                        data["bounce"],
                        serde_json::json!({"kind": "hard", "code": "550", "message": d["bounce_message"]})
                    );
                    assert_eq!(data["to"], serde_json::json!([d["recipient"]]));
                    assert_eq!(event["subject"], d["message_id"]);
                }
                "domain.verified" => {
                    assert_eq!(data["domain"], "acme.example");
                    assert_eq!(event["subject"], "acme.example");
                }
                _ => {
                    assert_eq!(data["message_id"], d["message_id"]);
                    assert_eq!(data["from"], d["from"]);
                    assert_eq!(data["to"], d["to"]);
                    assert_eq!(data["subject"], d["subject"]);
                }
            }
        }
        "whippy" => {
            assert_eq!(event["id"], original["request_id"], "Whippy's request_id is the event id");
            let d = &original["data"];
            assert_eq!(event["subject"], d["id"]);
            if ty.starts_with("message.") {
                assert_eq!(data["message_id"], d["id"]);
                assert_eq!(data["to"], serde_json::json!([d["to"]]));
                assert_eq!(data["channel"], "sms");
                assert_eq!(data["delivery_status"], d["delivery_status"]);
                assert!(data.get("body").is_none(), "message bodies stay in original only");
            } else {
                assert_eq!(data["resource_id"], d["id"]);
            }
        }
        other => panic!("unexpected provider {other}"),
    }
}

#[tokio::test]
async fn an_unknown_event_name_is_published_under_its_own_name() {
    let app = TestApp::spawn().await;
    for (source, event) in
        [("mailpace", "email.teleported"), ("mailpipe", "mailbox.created"), ("whippy", "invoice.paid")]
    {
        let (body, header) = keys::signed(&keys::signer(source), event, 7, Utc::now());
        let (status, _) = app.post(source, body, &[header]).await;
        assert_eq!(status, 200, "{source} {event}");
        let published = app.published().await;
        let last = published.last().unwrap();
        assert_eq!((last.ty.as_str(), last.providerevent.as_str()), (event, event));
    }
    assert_eq!(app.published().await.len(), 3);
}

#[tokio::test]
async fn the_same_webhook_twice_is_one_event() {
    let app = TestApp::spawn().await;
    for source in ["mailpace", "mailpipe", "whippy"] {
        let (body, header) =
            keys::signed(&keys::signer(source), keys::events(keys::signer(source).provider())[0], 1, Utc::now());
        let (first, a) = app.post(source, body.clone(), std::slice::from_ref(&header)).await;
        let (second, b) = app.post(source, body, &[header]).await;
        assert_eq!((first, second), (200, 200));
        assert_eq!((a["status"].as_str(), b["status"].as_str()), (Some("accepted"), Some("duplicate")));
        assert_eq!(a["id"], b["id"]);
    }
    assert_eq!(app.published().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_are_one_event() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let (body, header) = keys::signed(&keys::signer("mailpipe"), "email.sent", 1, Utc::now());
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (app, body, header) = (app.clone(), body.clone(), header.clone());
            tokio::spawn(async move { app.post("mailpipe", body, &[header]).await })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        let (status, answer) = task.await.unwrap();
        assert_eq!(status, 200);
        accepted += usize::from(answer["status"] == "accepted");
    }
    assert_eq!(accepted, 1);
    assert_eq!(app.published().await.len(), 1);
}

#[tokio::test]
async fn redact_fields_removes_bodies_before_publishing() {
    let app = TestApp::spawn().await;
    let (body, header) = keys::signed(&keys::signer("mailpace"), "email.delivered", 1, Utc::now());
    let (status, _) = app.post("mailpace-private", body, &[header]).await;
    assert_eq!(status, 200);
    let event = checked(&app.published().await[0]);
    let payload = &event["data"]["original"]["payload"];
    assert!(payload.get("htmlbody").is_none() && payload.get("textbody").is_none(), "{payload}");
    assert_eq!(payload["subject"], "Invoice #1", "other fields stay");
    assert!(!serde_json::to_string(&event).unwrap().contains("Your invoice is attached"));
}

#[test]
fn the_bus_conformance_suite_publishes_schema_valid_events() {
    for ty in ["email.bounced", "email.delivered", "email.deferred", "email.queued", "email.opened", "message.created"]
    {
        checked(&hookbridge_bus::conformance::event(ty));
    }
}
