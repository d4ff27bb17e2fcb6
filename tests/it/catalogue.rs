//! The built-in provider catalogue end to end: every provider × every
//! event signed as the provider signs it, batches (duplicates inside, a
//! publish failing midway), every way to be refused, addresses, and a
//! provider defined by the user in a file. Runs on every backend.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use hookbridge_bus::embedded::{EmbeddedBus, EmbeddedOptions};
use hookbridge_bus::{Error, PublishOutcome, Publisher};
use hookbridge_event::{Event, TopicName};
use hookbridge_providers::builtin_catalogue;
use hookbridge_providers::defined::{Credential, DefinedSigner};
use hookbridge_testkit::{TestApp, checked, keys, sns};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalogue_event_is_published_once_on_its_topic() {
    let _sns = sns::serve().await;
    let app = TestApp::spawn().await;
    let mut expected = 0;
    for definition in builtin_catalogue().iter() {
        let signer = keys::defined_signer(&definition.name);
        for (n, (event, when, ty)) in definition.mappings().into_iter().enumerate() {
            if definition.mappings().iter().take(n).any(|(e, _, _)| *e == event) {
                continue; // a later condition of the same name (the unit tests cover each)
            }
            let _ = when;
            let ty = ty.split(' ').next().unwrap().to_owned();
            let now = Utc::now();
            let element = signer.element(&event, 1000 + n as u64, now).unwrap();
            let request = signer.request(vec![element.clone()], n as u64, now);
            let (status, answer) = app.post_signed(&definition.name, &request).await;
            assert_eq!(status, 200, "{} {event}: {answer}", definition.name);
            expected += 1;
            let events = app.published().await;
            assert_eq!(events.len(), expected, "exactly one new event for {} {event}", definition.name);
            let published = events.iter().find(|e| e.providerevent == event && e.provider == definition.name).unwrap();
            let json = checked(published);
            assert_eq!(json["type"], ty.as_str(), "{} {event}", definition.name);
            assert_eq!(TopicName::new("hookbridge", &published.ty).as_str(), format!("hookbridge.{ty}"));
            assert_eq!(json["source"], format!("urn:hookbridge:source:{}", definition.name));
            assert_eq!(json["data"]["original"], sent_element(&request), "the element, untouched");
            if ty.starts_with("email.") {
                assert!(!json["data"]["to"].as_array().unwrap().is_empty(), "{} {event}: {json}", definition.name);
            }
            let answered = match definition.batches() {
                true => answer["events"][0]["id"].clone(),
                false => answer["id"].clone(),
            };
            assert_eq!(answered, published.id.as_str());
        }
    }
    assert!(expected >= 90, "{expected} events across the catalogue");
}

