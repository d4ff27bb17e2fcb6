//! The built-in catalogue against samples signed as each provider signs
//! them, every way to be wrong, and the definition format's checks.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{Duration, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::format::AuthKind;
use super::*;
use crate::{Redactor, SourceMeta, VerifierSettings, VerifyError};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A source's settings and the matching credential, for the definition's
/// first method.
fn credentials(definition: &Definition) -> (VerifierSettings, sample::Credential) {
    let mut settings = VerifierSettings::default();
    let credential = match definition.auth[0].kind {
        AuthKind::Hmac | AuthKind::Token => {
            settings.secrets = vec![SECRET.into()];
            settings.listed_secrets = 1;
            sample::Credential::Secret(SECRET.into())
        }
        AuthKind::EcdsaP256 => {
            let (pkcs8, public) = sample::p256_keypair();
            settings.public_keys = vec![public];
            settings.listed_public_keys = 1;
            sample::Credential::EcdsaPkcs8(pkcs8)
        }
        AuthKind::Basic => {
            settings.username = Some("hookbridge".into());
            settings.password = Some("s3cret-pass".into());
            sample::Credential::Basic { username: "hookbridge".into(), password: "s3cret-pass".into() }
        }
        AuthKind::Ed25519 | AuthKind::None | AuthKind::Sns => {
            unreachable!("tested end to end (SNS fetches certificates)")
        }
    };
    if definition.signs_url() {
        settings.webhook_url = Some("https://hooks.acme.example/webhooks/mandrill".into());
    }
    (settings, credential)
}

fn meta() -> SourceMeta {
    SourceMeta { event_source: "urn:hookbridge:source:test".into(), redactor: Redactor::default() }
}

