//! The ingress's own settings: what `hookbridge-config` builds from the
//! `[ingress]` table and hands over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hookbridge_providers::{Provider, SourceMeta, Verifier};

#[derive(Debug)]
pub struct IngressSettings {
    pub listen: SocketAddr,
    /// Connections, header size and timeouts, TLS.
    pub listener: crate::serve::ListenerSettings,
    pub max_body_bytes: usize,
    /// From the end of the headers to the last byte of the body; slower is
    /// answered 408.
    pub body_read_timeout: Duration,
    /// Webhooks being read, verified or published at once; beyond it the
    /// next is answered 503 with `Retry-After` before its body is read.
    pub max_in_flight: usize,
    /// How long a request waits for the bus to acknowledge before it is
    /// answered 503.
    pub publish_timeout: Duration,
    /// On SIGTERM, how long requests in flight may take to finish.
    pub shutdown_grace: Duration,
    pub sources: Vec<Source>,
}

/// One configured webhook source: `POST /webhooks/{name}`.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub provider: Provider,
    /// Networks requests may come from (empty: any).
    pub allowed_ips: Vec<ipnet::IpNet>,
    pub verifier: Arc<Verifier>,
    pub meta: SourceMeta,
}

impl Source {
    /// Whether `name` may name a source: 1-64 characters of a-z, 0-9, `-` and `_`
    /// (it is a URL path segment and a metric label).
    pub fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    }
}