/// The first element of a request's body, as sent.
fn sent_element(request: &hookbridge_providers::defined::SignedRequest) -> Value {
    let json: Value = if request.content_type.starts_with("application/x-www-form-urlencoded") {
        let field = form_urlencoded::parse(&request.body).next().unwrap().1.into_owned();
        serde_json::from_str(&field).unwrap()
    } else {
        serde_json::from_slice(&request.body).unwrap()
    };
    match json {
        Value::Array(items) => items[0].clone(),
        // An SNS envelope: the event is its Message.
        Value::Object(map) if map.contains_key("TopicArn") => {
            serde_json::from_str(map["Message"].as_str().unwrap()).unwrap()
        }
        other => other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_event_per_element_and_a_repeat_is_duplicate() {
    let app = TestApp::spawn().await;
    let signer = keys::defined_signer("sendgrid");
    let now = Utc::now();
    let mut elements: Vec<Value> = (0..100).map(|i| signer.element("delivered", i, now).unwrap()).collect();
    elements.push(elements[7].clone());
    let request = signer.request(elements, 1, now);
    let (status, answer) = app.post_signed("sendgrid", &request).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "accepted");
    let items = answer["events"].as_array().unwrap();
    assert_eq!(items.len(), 101);
    assert_eq!(items.iter().filter(|i| i["status"] == "accepted").count(), 100);
    assert_eq!(items[100]["status"], "duplicate", "the repeated element inside the batch");
    assert_eq!(app.published().await.len(), 100);

    // The provider's retry of the same request: nothing new.
    let (status, answer) = app.post_signed("sendgrid", &request).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(app.published().await.len(), 100);

    // Brevo sends single events or arrays; Mandrill a form; both batch.
    for (provider, event) in [("brevo", "hard_bounce"), ("mandrill", "hard_bounce"), ("sparkpost", "bounce")] {
        let signer = keys::defined_signer(provider);
        let elements: Vec<Value> = (0..5).map(|i| signer.element(event, 500 + i, now).unwrap()).collect();
        let (status, answer) = app.post_signed(provider, &signer.request(elements, 2, now)).await;
        assert_eq!(status, 200, "{provider}: {answer}");
        assert_eq!(answer["events"].as_array().unwrap().len(), 5, "{provider}: {answer}");
    }
    let bounced = app.published().await.into_iter().filter(|e| e.ty == "email.bounced").count();
    assert_eq!(bounced, 15);
}

/// The embedded bus, failing the first publish of every third event.
#[derive(Debug)]
struct FailsMidway {
    bus: EmbeddedBus,
    calls: AtomicUsize,
    failed: Mutex<HashSet<String>>,
}

#[async_trait]
impl Publisher for FailsMidway {
    async fn publish(&self, event: &Event) -> hookbridge_bus::Result<PublishOutcome> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call % 3 == 2 && self.failed.lock().unwrap().insert(event.id.clone()) {
            return Err(Error::Unavailable("broker went away".into()));
        }
        self.bus.publish(event).await
    }
    async fn check_ready(&self) -> hookbridge_bus::Result<()> {
        Ok(())
    }
    fn backend(&self) -> &'static str {
        "embedded"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_failing_midway_is_503_and_the_retry_publishes_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(EmbeddedOptions::new(dir.path().join("bus"))).unwrap();
    let publisher = Arc::new(FailsMidway { bus: bus.clone(), calls: AtomicUsize::new(0), failed: Mutex::default() });
    let app = TestApp::spawn_with(dir, bus, publisher).await;
    let signer = keys::defined_signer("sendgrid");
    let now = Utc::now();
    let elements: Vec<Value> = (0..10).map(|i| signer.element("processed", i, now).unwrap()).collect();
    let request = signer.request(elements, 1, now);
    let (status, answer) = app.post_signed("sendgrid", &request).await;
    assert_eq!((status, answer["error"].as_str()), (503, Some("unavailable")));
    let stored = app.published().await.len();
    assert!(stored < 10, "some were stored before the failure, not all: {stored}");
    // SendGrid retries the whole request until it is answered 200; each
    // element is stored once.
    let mut answers = Vec::new();
    for _ in 0..10 {
        let (status, answer) = app.post_signed("sendgrid", &request).await;
        answers.push((status, answer));
        if status == 200 {
            break;
        }
    }
    let (status, answer) = answers.last().unwrap();
    assert_eq!(*status, 200, "{answers:?}");
    assert!(answers.len() >= 2, "the first answer was 503");
    let events = app.published().await;
    assert_eq!(events.len(), 10, "every element once");
    let ids: HashSet<_> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 10);
    let duplicates = answer["events"].as_array().unwrap().iter().filter(|i| i["status"] == "duplicate").count();
    assert!(duplicates >= stored, "what was stored before is a duplicate now: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_to_be_wrong_is_refused_and_nothing_is_published() {
    let app = TestApp::spawn().await;
    let now = Utc::now();
    let expect = |what: &str, got: (u16, Value), status: u16, reason: &str| {
        assert_eq!((got.0, got.1["error"].as_str()), (status, Some(reason)), "{what}: {}", got.1);
    };

    // SendGrid: a key that is not the configured one; a changed body.
    let sendgrid = keys::defined_signer("sendgrid");
    let element = sendgrid.element("bounce", 1, now).unwrap();
    let (other, _) = hookbridge_providers::defined::p256_keypair();
    let stranger = DefinedSigner::new(sendgrid.definition().clone(), Credential::EcdsaPkcs8(other), None);
    expect(
        "sendgrid stranger",
        app.post_signed("sendgrid", &stranger.request(vec![element.clone()], 1, now)).await,
        401,
        "invalid_signature",
    );
    let mut changed = sendgrid.request(vec![element], 1, now);
    changed.body = String::from_utf8(changed.body).unwrap().replace("ada@", "eve@").into_bytes();
    expect("sendgrid changed body", app.post_signed("sendgrid", &changed).await, 401, "invalid_signature");

    // Resend: a stale timestamp; Customer.io: a wrong secret.
    let resend = keys::defined_signer("resend");
    let old = now - chrono::Duration::minutes(10);
    let stale = resend.request(vec![resend.element("email.bounced", 1, old).unwrap()], 1, old);
    expect("resend stale", app.post_signed("resend", &stale).await, 401, "stale_timestamp");
    let cio = keys::defined_signer("customerio");
    let wrong = DefinedSigner::new(cio.definition().clone(), Credential::Secret("not-the-key".into()), None);
    expect(
        "customerio wrong secret",
        app.post_signed("customerio", &wrong.request(vec![cio.element("delivered", 1, now).unwrap()], 1, now)).await,
        401,
        "invalid_signature",
    );

    // Mailgun: the same token twice.
    let mailgun = keys::defined_signer("mailgun");
    let request = mailgun.request(vec![mailgun.element("delivered", 1, now).unwrap()], 1, now);
    assert_eq!(app.post_signed("mailgun", &request).await.0, 200);
    expect("mailgun replay", app.post_signed("mailgun", &request).await, 401, "replayed");

    // Postmark: wrong basic credentials, none, and an address not allowed.
    let postmark = keys::defined_signer("postmark");
    let element = postmark.element("Bounce", 1, now).unwrap();
    let guess = DefinedSigner::new(
        postmark.definition().clone(),
        Credential::Basic { username: keys::BASIC_USERNAME.into(), password: "guess".into() },
        None,
    );
    expect(
        "postmark wrong password",
        app.post_signed("postmark", &guess.request(vec![element.clone()], 1, now)).await,
        401,
        "invalid_credentials",
    );
    let mut bare = postmark.request(vec![element.clone()], 1, now);
    bare.headers.clear();
    expect("postmark no credentials", app.post_signed("postmark", &bare).await, 401, "missing_credentials");
    expect(
        "postmark from elsewhere",
        app.post_signed("postmark-elsewhere", &postmark.request(vec![element.clone()], 1, now)).await,
        403,
        "ip_not_allowed",
    );

    // Mandrill: signed for another URL.
    let mandrill = keys::defined_signer("mandrill");
    let elsewhere = DefinedSigner::new(
        mandrill.definition().clone(),
        Credential::Secret(keys::CATALOGUE_SECRET.into()),
        Some("https://evil.example/webhooks/mandrill".into()),
    );
    expect(
        "mandrill other url",
        app.post_signed("mandrill", &elsewhere.request(vec![mandrill.element("send", 1, now).unwrap()], 1, now)).await,
        401,
        "invalid_signature",
    );

    // An authenticated body that is not the provider's shape: SparkPost
    // sends arrays, and basic authentication does not cover the body.
    let sparkpost = keys::defined_signer("sparkpost");
    let mut object = sparkpost.request(vec![sparkpost.element("delivery", 1, now).unwrap()], 1, now);
    object.body = br#"{"msys": {"message_event": {"type": "delivery"}}}"#.to_vec();
    expect("sparkpost object", app.post_signed("sparkpost", &object).await, 400, "invalid_payload");

    let published = app.published().await;
    assert_eq!(published.len(), 1, "only the first Mailgun request: {published:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_allow_list_admits_loopback_and_the_head_probe_answers() {
    let app = TestApp::spawn().await;
    let postmark = keys::defined_signer("postmark");
    let now = Utc::now();
    let mut unsigned = postmark.request(vec![postmark.element("Delivery", 1, now).unwrap()], 1, now);
    unsigned.headers.clear();
    let (status, answer) = app.post_signed("postmark-by-address", &unsigned).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(app.published().await[0].ty, "email.delivered");

    let client = reqwest::Client::new();
    let head = client.head(app.url("mandrill")).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200, "Mandrill checks the URL with HEAD");
    let head = client.head(app.url("nope")).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 404);
}

