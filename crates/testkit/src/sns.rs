//! A stand-in for Amazon SNS on loopback: a test CA, the HTTPS server that
//! serves the signing certificate and answers subscription confirmations,
//! and SNS messages signed with SignatureVersion 1 (RSA-SHA1, by the
//! `openssl` command: ring does not sign SHA1) or 2 (RSA-SHA256).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hookbridge_providers::defined::sns::Envelope;

/// The topic the test SES source accepts.
pub const TOPIC_ARN: &str = "arn:aws:sns:eu-west-1:123456789012:hookbridge-test";
/// The certificate host pattern of the test SES source.
pub const CERT_HOST: &str = r"^127\.0\.0\.1$";
/// The RSA key the test certificate certifies (test material only).
pub const SIGNING_KEY_PEM: &str = include_str!("sns-test-key.pem");

/// The test PKI, made once per process.
#[derive(Debug)]
pub struct Pki {
    /// The CA's certificate, written to a file (`signing_cert_ca`).
    pub ca_path: PathBuf,
    pub signing_cert_pem: String,
    server_cert: Vec<u8>,
    server_key: Vec<u8>,
    /// The RSA key, PEM, in a file (for `send-sample --key file:`).
    pub key_path: PathBuf,
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "hookbridge test SNS CA");
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let server = params.signed_by(&server_key, &ca).unwrap();
        let signing_key = rcgen::KeyPair::from_pem(SIGNING_KEY_PEM).expect("the test RSA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "sns.eu-west-1.amazonaws.com");
        let signing = params.signed_by(&signing_key, &ca).unwrap();
        let dir = std::env::temp_dir().join(format!("hookbridge-sns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        let key_path = dir.join("signing-key.pem");
        std::fs::write(&key_path, SIGNING_KEY_PEM).unwrap();
        Pki {
            ca_path,
            signing_cert_pem: signing.pem(),
            server_cert: server.der().to_vec(),
            server_key: server_key.serialize_der(),
            key_path,
        }
    })
}

/// The PKCS#8 DER of the signing key.
pub fn signing_key_pkcs8() -> Vec<u8> {
    let body: String = SIGNING_KEY_PEM.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

/// The loopback SNS: serves `/cert.pem` and `/confirm`, counting each.
#[derive(Debug, Clone)]
pub struct SnsServer {
    /// `https://127.0.0.1:<port>`
    pub base: String,
    pub cert_fetches: Arc<AtomicUsize>,
    pub confirmations: Arc<AtomicUsize>,
    /// The last confirmation's query.
    pub confirmed: Arc<Mutex<Option<String>>>,
}

static CERT_URL: Mutex<Option<String>> = Mutex::new(None);

/// The certificate URL of the server this process started last.
pub fn cert_url() -> String {
    CERT_URL.lock().unwrap().clone().expect("start the SNS server first (sns::serve)")
}

/// Starts the loopback SNS on this runtime.
pub async fn serve() -> SnsServer {
    use hyper::body::Incoming;
    let pki = pki();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(pki.server_cert.clone())],
            rustls::pki_types::PrivateKeyDer::Pkcs8(pki.server_key.clone().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = SnsServer {
        base: format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port()),
        cert_fetches: Arc::default(),
        confirmations: Arc::default(),
        confirmed: Arc::default(),
    };
    *CERT_URL.lock().unwrap() = Some(format!("{}/cert.pem", server.base));
    let state = server.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, state) = (acceptor.clone(), state.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                    let state = state.clone();
                    async move {
                        let (status, body) = match request.uri().path() {
                            "/cert.pem" => {
                                state.cert_fetches.fetch_add(1, Ordering::SeqCst);
                                (200, self::pki().signing_cert_pem.clone())
                            }
                            "/confirm" => {
                                state.confirmations.fetch_add(1, Ordering::SeqCst);
                                *state.confirmed.lock().unwrap() = request.uri().query().map(str::to_owned);
                                (200, "<ConfirmSubscriptionResponse/>".to_owned())
                            }
                            _ => (404, String::new()),
                        };
                        let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    server
}

/// Signs `text` with the test key: SHA1 through `openssl`, SHA256 through ring.
pub fn sign(text: &[u8], version: &str) -> Vec<u8> {
    if version == "2" {
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&signing_key_pkcs8()).unwrap();
        let mut sig = vec![0; pair.public().modulus_len()];
        pair.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), text, &mut sig).unwrap();
        return sig;
    }
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-sha1", "-sign"])
        .arg(&pki().key_path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the openssl command (scripts/setup installs it)");
    child.stdin.take().unwrap().write_all(text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst -sha1 -sign failed");
    out.stdout
}

/// An SNS message of any type, signed (`version` "1" or "2").
pub fn message(mut envelope: Envelope, version: &str) -> Vec<u8> {
    envelope.signature_version = version.to_owned();
    envelope.signature = STANDARD.encode(sign(envelope.string_to_sign().as_bytes(), version));
    serde_json::to_vec(&envelope.to_json()).unwrap()
}

/// A Notification carrying `message` (the SES event JSON).
pub fn notification(message: &str, id: &str, now: DateTime<Utc>) -> Envelope {
    Envelope {
        kind: "Notification".into(),
        message_id: id.into(),
        topic_arn: TOPIC_ARN.into(),
        subject: None,
        message: message.into(),
        timestamp: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        signature_version: String::new(),
        signature: String::new(),
        signing_cert_url: cert_url(),
        subscribe_url: None,
        token: None,
    }
}
