//! A TCP proxy that cuts a broker off the network and restores it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A TCP proxy in front of the Kafka broker, which advertises the proxy's
/// address: cutting it closes every connection and refuses new ones, the
/// broker unreachable as a network fault makes it; restoring listens again.
#[derive(Debug, Clone)]
pub struct Proxy {
    port: u16,
    target: u16,
    cut: Arc<Mutex<CancellationToken>>,
}

impl Proxy {
    pub async fn start(port: u16, target: u16) -> anyhow::Result<Self> {
        let cut = CancellationToken::new();
        cut.cancel();
        let proxy = Self { port, target, cut: Arc::new(Mutex::new(cut)) };
        proxy.restore().await;
        Ok(proxy)
    }

    pub fn cut(&self) {
        self.cut.lock().expect("proxy lock").cancel();
    }

    /// Listens again, if cut.
    pub async fn restore(&self) {
        let token = {
            let mut cut = self.cut.lock().expect("proxy lock");
            if !cut.is_cancelled() {
                return;
            }
            *cut = CancellationToken::new();
            cut.clone()
        };
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let target = self.target;
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else { continue };
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { return };
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
    }
}