fn headers(list: &[(String, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in list {
        h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h
}

struct Fixture {
    definition: Arc<Definition>,
    verifier: Verifier,
    signer: DefinedSigner,
}

fn fixture(name: &str) -> Fixture {
    let definition = Catalogue::builtin().get(name).unwrap().clone();
    let (settings, credential) = credentials(&definition);
    let verifier = Verifier::new(definition.clone(), &settings).unwrap();
    let signer = DefinedSigner::new(definition.clone(), credential, settings.webhook_url.clone());
    Fixture { definition, verifier, signer }
}

fn check(f: &Fixture, request: &SignedRequest) -> Result<Vec<hookbridge_event::Event>, String> {
    let h = headers(&request.headers);
    let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(&request.query).finish();
    let req = Request { headers: &h, body: &request.body, query: Some(&query) };
    let verified = f.verifier.verify(&req, Utc::now()).map_err(|e| e.code().to_owned())?;
    f.verifier.accepted(verified);
    extract::normalize(&f.definition, &req, &meta(), Utc::now()).map_err(|e| e.to_string())
}

#[test]
fn every_builtin_event_verifies_and_maps_to_its_type() {
    let catalogue = Catalogue::builtin();
    assert_eq!(
        catalogue.names(),
        ["brevo", "customerio", "loops", "mailgun", "mandrill", "postmark", "resend", "sendgrid", "ses", "sparkpost"]
    );
    for definition in catalogue.iter().filter(|d| d.name != "ses") {
        let f = fixture(&definition.name);
        for (n, rule) in definition.rules.iter().enumerate() {
            let now = Utc::now();
            // Conditions of earlier rules of the same name must not match.
            let mut element = f.signer.element(&rule.name, n as u64, now).unwrap();
            // Undo what the first rule of this name set, then apply this one's.
            for earlier in definition.rules.iter().take(n).filter(|r| r.name == rule.name) {
                for (p, _) in &earlier.when {
                    let original = p.find(definition.sample.as_ref().unwrap()).cloned().unwrap_or(Value::Null);
                    p.set(&mut element, original);
                }
            }
            for (p, v) in &rule.when {
                p.set(&mut element, Value::String(v.clone()));
            }
            let request = f.signer.request(vec![element], n as u64, now);
            let events = check(&f, &request).unwrap_or_else(|e| panic!("{} {}: {e}", definition.name, rule.name));
            assert_eq!(events.len(), 1);
            let event = &events[0];
            assert_eq!(event.ty, rule.ty, "{} {}", definition.name, rule.name);
            assert_eq!(event.providerevent, rule.name);
            assert_eq!(event.provider, definition.name);
            assert!((event.time - now).num_seconds().abs() <= 1, "{} time {}", definition.name, event.time);
            let data: Value = serde_json::from_str(event.data.get()).unwrap();
            if event.ty.starts_with("email.") {
                assert!(
                    !data["to"].as_array().unwrap().is_empty(),
                    "{} {}: recipient in {data}",
                    definition.name,
                    rule.name
                );
                assert!(data["message_id"].is_string(), "{} {}: message id", definition.name, rule.name);
            }
            if let Some(kind) = rule.bounce {
                assert_eq!(data["bounce"]["kind"], bounce_name(kind));
            }
            if event.ty == "email.clicked" && definition.event.data.contains_key("url") {
                assert!(data["engagement"]["url"].is_string(), "{} click url: {data}", definition.name);
            }
        }
    }
}

#[test]
fn an_unmapped_name_is_published_as_it_is() {
    let f = fixture("sendgrid");
    let element = f.signer.element("machine_opened", 1, Utc::now()).unwrap();
    let events = check(&f, &f.signer.request(vec![element], 1, Utc::now())).unwrap();
    assert_eq!((events[0].ty.as_str(), events[0].providerevent.as_str()), ("machine_opened", "machine_opened"));
}

#[test]
fn batches_give_one_event_per_element_with_their_own_ids() {
    let f = fixture("sendgrid");
    let now = Utc::now();
    let elements: Vec<Value> = (0..100).map(|i| f.signer.element("delivered", i, now).unwrap()).collect();
    let mut with_duplicate = elements.clone();
    with_duplicate.push(elements[3].clone());
    let events = check(&f, &f.signer.request(with_duplicate, 1, now)).unwrap();
    assert_eq!(events.len(), 101);
    assert_eq!(events[3].id, events[100].id, "a repeated element has the same id (the bus keeps one)");
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 100);
    let original: Value = serde_json::from_str(events[5].data.get()).unwrap();
    assert_eq!(original["original"]["sg_event_id"], "sendgrid-5", "original is the element, not the batch");

    // Mandrill: a form field holding the array; its check POST holds none.
    let m = fixture("mandrill");
    let elements: Vec<Value> = (0..3).map(|i| m.signer.element("open", i, now).unwrap()).collect();
    let events = check(&m, &m.signer.request(elements, 1, now)).unwrap();
    assert_eq!(events.len(), 3);
    assert_ne!(events[0].id, events[1].id, "derived ids differ per element");
    assert!(check(&m, &m.signer.request(Vec::new(), 2, now)).unwrap().is_empty());

    // SparkPost's test batch holds an element without an event.
    let s = fixture("sparkpost");
    let empty = serde_json::json!({"msys": {}});
    assert!(check(&s, &s.signer.request(vec![empty], 3, now)).unwrap().is_empty());
}

#[test]
fn derived_ids_are_stable_across_retries() {
    let f = fixture("postmark");
    let now = Utc::now();
    let element = f.signer.element("Delivery", 7, now).unwrap();
    let a = check(&f, &f.signer.request(vec![element.clone()], 1, now)).unwrap();
    let b = check(&f, &f.signer.request(vec![element], 2, now + Duration::seconds(30))).unwrap();
    assert_eq!(a[0].id, b[0].id);
    assert!(a[0].id.starts_with("postmark-"));
}

fn tamper(request: &mut SignedRequest, header: &str) {
    for (k, v) in &mut request.headers {
        if k == header {
            let mut bytes =
                STANDARD.decode(v.rsplit(',').next().unwrap()).unwrap_or_else(|_| hex::decode(&*v).unwrap());
            bytes[0] ^= 1;
            *v = if v.contains(',') { format!("v1,{}", STANDARD.encode(bytes)) } else { STANDARD.encode(bytes) };
        }
    }
}

#[test]
fn every_way_to_be_wrong_is_refused_with_its_reason() {
    let now = Utc::now();
    // SendGrid: a signature by another key, a body changed, no signature.
    let f = fixture("sendgrid");
    let request = f.signer.request(vec![f.signer.element("delivered", 1, now).unwrap()], 1, now);
    let (other, _) = sample::p256_keypair();
    let stranger = DefinedSigner::new(f.definition.clone(), sample::Credential::EcdsaPkcs8(other), None);
    let forged = stranger.request(vec![f.signer.element("delivered", 1, now).unwrap()], 1, now);
    assert_eq!(check(&f, &forged).unwrap_err(), "invalid_signature");
    let mut changed = request.clone();
    changed.body.push(b' ');
    assert_eq!(check(&f, &changed).unwrap_err(), "invalid_signature");
    let mut unsigned = request.clone();
    unsigned.headers.retain(|(k, _)| !k.contains("signature"));
    assert_eq!(check(&f, &unsigned).unwrap_err(), "missing_signature");
    assert!(check(&f, &request).is_ok());

    // Resend: stale and future timestamps, a tampered signature.
    let f = fixture("resend");
    let element = f.signer.element("email.delivered", 1, now).unwrap();
    let old = f.signer.request(vec![element.clone()], 1, now - Duration::minutes(6));
    assert_eq!(check(&f, &old).unwrap_err(), "stale_timestamp");
    let future = f.signer.request(vec![element.clone()], 1, now + Duration::minutes(6));
    assert_eq!(check(&f, &future).unwrap_err(), "stale_timestamp");
    let mut bad = f.signer.request(vec![element.clone()], 1, now);
    tamper(&mut bad, "svix-signature");
    assert_eq!(check(&f, &bad).unwrap_err(), "invalid_signature");
    let good = f.signer.request(vec![element], 1, now);
    let events = check(&f, &good).unwrap();
    let svix_id = good.headers.iter().find(|(k, _)| k == "svix-id").unwrap().1.clone();
    assert_eq!(events[0].id, svix_id, "Resend's event id is the svix-id");
    // The webhook-* names work as well as svix-*.
    let renamed: Vec<(String, String)> =
        good.headers.iter().map(|(k, v)| (k.replace("svix-", "webhook-"), v.clone())).collect();
    assert!(check(&f, &SignedRequest { headers: renamed, ..good.clone() }).is_ok());

    // Mailgun: a token seen twice is refused, once accepted.
    let f = fixture("mailgun");
    let request = f.signer.request(vec![f.signer.element("delivered", 1, now).unwrap()], 1, now);
    let h = headers(&request.headers);
    let req = Request { headers: &h, body: &request.body, query: None };
    let first = f.verifier.verify(&req, now).expect("first time");
    // Not yet accepted (e.g. the publish failed and the provider retries): still fine.
    assert!(f.verifier.verify(&req, now).is_ok());
    f.verifier.accepted(first);
    assert_eq!(f.verifier.verify(&req, now).unwrap_err(), VerifyError::Replayed);
    let mut wrong: Value = serde_json::from_slice(&request.body).unwrap();
    wrong["signature"]["token"] = Value::String("another-token".into());
    let body = serde_json::to_vec(&wrong).unwrap();
    let req = Request { headers: &h, body: &body, query: None };
    assert_eq!(f.verifier.verify(&req, now).unwrap_err(), VerifyError::InvalidSignature);

    // Postmark: wrong basic credentials, none.
    let f = fixture("postmark");
    let element = f.signer.element("Delivery", 1, now).unwrap();
    let wrong = DefinedSigner::new(
        f.definition.clone(),
        sample::Credential::Basic { username: "hookbridge".into(), password: "guess".into() },
        None,
    );
    assert_eq!(check(&f, &wrong.request(vec![element.clone()], 1, now)).unwrap_err(), "invalid_credentials");
    let mut none = f.signer.request(vec![element], 1, now);
    none.headers.clear();
    assert_eq!(check(&f, &none).unwrap_err(), "missing_credentials");

    // Brevo: a token other than the configured one.
    let f = fixture("brevo");
    let element = f.signer.element("delivered", 1, now).unwrap();
    let wrong = DefinedSigner::new(f.definition.clone(), sample::Credential::Secret("nope".into()), None);
    assert_eq!(check(&f, &wrong.request(vec![element], 1, now)).unwrap_err(), "invalid_credentials");

    // Mandrill: the URL is part of what is signed.
    let f = fixture("mandrill");
    let element = f.signer.element("send", 1, now).unwrap();
    let elsewhere = DefinedSigner::new(
        f.definition.clone(),
        sample::Credential::Secret(SECRET.into()),
        Some("https://elsewhere.example/hook".into()),
    );
    assert_eq!(check(&f, &elsewhere.request(vec![element.clone()], 1, now)).unwrap_err(), "invalid_signature");
    assert!(check(&f, &f.signer.request(vec![element], 1, now)).is_ok());
}

#[test]
fn secrets_rotate_and_settings_are_checked() {
    let definition = Catalogue::builtin().get("customerio").unwrap().clone();
    let settings = VerifierSettings {
        secrets: vec!["old-key".into(), SECRET.into()],
        listed_secrets: 2,
        ..VerifierSettings::default()
    };
    let f = Fixture {
        verifier: Verifier::new(definition.clone(), &settings).unwrap(),
        signer: DefinedSigner::new(definition.clone(), sample::Credential::Secret(SECRET.into()), None),
        definition,
    };
    let now = Utc::now();
    assert!(check(&f, &f.signer.request(vec![f.signer.element("delivered", 1, now).unwrap()], 1, now)).is_ok());

    let problems = |name: &str, settings: VerifierSettings| {
        let definition = Catalogue::builtin().get(name).unwrap().clone();
        Verifier::new(definition, &settings).unwrap_err().into_iter().map(|p| p.key).collect::<Vec<_>>()
    };
    assert_eq!(problems("sendgrid", VerifierSettings::default()), ["public_keys"]);
    assert_eq!(
        problems(
            "sendgrid",
            VerifierSettings { public_keys: vec!["bm90IGEga2V5".into()], listed_public_keys: 1, ..Default::default() }
        ),
        ["public_keys[0]"]
    );
    assert_eq!(
        problems(
            "mailgun",
            VerifierSettings { username: Some("u".into()), password: Some("p".into()), ..Default::default() }
        ),
        ["username", "secrets"]
    );
    assert_eq!(problems("postmark", VerifierSettings::default()), ["allowed_ips"]);
    assert_eq!(
        problems("postmark", VerifierSettings { username: Some("u".into()), ..Default::default() }),
        ["password"]
    );
    assert_eq!(
        problems("mandrill", VerifierSettings { secrets: vec!["k".into()], listed_secrets: 1, ..Default::default() }),
        ["webhook_url"]
    );
    assert!(
        Verifier::new(
            Catalogue::builtin().get("postmark").unwrap().clone(),
            &VerifierSettings { allowed_ips: true, ..Default::default() }
        )
        .is_ok(),
        "postmark with only an address allow-list"
    );
}

#[test]
fn definitions_are_checked_with_key_paths() {
    let problems = compile::from_toml(
        r#"
name = "Acme"
[[auth]]
type = "hmac"
signature = { header = "x-sig", json = "/sig" }
signed = "{timestamp}.{nonce}"
[event]
type = "event"
[event.data]
recipient = "/to"
[[events]]
name = "sent"
type = "email.delivered"
bounce = "maybe"
"#,
        false,
    )
    .unwrap_err();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "name",
            "auth[0].signature",
            "auth[0].signed",
            "auth[0].signature",
            "auth[0].timestamp",
            "event.type",
            "event.data.recipient",
            "events[0].bounce"
        ],
        "{problems:#?}"
    );
    let unknown = compile::from_toml("name = \"acme\"\ncolour = 1\n[event]\ntype = \"/e\"\n", false).unwrap_err();
    assert!(unknown[0].message.contains("colour"), "{unknown:?}");
    assert_eq!(unknown[0].key, "line 2");
}

