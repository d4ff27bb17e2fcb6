//! TLS for a listener (rustls): the certificate chain and key from PEM
//! files, reloaded when either file changes (looked at every few seconds)
//! or when [`TlsReloader::reload`] is called (the binary does on SIGHUP).
//! A reload that fails keeps the certificate being served.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How often the files are looked at for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// When the certificate and the key file were last written.
type Modified = (SystemTime, SystemTime);

/// Where a listener's certificate chain and private key are (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("{path} holds no usable PEM private key: {detail}")]
    BadKey { path: PathBuf, detail: String },
    #[error("the key in {key} does not match the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
}

impl TlsFiles {
    /// Reads and checks the pair.
    ///
    /// # Errors
    /// What is wrong with which file (never the key's content).
    pub fn load(&self) -> Result<CertifiedKey, TlsError> {
        let read = |path: &PathBuf| std::fs::read(path).map_err(|source| TlsError::Read { path: path.clone(), source });
        let cert_pem = read(&self.cert_file)?;
        let key_pem = read(&self.key_file)?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&cert_pem).filter_map(Result::ok).collect();
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(self.cert_file.clone()));
        }
        let bad_key = |detail: String| TlsError::BadKey { path: self.key_file.clone(), detail };
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad_key(e.to_string()))?;
        let key = any_supported_type(&key).map_err(|e| bad_key(e.to_string()))?;
        let certified = CertifiedKey::new(chain, key);
        if certified.keys_match().is_err() {
            return Err(TlsError::Mismatch { cert: self.cert_file.clone(), key: self.key_file.clone() });
        }
        Ok(certified)
    }

    fn modified(&self) -> Option<Modified> {
        let at = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((at(&self.cert_file)?, at(&self.key_file)?))
    }
}

/// The certificate a listener serves, replaceable while it runs.
pub struct TlsReloader {
    files: TlsFiles,
    current: RwLock<(Arc<CertifiedKey>, Option<Modified>)>,
    acceptor: TlsAcceptor,
}

impl TlsReloader {
    /// Loads `files` once.
    ///
    /// # Errors
    /// When the certificate or key cannot be loaded.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let modified = files.modified();
        let certified = Arc::new(files.load()?);
        Ok(Arc::new_cyclic(|me: &std::sync::Weak<Self>| {
            let resolver = Arc::new(LazyResolver(me.clone()));
            let mut config =
                rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_no_client_auth()
                    .with_cert_resolver(resolver);
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Self { files, current: RwLock::new((certified, modified)), acceptor: TlsAcceptor::from(Arc::new(config)) }
        }))
    }

    fn current(&self) -> (Arc<CertifiedKey>, Option<Modified>) {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Loads the files again; on an error the served certificate stays.
    ///
    /// # Errors
    /// When the new pair cannot be loaded.
    pub fn reload(&self) -> Result<(), TlsError> {
        let modified = self.files.modified();
        let certified = self.files.load()?;
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = (Arc::new(certified), modified);
        tracing::info!(cert = %self.files.cert_file.display(), "TLS certificate loaded");
        Ok(())
    }

    /// Reloads whenever either file's modification time changes, until
    /// `stop` fires.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RELOAD_CHECK) => {}
            }
            let seen = self.current().1;
            let now = self.files.modified();
            if now.is_some()
                && now != seen
                && let Err(error) = self.reload()
            {
                // Remember the failed version, so it is not retried
                // (and logged) every few seconds; a new write is.
                self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner).1 = now;
                tracing::error!(%error, "TLS certificate not reloaded; still serving the previous one");
            }
        }
    }

    /// The handshake, bounded by `timeout`.
    ///
    /// # Errors
    /// When it fails or does not finish in time.
    pub async fn accept(&self, stream: TcpStream, timeout: Duration) -> std::io::Result<TlsStream<TcpStream>> {
        tokio::time::timeout(timeout, self.acceptor.accept(stream))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader").field("files", &self.files).finish_non_exhaustive()
    }
}

/// Resolves through the reloader once it exists (built inside it).
#[derive(Debug)]
struct LazyResolver(std::sync::Weak<TlsReloader>);

impl ResolvesServerCert for LazyResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.upgrade()?.current().0)
    }
}
