//! The harness the end-to-end tests share: a `hookbridge run` process with
//! the addresses it bound, its config, the CLI, signed webhooks, signals.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use hookbridge_testkit::{config_toml, keys};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_hookbridge");

/// A running `hookbridge run` and the addresses it bound.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) webhooks: SocketAddr,
    pub(crate) admin: SocketAddr,
    /// The streams listener, when `[streams]` is configured.
    pub(crate) streams: Option<SocketAddr>,
}

impl Running {
    /// `hookbridge run` (ingress and relay in one process).
    pub(crate) fn start(config: &Path) -> Self {
        Self::start_as("run", config)
    }

    /// `hookbridge VERB` (`run` or `ingress`: a process with a webhook
    /// listener). Its log is echoed when `HB_TEST_LOG` is set (to `1`, or to
    /// a `RUST_LOG` filter such as `info,hookbridge_bus=debug`).
    pub(crate) fn start_as(verb: &str, config: &Path) -> Self {
        let mut child = Command::new(BIN)
            .args([verb, "--config"])
            .arg(config)
            .env(
                "RUST_LOG",
                std::env::var("HB_TEST_LOG").ok().filter(|l| l.contains('=')).unwrap_or_else(|| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hookbridge starts");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let echo = std::env::var_os("HB_TEST_LOG").is_some();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("{line}");
                }
                let field = |name: &str| {
                    line.split_whitespace().find_map(|f| f.strip_prefix(name)).map(|a| a.parse::<SocketAddr>().unwrap())
                };
                if line.contains("hookbridge listening") {
                    let streams = line
                        .split_whitespace()
                        .find_map(|f| f.strip_prefix("streams="))
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                    let _ = tx.send((field("webhooks=").unwrap(), field("admin=").unwrap(), streams));
                }
            }
        });
        let (webhooks, admin, streams) =
            rx.recv_timeout(Duration::from_secs(30)).expect("hookbridge reports its addresses");
        Self { child, webhooks, admin, streams }
    }

    pub(crate) fn url(&self, source: &str) -> String {
        format!("http://{}/webhooks/{source}", self.webhooks)
    }

    /// The admin API's JSON answer to `method path` (with `body`), with the token.
    pub(crate) async fn admin_json(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let mut request =
            client.request(method, format!("http://{}{path}", self.admin)).bearer_auth(hookbridge_testkit::ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap().json().await.unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn write_config(dir: &Path) -> std::path::PathBuf {
    write_config_with(dir, "")
}

/// The test config with the admin token and `extra` (e.g. subscribers) appended.
pub(crate) fn write_config_with(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("hookbridge.toml");
    let text = format!("{}token = \"{}\"\n{extra}", config_toml(&dir.join("bus")), hookbridge_testkit::ADMIN_TOKEN);
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) fn subscriber_toml(name: &str, url: &str, extra: &str) -> String {
    format!("[[relay.subscribers]]\nname = \"{name}\"\nurl = \"{url}\"\nevents = [\"*\"]\n{extra}\n")
}

/// Runs a CLI command against a running hookbridge's admin API.
pub(crate) fn cli(config: &Path, admin: SocketAddr, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .args(["--admin-url", &format!("http://{admin}")])
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

pub(crate) async fn send(client: &reqwest::Client, running: &Running, seq: u64) -> String {
    send_event(client, running, "email.sent", seq).await
}

/// Sends a signed Mailpipe `event`; the id of the accepted event.
pub(crate) async fn send_event(client: &reqwest::Client, running: &Running, event: &str, seq: u64) -> String {
    let (body, (name, sig)) = keys::signed(&keys::signer("mailpipe"), event, seq, Utc::now());
    let response = client.post(running.url("mailpipe")).header(name, sig).body(body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

pub(crate) fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// `[bus.nats]` for a test's own nats-server.
pub(crate) fn nats_bus(server: &hookbridge_brokers::NatsServer) -> String {
    format!("[bus.nats]\nurl = \"{}\"\n", server.url())
}

/// `[bus.kafka]` for a test's own Kafka-protocol broker: two partitions a
/// topic, new topics found within half a second.
pub(crate) fn kafka_bus(broker: &hookbridge_brokers::KafkaBroker) -> String {
    format!(
        "[bus.kafka]\nbrokers = [\"{}\"]\npartitions = 2\nreplication_factor = 1\nmetadata_refresh = \"500ms\"\n",
        broker.address()
    )
}

/// The test config on `backend` (`embedded`, `nats`, `kafka`), with its
/// `[bus.*]` table `bus` and `extra` appended.
pub(crate) fn write_config_on(dir: &Path, backend: &str, bus: &str, extra: &str) -> std::path::PathBuf {
    let config = write_config_with(dir, &format!("{bus}{extra}"));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("backend = \"embedded\"", &format!("backend = \"{backend}\""))).unwrap();
    config
}

/// The sum of the samples of the metrics whose line starts with `prefix`
/// (name and labels), read from `admin`'s /metrics.
pub(crate) async fn metric(admin: SocketAddr, prefix: &str) -> f64 {
    let text = reqwest::get(format!("http://{admin}/metrics")).await.unwrap().text().await.unwrap();
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Serves HTTPS on a loopback port with `config` (HTTP/1.1 and HTTP/2),
/// answering 200 to every request after showing it to `seen`; the URL of
/// its `/hooks`. A connection whose handshake fails is dropped.
pub(crate) async fn serve_tls(
    config: rustls::ServerConfig,
    seen: impl Fn(&hyper::Request<hyper::body::Incoming>) + Clone + Send + Sync + 'static,
) -> String {
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}/hooks", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    seen(&request);
                    async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Empty::<bytes::Bytes>::new(),
                        ))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    url
}