#[test]
fn user_definitions_load_from_directories() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("acme.toml"),
        r#"
name = "acme"
[[auth]]
type = "hmac"
algorithm = "sha512"
encoding = "base64url"
signature = { header = "X-Acme-Signature" }
signature_prefix = "sha512="
timestamp = { header = "X-Acme-Time" }
signed = "{timestamp}.{body}"
tolerance = "2m"
[event]
id = "/uuid"
type = "/kind"
[[events]]
name = "mail.bounced"
type = "email.bounced"
bounce = "hard"
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sendgrid.toml"),
        "name = \"sendgrid\"\n[[auth]]\ntype = \"basic\"\n[event]\ntype = \"/e\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a definition").unwrap();
    let problems = Catalogue::load(&[dir.path().to_owned()]).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].to_string().contains("sendgrid.toml: name: `sendgrid` is already defined by a built-in provider"),
        "{}",
        problems[0]
    );
    std::fs::remove_file(dir.path().join("sendgrid.toml")).unwrap();
    let catalogue = Catalogue::load(&[dir.path().to_owned()]).unwrap();
    let acme = catalogue.get("acme").unwrap();
    assert!(!acme.builtin);
    assert_eq!(acme.path.as_deref(), Some(dir.path().join("acme.toml").as_path()));
    assert_eq!(acme.event_types(), ["email.bounced"]);
}

