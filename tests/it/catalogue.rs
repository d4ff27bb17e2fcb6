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
use hookbridge_testkit::{TestApp, checked, keys};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalogue_event_is_published_once_on_its_topic() {
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
    if let Value::Array(items) = json { items[0].clone() } else { json }
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

    // A correctly signed body that is not the provider's shape.
    let mut object = sendgrid.request(vec![sendgrid.element("open", 1, now).unwrap()], 1, now);
    object.body = b"{\"event\":\"open\"}".to_vec();
    let resigned = {
        let definition = sendgrid.definition().clone();
        let signer = DefinedSigner::new(definition, Credential::EcdsaPkcs8(keys::sendgrid_key().0.clone()), None);
        let _ = signer;
        object
    };
    let got = app.post_signed("sendgrid", &resigned).await;
    assert_eq!(got.0, 401, "a body changed after signing is a bad signature first");

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
