//! How the relay reaches subscribers that want more than a URL: a client
//! certificate (mTLS) under a private CA, an OAuth2 client-credentials
//! token, an egress proxy. Real servers on loopback, certificates made by
//! the test; on the backend of `HB_TEST_BACKEND` like the other relay tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use hookbridge_testkit::TestApp;
use hookbridge_testkit::recorder::Recorder;

use crate::relay::wait_dead_letters;
use reqwest::Method;

const WAIT: Duration = Duration::from_secs(15);

/// A test CA and the leaf certificates it signs.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A leaf certificate: (certificate PEM, key PEM, certificate DER, key DER).
type Leaf = (String, String, rustls::pki_types::CertificateDer<'static>, Vec<u8>);

impl Ca {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "hookbridge test CA");
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        Self { issuer: rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap() }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn leaf(&self, name: &str, client: bool) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone(), key.serialize_der())
    }
}

/// An HTTPS subscriber on loopback that requires a client certificate
/// signed by `ca`; it counts the requests it answered.
async fn mtls_subscriber(ca: &Ca) -> (String, Arc<Mutex<usize>>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let (_, _, cert, key) = ca.leaf("127.0.0.1", false);
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()))
        .unwrap();
    let answered = Arc::new(Mutex::new(0));
    let count = answered.clone();
    // Only a client certificate of `ca` gets through the handshake.
    let url = crate::support::serve_tls(config, move |_| *count.lock().unwrap() += 1).await;
    (url, answered)
}