/// A built-in provider and its definition in `examples/providers`: every
/// documented event's sample, signed by the built-in's signer, verifies
/// with the definition and gives the same event but for `provider`.
fn same_events(
    twin: &str,
    provider: &crate::Provider,
    events: &[&str],
    settings: VerifierSettings,
    signer: &crate::samples::Signer,
) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/providers");
    let catalogue = Catalogue::load(&[dir]).unwrap();
    let definition = catalogue.get(twin).unwrap().clone();
    let verifier = Verifier::new(definition.clone(), &settings).unwrap();
    let now = Utc::now();
    for (n, event) in events.iter().enumerate() {
        let body = crate::samples::body(provider, event, n as u64, now);
        let (name, value) = signer.header(&body, now);
        let h = headers(&[(name.to_owned(), value)]);
        let request = Request { headers: &h, body: &body, query: None };
        assert!(verifier.verify(&request, now).is_ok(), "{twin} {event}: the built-in's signature verifies");
        let declared = extract::normalize(&definition, &request, &meta(), now).unwrap().remove(0);
        let built_in = crate::normalize(provider, &body, &meta(), now).unwrap();
        let mut declared: Value = serde_json::from_slice(&declared.to_json()).unwrap();
        let built_in: Value = serde_json::from_slice(&built_in.to_json()).unwrap();
        assert_eq!(declared["provider"], twin);
        declared["provider"] = provider.as_str().into();
        assert_eq!(declared, built_in, "{twin} {event}");
    }
}

