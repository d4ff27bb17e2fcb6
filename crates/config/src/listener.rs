//! The listeners' limits and TLS: `[ingress]` and `[admin]`.

use std::time::Duration;

use hookbridge_ingress::serve::{ListenerSettings, TlsFiles};

use crate::Problems;
use crate::raw::{AdminConfig, IngressConfig, TlsConfig};

/// The webhook listener's settings, and what is wrong with them.
pub(crate) fn ingress(raw: &IngressConfig) -> (ListenerSettings, Problems) {
    let mut problems = Problems::new();
    let mut positive = |key: &str, value: Duration| {
        if value.is_zero() {
            problems.push((format!("ingress.{key}"), "must be greater than 0".into()));
        }
    };
    positive("header_read_timeout", raw.header_read_timeout);
    positive("idle_timeout", raw.idle_timeout);
    positive("body_read_timeout", raw.body_read_timeout);
    if !(1024..=1024 * 1024).contains(&raw.max_header_bytes) {
        problems.push(("ingress.max_header_bytes".into(), "must be between 1024 and 1048576".into()));
    }
    if raw.max_connections == 0 {
        problems.push(("ingress.max_connections".into(), "must be greater than 0".into()));
    }
    if raw.max_in_flight == 0 {
        problems.push(("ingress.max_in_flight".into(), "must be greater than 0".into()));
    }
    let tls = tls("ingress.tls", raw.tls.as_ref(), &mut problems);
    let settings = ListenerSettings {
        header_read_timeout: raw.header_read_timeout,
        idle_timeout: raw.idle_timeout,
        max_header_bytes: raw.max_header_bytes,
        max_connections: raw.max_connections,
        tls,
    };
    (settings, problems)
}

/// The admin listener's settings: fixed limits, optional TLS.
pub(crate) fn admin(raw: &AdminConfig) -> (ListenerSettings, Problems) {
    let mut problems = Problems::new();
    let tls = tls("admin.tls", raw.tls.as_ref(), &mut problems);
    (ListenerSettings { tls, ..ListenerSettings::admin() }, problems)
}

/// The files, loaded once here so `hookbridge check` reports a bad pair.
fn tls(at: &str, raw: Option<&TlsConfig>, problems: &mut Problems) -> Option<TlsFiles> {
    let raw = raw?;
    let files = TlsFiles { cert_file: raw.cert_file.clone(), key_file: raw.key_file.clone() };
    if let Err(error) = files.load() {
        problems.push((at.to_owned(), error.to_string()));
    }
    Some(files)
}