async fn metric(app: &TestApp, prefix: &str) -> f64 {
    let (_, text) = {
        let response = reqwest::get(format!("http://{}/metrics", app.admin_addr)).await.unwrap();
        (response.status(), response.text().await.unwrap())
    };
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_reaches_an_mtls_subscriber_and_none_does_not() {
    let ca = Ca::new();
    let (url, answered) = mtls_subscriber(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (cert, key, _, _) = ca.leaf("hookbridge-relay", true);
    let (ca_file, cert_file, key_file) =
        (path("ca.pem", &ca.pem()), path("client.pem", &cert), path("client.key", &key));
    // A certificate of another CA is refused like none.
    let (stranger_cert, stranger_key, _, _) = Ca::new().leaf("stranger", true);
    let (stranger_cert, stranger_key) = (path("stranger.pem", &stranger_cert), path("stranger.key", &stranger_key));
    let subscriber = |name: &str, tls: &str| {
        format!(
            "[[relay.subscribers]]\nname = \"{name}\"\nurl = \"{url}\"\nevents = [\"*\"]\nretry_schedule = [\"100ms\"]\ntls = {{ {tls} }}\n"
        )
    };
    let app = TestApp::spawn_relay(
        &[
            subscriber("mtls", &format!("ca = \"{ca_file}\", cert = \"{cert_file}\", key = \"file:{key_file}\"")),
            subscriber("anonymous", &format!("ca = \"{ca_file}\"")),
            subscriber(
                "stranger",
                &format!("ca = \"{ca_file}\", cert = \"{stranger_cert}\", key = \"{stranger_key}\""),
            ),
        ]
        .concat(),
    )
    .await;
    for n in 0..3 {
        app.send("mailpipe", "email.sent", n).await;
    }
    for name in ["anonymous", "stranger"] {
        let letters = wait_dead_letters(&app, name, 3).await;
        assert!(letters.iter().all(|l| l["last_status"].is_null()), "{name}: no answer without a trusted certificate");
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while *answered.lock().unwrap() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "mTLS deliveries did not arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*answered.lock().unwrap(), 3, "only the subscriber with the client certificate was answered");
    let (_, subs) = app.admin(Method::GET, "/admin/subscribers", None).await;
    let mtls = subs.as_array().unwrap().iter().find(|s| s["name"] == "mtls").unwrap();
    assert_eq!(mtls["dead_letters"], 0);
}

/// A token endpoint (client credentials, HTTP Basic) and the subscriber
/// that accepts only the token it issued last.
#[derive(Default)]
struct OAuth {
    issued: Mutex<u32>,
    /// `expires_in` of the tokens issued.
    lifetime: Mutex<u64>,
    /// The one token the subscriber accepts; `None`: the latest issued.
    valid: Mutex<Option<String>>,
    /// Tokens the subscriber was shown, and whether it accepted them.
    seen: Mutex<Vec<(String, bool)>>,
    /// Bodies of the token requests.
    forms: Mutex<Vec<String>>,
}

async fn token(State(oauth): State<Arc<OAuth>>, headers: HeaderMap, body: String) -> (StatusCode, String) {
    let basic = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    oauth.forms.lock().unwrap().push(body.clone());
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("relay:s3cret%2Fvalue"));
    if basic != expected {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_client","error_description":"bad credentials"}"#.into(),
        );
    }
    if !body.contains("grant_type=client_credentials") {
        return (StatusCode::BAD_REQUEST, r#"{"error":"unsupported_grant_type"}"#.into());
    }
    let n = {
        let mut issued = oauth.issued.lock().unwrap();
        *issued += 1;
        *issued
    };
    let lifetime = *oauth.lifetime.lock().unwrap();
    (StatusCode::OK, format!(r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":{lifetime}}}"#))
}

async fn protected(State(oauth): State<Arc<OAuth>>, headers: HeaderMap) -> StatusCode {
    let shown = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let valid = oauth.valid.lock().unwrap().clone().unwrap_or_else(|| format!("tok-{}", oauth.issued.lock().unwrap()));
    let ok = shown == format!("Bearer {valid}");
    oauth.seen.lock().unwrap().push((shown, ok));
    if ok { StatusCode::OK } else { StatusCode::UNAUTHORIZED }
}

async fn oauth_servers() -> (Arc<OAuth>, String) {
    let oauth = Arc::new(OAuth { lifetime: Mutex::new(3600), ..OAuth::default() });
    let app = axum::Router::new()
        .route("/token", axum::routing::post(token))
        .route("/hooks", axum::routing::post(protected))
        .with_state(oauth.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (oauth, base)
}

async fn wait_seen(oauth: &OAuth, n: usize) -> Vec<(String, bool)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = oauth.seen.lock().unwrap().clone();
        if seen.len() >= n {
            return seen;
        }
        assert!(tokio::time::Instant::now() < deadline, "expected {n} deliveries, got {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_tokens_are_cached_refreshed_on_a_401_and_before_expiry() {
    let (oauth, base) = oauth_servers().await;
    let auth = |secret: &str| {
        format!(
            "auth = {{ type = \"oauth2\", token_url = \"{base}/token\", client_id = \"relay\", client_secret = \"{secret}\", scopes = [\"deliveries:write\", \"audit\"] }}"
        )
    };
    let subscriber = |name: &str, secret: &str| {
        format!(
            "[[relay.subscribers]]\nname = \"{name}\"\nurl = \"{base}/hooks\"\nevents = [\"*\"]\nmax_in_flight = 1\nretry_schedule = [\"100ms\"]\n{}\n",
            auth(secret)
        )
    };
    let app = TestApp::spawn_relay(&subscriber("oauth", "s3cret/value")).await;

    // One token for several deliveries.
    for n in 0..3 {
        app.send("mailpipe", "email.sent", n).await;
    }
    let seen = wait_seen(&oauth, 3).await;
    assert!(seen.iter().all(|(token, ok)| token == "Bearer tok-1" && *ok), "{seen:?}");
    assert_eq!(*oauth.issued.lock().unwrap(), 1, "the token is cached");
    let form = oauth.forms.lock().unwrap()[0].clone();
    assert!(form.contains("scope=deliveries%3Awrite+audit"), "{form}");
    assert!(!form.contains("s3cret"), "HTTP Basic, not the body: {form}");

    // The subscriber revokes it: the 401 gets one new token and the event
    // is delivered in the same attempt.
    *oauth.valid.lock().unwrap() = Some("tok-2".into());
    app.send("mailpipe", "email.sent", 3).await;
    let seen = wait_seen(&oauth, 5).await;
    assert_eq!(seen[3], ("Bearer tok-1".into(), false));
    assert_eq!(seen[4], ("Bearer tok-2".into(), true));
    assert_eq!(*oauth.issued.lock().unwrap(), 2);
    *oauth.valid.lock().unwrap() = None;

    // A token about to expire is replaced before it is used: tok-3 lives 2 s
    // and is fetched again after 1 s, without a 401.
    *oauth.lifetime.lock().unwrap() = 2;
    *oauth.valid.lock().unwrap() = Some("tok-3".into());
    app.send("mailpipe", "email.sent", 4).await;
    let seen = wait_seen(&oauth, 7).await;
    assert_eq!(seen[5], ("Bearer tok-2".into(), false));
    assert_eq!(seen[6], ("Bearer tok-3".into(), true));
    *oauth.valid.lock().unwrap() = None;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    app.send("mailpipe", "email.sent", 5).await;
    let seen = wait_seen(&oauth, 8).await;
    assert_eq!(seen[7], ("Bearer tok-4".into(), true), "fetched before it expired, so never refused");
    assert_eq!(*oauth.issued.lock().unwrap(), 4);
    let issued = metric(&app, "hookbridge_relay_oauth2_token_requests_total{outcome=\"issued\",subscriber=\"oauth\"}");
    assert_eq!(issued.await, 4.0);
    let (_, letters) = app.admin(Method::GET, "/admin/subscribers/oauth/dead-letters", None).await;
    assert_eq!(letters.as_array().map(Vec::len), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_fails_its_deliveries_without_showing_its_secret() {
    let (oauth, base) = oauth_servers().await;
    let app = TestApp::spawn_relay(&format!(
        "[[relay.subscribers]]\nname = \"wrong\"\nurl = \"{base}/hooks\"\nevents = [\"*\"]\nretry_schedule = [\"100ms\"]\n\
         auth = {{ type = \"oauth2\", token_url = \"{base}/token\", client_id = \"relay\", client_secret = \"not-the-secret\" }}\n"
    ))
    .await;
    app.send("mailpipe", "email.sent", 1).await;
    let letters = wait_dead_letters(&app, "wrong", 1).await;
    let error = letters[0]["last_error"].as_str().unwrap();
    assert!(error.contains("the token endpoint answered 401: invalid_client (bad credentials)"), "{error}");
    assert!(!error.contains("not-the-secret"));
    assert!(oauth.seen.lock().unwrap().is_empty(), "nothing reaches the subscriber without a token");
    let failed = metric(&app, "hookbridge_relay_oauth2_token_requests_total{outcome=\"failed\",subscriber=\"wrong\"}");
    assert_eq!(failed.await, 2.0, "two attempts, a token request each");
}

/// A forward HTTP proxy on loopback: records each request's target and
/// `Proxy-Authorization`, and forwards it.
async fn forward_proxy() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (record, client) = (record.clone(), client.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let (record, client) = (record.clone(), client.clone());
                    async move {
                        use http_body_util::BodyExt;
                        let (parts, body) = request.into_parts();
                        let auth = parts
                            .headers
                            .get("proxy-authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        record.lock().unwrap().push((parts.uri.to_string(), auth));
                        let body = body.collect().await.unwrap().to_bytes();
                        let mut forward = client.request(parts.method, parts.uri.to_string()).body(body);
                        for (name, value) in &parts.headers {
                            if name != "proxy-authorization" && name != "host" {
                                forward = forward.header(name, value);
                            }
                        }
                        let status = forward.send().await.map_or(502, |r| r.status().as_u16());
                        let mut response = hyper::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (format!("http://relay:pr0xy@{address}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_go_through_the_configured_proxy() {
    let recorder = Recorder::spawn().await;
    let (proxy, seen) = forward_proxy().await;
    let app = TestApp::spawn_relay(&format!(
        "[[relay.subscribers]]\nname = \"egress\"\nurl = \"{}\"\nevents = [\"*\"]\nproxy = \"{proxy}\"\n",
        recorder.url()
    ))
    .await;
    let ids = [app.send("mailpipe", "email.sent", 1).await, app.send("mailpipe", "email.bounced", 2).await];
    let delivered = recorder.wait_for(2, WAIT).await;
    let mut got: Vec<_> = delivered.iter().map(|r| r.event_id()).collect();
    got.sort();
    let mut want = ids.to_vec();
    want.sort();
    assert_eq!(got, want);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "both went through the proxy: {seen:?}");
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("relay:pr0xy"));
    for (target, auth) in &seen {
        assert_eq!(*target, recorder.url());
        assert_eq!(*auth, basic);
    }
    assert!(
        delivered.iter().all(|r| r.header("proxy-authorization").is_empty()),
        "the credentials stay with the proxy"
    );
}
