//! Every way a webhook can be wrong gets its precise status and reason, and
//! nothing is published.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{Duration, Utc};
use hookbridge_providers::samples::Signer;
use hookbridge_testkit::{TestApp, keys};

async fn expect(app: &TestApp, source: &str, body: Vec<u8>, headers: &[(&str, String)], status: u16, code: &str) {
    let (got, answer) = app.post(source, body, headers).await;
    assert_eq!((got, answer["error"].as_str()), (status, Some(code)), "{source}: {answer}");
    assert!(!answer["message"].as_str().unwrap_or_default().is_empty(), "a message says what was wrong");
}

fn flip_byte(mut body: Vec<u8>) -> Vec<u8> {
    let i = body.len() / 2;
    body[i] ^= 0x01;
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_401_and_nothing_is_published() {
    let app = TestApp::spawn().await;
    let now = Utc::now();
    for (source, signer) in keys::sources() {
        let event = keys::events(signer.provider())[0];
        let (body, (name, good)) = keys::signed(&signer, event, 1, now);
        let (other_body, (_, other_sig)) = keys::signed(&signer, event, 2, now);
        assert_ne!(body, other_body);

        expect(&app, source, body.clone(), &[], 401, "missing_signature").await;
        expect(&app, source, flip_byte(body.clone()), &[(name, good.clone())], 401, "invalid_signature").await;
        expect(&app, source, body.clone(), &[(name, other_sig.clone())], 401, "invalid_signature").await;
        let wrong_key = match &signer {
            Signer::MailPace(_) => Signer::MailPace(Box::new(ed25519_dalek::SigningKey::from_bytes(&[0x33; 32]))),
            Signer::Mailpipe(_) => Signer::Mailpipe(hookbridge_providers::HmacSecret::new(b"wrong".to_vec())),
            Signer::Whippy(_, scheme) => {
                Signer::Whippy(hookbridge_providers::HmacSecret::new(b"wrong".to_vec()), *scheme)
            }
        };
        expect(&app, source, body.clone(), &[wrong_key.header(&body, now)], 401, "invalid_signature").await;
        let truncated = good[..good.len() - 4].to_owned();
        expect(&app, source, body.clone(), &[(name, truncated)], 401, "malformed_signature").await;
        let garbage = if source == "whippy-timestamped" {
            format!("t={},v1=!!!", now.timestamp())
        } else {
            "!!not-an-encoding!!".to_owned()
        };
        expect(&app, source, body.clone(), &[(name, garbage)], 401, "malformed_signature").await;
    }
    assert!(app.published().await.is_empty(), "nothing published");
}

#[tokio::test]
async fn a_mailpace_signature_must_be_strict_base64_of_64_bytes() {
    let app = TestApp::spawn().await;
    let (body, (name, _)) = keys::signed(&keys::signer("mailpace"), "email.queued", 1, Utc::now());
    expect(&app, "mailpace", body.clone(), &[(name, STANDARD.encode([0u8; 63]))], 401, "malformed_signature").await;
    expect(&app, "mailpace", body, &[(name, STANDARD.encode([0u8; 64]))], 401, "invalid_signature").await;
    assert!(app.published().await.is_empty());
}

#[tokio::test]
async fn a_stale_timestamp_is_401() {
    let app = TestApp::spawn().await;
    let signer = keys::signer("whippy-timestamped");
    for offset in [Duration::minutes(-6), Duration::minutes(6)] {
        let (body, header) = keys::signed(&signer, "message.created", 1, Utc::now() + offset);
        expect(&app, "whippy-timestamped", body, &[header], 401, "stale_timestamp").await;
    }
    let (body, header) = keys::signed(&signer, "message.created", 1, Utc::now() - Duration::minutes(4));
    assert_eq!(app.post("whippy-timestamped", body, &[header]).await.0, 200, "inside the tolerance");
    assert_eq!(app.published().await.len(), 1);
}

#[tokio::test]
async fn bad_payloads_under_valid_signatures_are_400() {
    let app = TestApp::spawn().await;
    let now = Utc::now();
    for (source, signer) in keys::sources() {
        for (body, code) in [
            (b"{not json".to_vec(), "invalid_json"),
            (b"[1,2,3]".to_vec(), "invalid_payload"),
            (br#"{"event": "email.queued"}"#.to_vec(), "invalid_payload"),
            (br#"{"type": 3, "event": 3, "data": 1, "payload": 1}"#.to_vec(), "invalid_payload"),
            // Hostile shapes: nesting far past any parser's recursion
            // limit, and bytes that are not UTF-8.
            ("[".repeat(30_000).into_bytes(), "invalid_json"),
            (format!("{{\"a\":{}", "{\"a\":".repeat(12_000)).into_bytes(), "invalid_json"),
            (b"{\"event\": \"\xff\xfe\"}".to_vec(), "invalid_json"),
        ] {
            let header = signer.header(&body, now);
            expect(&app, source, body, &[header], 400, code).await;
        }
    }
    assert!(app.published().await.is_empty());
}

#[tokio::test]
async fn oversize_bodies_are_413_and_unknown_sources_404() {
    let app = TestApp::spawn().await;
    let signer = keys::signer("mailpipe");
    let mut body = keys::signed(&signer, "email.sent", 1, Utc::now()).0;
    body.truncate(body.len() - 1);
    body.extend(format!(r#","padding":"{}"}}"#, "x".repeat(70_000)).bytes());
    let header = signer.header(&body, Utc::now());
    expect(&app, "mailpipe", body, &[header], 413, "too_large").await;

    // Chunked, so no Content-Length announces it: cut at the limit.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "POST /webhooks/mailpipe HTTP/1.1\r\nhost: {}\r\ntransfer-encoding: chunked\r\n{}: 00\r\n\r\n",
            app.addr,
            signer.header(b"", Utc::now()).0
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        for _ in 0..100 {
            if stream.write_all(format!("400\r\n{}\r\n", " ".repeat(1024)).as_bytes()).await.is_err() {
                break; // answered and closed before the end: fine
            }
        }
        let _ = stream.write_all(b"0\r\n\r\n").await;
        let mut answer = vec![0u8; 512];
        let n = stream.read(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }

    let (body, header) = keys::signed(&signer, "email.sent", 2, Utc::now());
    expect(&app, "no-such-source", body, &[header], 404, "unknown_source").await;
    assert!(app.published().await.is_empty());
}

#[tokio::test]
async fn error_bodies_never_echo_secrets_or_payloads() {
    let app = TestApp::spawn().await;
    let (body, (name, _)) = keys::signed(&keys::signer("mailpipe"), "email.sent", 1, Utc::now());
    let response = app.client.post(app.url("mailpipe")).header(name, "00".repeat(32)).body(body).send().await.unwrap();
    let text = response.text().await.unwrap();
    assert!(!text.contains(keys::MAILPIPE_SECRET) && !text.contains("Invoice"), "{text}");
}
