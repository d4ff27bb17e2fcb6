//! TLS on the webhook and admin listeners of the real binary, checked by a
//! client that verifies the certificate; reloads on SIGHUP and on a change
//! of the files; and the admin listener's unauthenticated surface.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use hookbridge_testkit::keys;

use crate::support::{BIN, Running, write_config_with};

/// A self-signed certificate for `127.0.0.1` and `localhost`: (cert, key) PEM.
fn certificate() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write_pair(dir: &Path, (cert, key): &(String, String)) {
    // Written to the side and renamed: a reload never sees half a file.
    std::fs::write(dir.join("cert.tmp"), cert).unwrap();
    std::fs::write(dir.join("key.tmp"), key).unwrap();
    std::fs::rename(dir.join("key.tmp"), dir.join("key.pem")).unwrap();
    std::fs::rename(dir.join("cert.tmp"), dir.join("cert.pem")).unwrap();
}

/// A client that trusts only `cert`.
fn client_trusting(cert: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn post_webhook(client: &reqwest::Client, url: &str, seq: u64) -> reqwest::Result<u16> {
    let (body, (name, sig)) = keys::signed(&keys::signer("mailpipe"), "email.sent", seq, Utc::now());
    Ok(client.post(url).header(name, sig).body(body).send().await?.status().as_u16())
}

async fn until_accepted(cert: &str, url: &str, within: Duration) -> Duration {
    let client = client_trusting(cert);
    let started = Instant::now();
    let mut seq = 1000;
    loop {
        seq += 1;
        if let Ok(200) = post_webhook(&client, url, seq).await {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "the new certificate was not served within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn both_listeners_serve_tls_and_reload_on_sighup_and_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let first = certificate();
    write_pair(dir.path(), &first);
    let tls = format!(
        "[ingress.tls]\ncert_file = \"{0}/cert.pem\"\nkey_file = \"{0}/key.pem\"\n[admin.tls]\ncert_file = \"{0}/cert.pem\"\nkey_file = \"{0}/key.pem\"\n",
        dir.path().display()
    );
    let config = write_config_with(dir.path(), &tls);
    let running = Running::start(&config);
    let url = format!("https://{}/webhooks/mailpipe", running.webhooks);

    let client = client_trusting(&first.0);
    assert_eq!(post_webhook(&client, &url, 1).await.unwrap(), 200);
    let ready = client.get(format!("https://{}/readyz", running.admin)).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    // A client that does not trust the certificate is refused by its own check;
    // plain HTTP gets no answer from a TLS listener.
    let stranger = client_trusting(&certificate().0);
    assert!(post_webhook(&stranger, &url, 2).await.is_err());
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    assert!(post_webhook(&plain, &format!("http://{}/webhooks/mailpipe", running.webhooks), 3).await.is_err());

    // SIGHUP: the new pair is served at once.
    let second = certificate();
    write_pair(dir.path(), &second);
    let status = std::process::Command::new("kill").args(["-HUP", &running.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    until_accepted(&second.0, &url, Duration::from_secs(3)).await;
    assert!(post_webhook(&client_trusting(&first.0), &url, 4).await.is_err(), "the old certificate is gone");

    // A broken pair is refused and the served one stays.
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let status = std::process::Command::new("kill").args(["-HUP", &running.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(post_webhook(&client_trusting(&second.0), &url, 5).await.unwrap(), 200);

    // Without a signal: a change of the files is picked up.
    let third = certificate();
    write_pair(dir.path(), &third);
    until_accepted(&third.0, &url, Duration::from_secs(12)).await;
}

#[tokio::test]
async fn check_reports_a_missing_or_mismatched_tls_pair() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = certificate();
    let (_, other_key) = certificate();
    write_pair(dir.path(), &(cert, other_key));
    let tls = format!(
        "[ingress.tls]\ncert_file = \"{0}/cert.pem\"\nkey_file = \"{0}/key.pem\"\n[admin.tls]\ncert_file = \"{0}/missing.pem\"\nkey_file = \"{0}/key.pem\"\n",
        dir.path().display()
    );
    let config = write_config_with(dir.path(), &tls);
    let out = std::process::Command::new(BIN).args(["check", "--config"]).arg(&config).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("ingress.tls") && text.contains("does not match"), "{text}");
    assert!(text.contains("admin.tls") && text.contains("missing.pem"), "{text}");
}

#[tokio::test]
async fn the_admin_listener_answers_only_probes_and_metrics_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), &crate::support::subscriber_toml("sink", "http://127.0.0.1:9/hook", ""));
    let running = Running::start(&config);
    let client = reqwest::Client::new();
    let get = |path: &str| {
        let url = format!("http://{}{path}", running.admin);
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/healthz").await, 200);
    assert_eq!(get("/readyz").await, 200);
    assert_eq!(get("/metrics").await, 200);
    for path in ["/admin/subscribers", "/admin/subscribers/sink/dead-letters", "/admin/replays/x"] {
        assert_eq!(get(path).await, 401, "{path} needs the token");
    }
    let wrong = client
        .get(format!("http://{}/admin/subscribers", running.admin))
        .bearer_auth("not-the-token-but-long-enough")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    for path in ["/", "/webhooks/mailpipe", "/debug/pprof"] {
        assert_eq!(get(path).await, 404, "{path} is not served");
    }
    // The console shows nothing without a session: it sends the browser to
    // its sign-in page (docs/console.md).
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in ["/console/", "/console/subscribers", "/console/events"] {
        let answer = no_redirects.get(format!("http://{}{path}", running.admin)).send().await.unwrap();
        assert_eq!(answer.status().as_u16(), 303, "{path} without a session");
        assert_eq!(answer.headers()["location"], "/console/login");
    }
    let post =
        no_redirects.post(format!("http://{}/console/subscribers/sink/disable", running.admin)).send().await.unwrap();
    assert_eq!(post.status().as_u16(), 401, "an action without a session");
}
