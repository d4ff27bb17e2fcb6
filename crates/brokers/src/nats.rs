//! `nats-server` with JetStream, as a process.

use std::time::{Duration, Instant};

/// A `nats-server -js` on a free loopback port with a temporary store,
/// killed on drop. It can be stopped and started again on the same port and
/// store (a broker outage).
#[derive(Debug)]
pub struct NatsServer {
    child: Option<std::process::Child>,
    pub port: u16,
    store: std::path::PathBuf,
    log: Option<std::path::PathBuf>,
    /// The temporary store, removed on drop; `None` for a store the caller keeps.
    _temporary: Option<tempfile::TempDir>,
}

impl NatsServer {
    /// Starts one and waits until it accepts connections.
    ///
    /// # Panics
    /// When `nats-server` is missing (scripts/setup installs it) or does not start.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Self {
            child: None,
            port: crate::free_port(),
            store: dir.path().to_owned(),
            log: None,
            _temporary: Some(dir),
        };
        server.resume();
        server
    }

    /// Starts one whose store and log the caller keeps (for a post-mortem).
    ///
    /// # Panics
    /// As [`NatsServer::start`].
    pub fn start_keeping(store: &std::path::Path, log: &std::path::Path) -> Self {
        let mut server = Self {
            child: None,
            port: crate::free_port(),
            store: store.to_owned(),
            log: Some(log.to_owned()),
            _temporary: None,
        };
        server.resume();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the process again on the same port and store.
    ///
    /// # Panics
    /// When it does not start.
    pub fn resume(&mut self) {
        // Debian installs it in /usr/sbin, which not every PATH has.
        let binary = if std::path::Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server"
        } else {
            "nats-server"
        };
        let mut command = std::process::Command::new(binary);
        command.args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"]).arg(&self.store);
        if let Some(log) = &self.log {
            command.arg("-l").arg(log);
        }
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server is installed (scripts/setup installs Debian's nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process (SIGKILL): the broker goes away.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