#[test]
fn the_example_definitions_give_the_built_in_events() {
    let secret = crate::HmacSecret::new(b"mailpipe-secret".to_vec());
    same_events(
        "mailpipe-declarative",
        &crate::Provider::Mailpipe,
        crate::mailpipe::EVENTS,
        VerifierSettings { secrets: vec!["mailpipe-secret".into()], listed_secrets: 1, ..VerifierSettings::default() },
        &crate::samples::Signer::Mailpipe(secret),
    );
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    same_events(
        "mailpace-declarative",
        &crate::Provider::MailPace,
        crate::mailpace::EVENTS,
        VerifierSettings {
            public_keys: vec![STANDARD.encode(key.verifying_key().to_bytes())],
            listed_public_keys: 1,
            ..VerifierSettings::default()
        },
        &crate::samples::Signer::MailPace(Box::new(key)),
    );
}

/// A user definition with `auth` and the credential that signs for it.
fn custom(auth: &str) -> Definition {
    let text = format!(
        "name = \"custom\"\nsample = '{{\"kind\": \"sent\", \"id\": \"1\", \"to\": \"ada@example.com\"}}'\n{auth}\n[event]\nid = \"/id\"\ntype = \"/kind\"\n[event.data]\nto = \"/to\"\n[[events]]\nname = \"sent\"\ntype = \"email.delivered\"\n"
    );
    compile::from_toml(&text, false).unwrap_or_else(|p| panic!("{p:#?}"))
}

fn round_trip(
    definition: Definition,
    settings: &VerifierSettings,
    credential: sample::Credential,
) -> Result<(), String> {
    let definition = Arc::new(definition);
    let f = Fixture {
        verifier: Verifier::new(definition.clone(), settings).map_err(|p| format!("{p:?}"))?,
        signer: DefinedSigner::new(definition.clone(), credential, None),
        definition,
    };
    let now = Utc::now();
    let events = check(&f, &f.signer.request(vec![f.signer.element("sent", 1, now).unwrap()], 1, now))?;
    assert_eq!(events[0].ty, "email.delivered");
    Ok(())
}