/// An SES event as SES publishes it to SNS.
fn ses_event(event_type: &str, extra: Value) -> String {
    let mut event = serde_json::json!({
        "eventType": event_type,
        "mail": {
            "timestamp": "2026-12-05T10:00:00.000Z",
            "source": "billing@acme.example",
            "messageId": "0107-ses-message-1",
            "destination": ["ada@example.com"],
            "commonHeaders": { "subject": "Invoice #4200" }
        }
    });
    if let (Value::Object(map), Value::Object(more)) = (&mut event, extra) {
        map.extend(more);
    }
    event.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ses_through_sns_verifies_v1_and_v2_checks_topic_and_host_and_confirms_subscriptions() {
    let server = sns::serve().await;
    let app = TestApp::spawn().await;
    let now = Utc::now();
    let bounce = ses_event(
        "Bounce",
        serde_json::json!({"bounce": {"bounceType": "Transient", "bouncedRecipients": [{"emailAddress": "ada@example.com", "status": "4.2.2", "diagnosticCode": "smtp; 452 mailbox full"}], "timestamp": "2026-12-05T10:00:01.000Z"}}),
    );
    let complaint = ses_event(
        "Complaint",
        serde_json::json!({"complaint": {"complainedRecipients": [{"emailAddress": "grace@example.org"}], "complaintFeedbackType": "abuse", "timestamp": "2026-12-05T10:00:02.000Z"}}),
    );
    let post = |body: Vec<u8>| {
        let request = hookbridge_providers::defined::SignedRequest {
            body,
            content_type: "text/plain; charset=UTF-8",
            headers: Vec::new(),
            query: Vec::new(),
        };
        let app = &app;
        async move { app.post_signed("ses", &request).await }
    };

    // SignatureVersion 1 (SHA1) and 2 (SHA256); the certificate is fetched once.
    let (status, answer) = post(sns::message(sns::notification(&bounce, "msg-1", now), "1")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["id"], "msg-1", "the SNS MessageId is the event id");
    let (status, answer) = post(sns::message(sns::notification(&complaint, "msg-2", now), "2")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(server.cert_fetches.load(Ordering::SeqCst), 1, "the certificate is cached");
    let events = app.published().await;
    assert_eq!(events.len(), 2);
    let bounced = checked(&events[0]);
    assert_eq!((bounced["type"].as_str(), bounced["providerevent"].as_str()), (Some("email.bounced"), Some("Bounce")));
    assert_eq!(
        bounced["data"]["bounce"],
        serde_json::json!({"kind": "soft", "code": "4.2.2", "message": "smtp; 452 mailbox full"})
    );
    assert_eq!(bounced["subject"], "0107-ses-message-1");
    assert_eq!(
        bounced["data"]["original"],
        serde_json::from_str::<Value>(&bounce).unwrap(),
        "the SES event, not the envelope"
    );
    let complained = checked(&events[1]);
    assert_eq!(complained["data"]["complaint"]["kind"], "abuse");
    assert_eq!(complained["data"]["to"], serde_json::json!(["grace@example.org"]));

    // The same notification again (SNS retries): a duplicate.
    let (status, answer) = post(sns::message(sns::notification(&bounce, "msg-1", now), "2")).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")));

    let expect = |what: &str, got: (u16, Value), status: u16, reason: &str| {
        assert_eq!((got.0, got.1["error"].as_str()), (status, Some(reason)), "{what}: {}", got.1);
    };
    // Another topic.
    let mut other = sns::notification(&bounce, "msg-3", now);
    other.topic_arn = "arn:aws:sns:eu-west-1:999999999999:someone-else".into();
    expect("other topic", post(sns::message(other, "2")).await, 401, "topic_not_allowed");
    // The certificate not over https, or on another host.
    let mut plain = sns::notification(&bounce, "msg-4", now);
    plain.signing_cert_url = plain.signing_cert_url.replace("https://", "http://");
    expect("http certificate", post(sns::message(plain, "2")).await, 401, "malformed_signature");
    let mut elsewhere = sns::notification(&bounce, "msg-5", now);
    elsewhere.signing_cert_url = elsewhere.signing_cert_url.replace("127.0.0.1", "localhost");
    expect("other host", post(sns::message(elsewhere, "2")).await, 401, "malformed_signature");
    // A message changed after signing.
    let signed = sns::message(sns::notification(&bounce, "msg-6", now), "2");
    let changed = String::from_utf8(signed).unwrap().replace("Transient", "Permanent").into_bytes();
    expect("changed message", post(changed).await, 401, "invalid_signature");
    // The certificate cannot be fetched: 503, so SNS retries.
    let mut unreachable = sns::notification(&bounce, "msg-7", now);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    unreachable.signing_cert_url = format!("https://127.0.0.1:{closed}/cert.pem");
    expect("no certificate", post(sns::message(unreachable, "2")).await, 503, "cannot_verify");

    // A subscription confirmation: its SubscribeURL is fetched, nothing published.
    let mut confirm = sns::notification("You have chosen to subscribe to the topic", "msg-8", now);
    confirm.kind = "SubscriptionConfirmation".into();
    confirm.token = Some("token-123".into());
    confirm.subscribe_url = Some(format!("{}/confirm?Action=ConfirmSubscription&Token=token-123", server.base));
    let (status, answer) = post(sns::message(confirm.clone(), "1")).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("subscription_confirmed")), "{answer}");
    assert_eq!(server.confirmations.load(Ordering::SeqCst), 1);
    assert!(server.confirmed.lock().unwrap().as_deref().unwrap().contains("Token=token-123"));
    // A SubscribeURL elsewhere is never fetched.
    confirm.subscribe_url = Some("https://attacker.example/confirm".into());
    expect("subscribe elsewhere", post(sns::message(confirm, "2")).await, 401, "malformed_signature");
    let mut unsubscribe = sns::notification("unsubscribed", "msg-9", now);
    unsubscribe.kind = "UnsubscribeConfirmation".into();
    unsubscribe.token = Some("t".into());
    unsubscribe.subscribe_url = Some(format!("{}/confirm?again", server.base));
    let (status, answer) = post(sns::message(unsubscribe, "2")).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("ignored")), "{answer}");
    assert_eq!(server.confirmations.load(Ordering::SeqCst), 1, "an unsubscribe confirmation is not followed");
    assert_eq!(app.published().await.len(), 2, "nothing but the two notifications was published");
}