#[test]
fn every_method_of_the_format_round_trips() {
    let secrets = VerifierSettings { secrets: vec!["k3y".into()], listed_secrets: 1, ..Default::default() };
    for (algorithm, encoding) in [("sha1", "hex"), ("sha256", "base64"), ("sha512", "base64url")] {
        let auth = format!(
            "[[auth]]\ntype = \"hmac\"\nalgorithm = \"{algorithm}\"\nencoding = \"{encoding}\"\nsignature = {{ query = \"sig\" }}\nsigned = \"{{body}}\"\n"
        );
        round_trip(custom(&auth), &secrets, sample::Credential::Secret("k3y".into())).unwrap();
        let wrong = round_trip(custom(&auth), &secrets, sample::Credential::Secret("other".into()));
        assert_eq!(wrong.unwrap_err(), "invalid_signature", "{algorithm}");
    }
    // Stripe-style: `t=…,v1=…` in one header; a second v1 (a rotation) may be wrong.
    let stripe = "[[auth]]\ntype = \"hmac\"\nsignature = { header = \"Stripe-Signature\", key = \"v1\" }\ntimestamp = { header = \"Stripe-Signature\", key = \"t\" }\nsigned = \"{timestamp}.{body}\"\ntolerance = \"5m\"\n";
    round_trip(custom(stripe), &secrets, sample::Credential::Secret("k3y".into())).unwrap();
    let definition = Arc::new(custom(stripe));
    let signer = DefinedSigner::new(definition.clone(), sample::Credential::Secret("k3y".into()), None);
    let now = Utc::now();
    let mut request = signer.request(vec![signer.element("sent", 1, now).unwrap()], 1, now);
    assert!(request.headers[0].1.starts_with("t="), "{:?}", request.headers);
    request.headers[0].1 = request.headers[0].1.replacen(",v1=", ",v1=00ff,v1=", 1);
    let f = Fixture { verifier: Verifier::new(definition.clone(), &secrets).unwrap(), signer, definition };
    assert!(check(&f, &request).is_ok(), "{:?}", request.headers);
    // A token in a query parameter.
    let token = "[[auth]]\ntype = \"token\"\ntoken = { query = \"token\" }\n";
    round_trip(custom(token), &secrets, sample::Credential::Secret("k3y".into())).unwrap();
    assert_eq!(
        round_trip(custom(token), &secrets, sample::Credential::Secret("nope".into())).unwrap_err(),
        "invalid_credentials"
    );
    // ECDSA with raw r||s signatures, the key as a PEM.
    let (pkcs8, public) = sample::p256_keypair();
    let pem = format!("-----BEGIN PUBLIC KEY-----\n{public}\n-----END PUBLIC KEY-----\n");
    let keys = VerifierSettings { public_keys: vec![pem], listed_public_keys: 1, ..Default::default() };
    let ecdsa = "[[auth]]\ntype = \"ecdsa_p256\"\nsignature_format = \"raw\"\nsignature = { header = \"X-Sig\" }\nsigned = \"{body}\"\n";
    round_trip(custom(ecdsa), &keys, sample::Credential::EcdsaPkcs8(pkcs8)).unwrap();
    // Ed25519 over a timestamp and the body.
    let seed = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let ed = VerifierSettings {
        public_keys: vec![STANDARD.encode(seed.verifying_key().to_bytes())],
        listed_public_keys: 1,
        ..Default::default()
    };
    let ed25519 = "[[auth]]\ntype = \"ed25519\"\nsignature = { header = \"X-Sig\" }\ntimestamp = { header = \"X-Time\" }\nsigned = \"{timestamp}:{body}\"\ntolerance = \"1m\"\n";
    round_trip(custom(ed25519), &ed, sample::Credential::Ed25519(Box::new(seed))).unwrap();
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
    assert_eq!(
        round_trip(custom(ed25519), &ed, sample::Credential::Ed25519(Box::new(stranger))).unwrap_err(),
        "invalid_signature"
    );
}
