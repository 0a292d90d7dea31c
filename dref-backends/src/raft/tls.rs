//! Mutual TLS on the node-to-node transport (rustls with ring, TLS 1.3).
//!
//! Every node presents its certificate and verifies its peer's against the
//! cluster CA, in both directions: a node without a certificate of that CA
//! cannot open a connection, so it can neither join, vote, append nor
//! write. Material given as files is re-read when the files change, so
//! certificates rotate without a restart; a connection already open keeps
//! the session it was made with.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dref::{Error, Result};
use parking_lot::{Mutex, RwLock};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The certificate environment variable: a PEM file with this node's
/// certificate (and its chain), read by
/// [`RaftConfig::from_env`](super::RaftConfig::from_env).
pub const TLS_CERT_ENV: &str = "DREF_TLS_CERT";
/// The private key environment variable: a PEM file with the key of
/// [`TLS_CERT_ENV`]'s certificate.
pub const TLS_KEY_ENV: &str = "DREF_TLS_KEY";
/// The CA environment variable: a PEM file with the cluster CA's
/// certificates, the only issuers whose certificates peers may present.
pub const TLS_CA_ENV: &str = "DREF_TLS_CA";
/// `1` (or `true`): refuse to start without TLS settings.
pub const TLS_REQUIRED_ENV: &str = "DREF_TLS_REQUIRED";
/// The DNS name every node's certificate carries, when peers are not
/// checked against the host of the address they are dialled at.
pub const TLS_PEER_NAME_ENV: &str = "DREF_TLS_PEER_NAME";

/// Mutual TLS settings of a Raft node: its certificate and key, and the
/// cluster CA that every peer's certificate must chain to.
///
/// ```no_run
/// use dref_backends::raft::{RaftConfig, TlsConfig};
///
/// let config = RaftConfig::new("0.0.0.0:8082".parse().unwrap())
///     .tls(TlsConfig::from_files("/etc/dref/node.pem", "/etc/dref/node.key", "/etc/dref/ca.pem"));
/// ```
///
/// A peer's certificate must be issued by the CA and name the host the
/// peer is dialled at (an IP address or DNS subject alternative name), as
/// etcd checks it, unless [`peer_name`](Self::peer_name) gives one name
/// that every node's certificate carries (handy when addresses are
/// assigned at run time, as under Docker or Kubernetes). Certificates are
/// checked for their validity period at every handshake.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    source: Source,
    peer_name: Option<String>,
    reload_interval: Duration,
}

#[derive(Clone)]
enum Source {
    Files {
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
    },
    Pem(Pem),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Files { cert, key, ca } => f
                .debug_struct("Files")
                .field("cert", cert)
                .field("key", key)
                .field("ca", ca)
                .finish(),
            // Never print a private key.
            Source::Pem(_) => f.write_str("Pem(..)"),
        }
    }
}

/// The three PEM documents, as read.
#[derive(Clone, PartialEq, Eq)]
struct Pem {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

impl TlsConfig {
    /// Material in PEM files, re-read when they change (checked every
    /// [`reload_interval`](Self::reload_interval)): `cert` holds this
    /// node's certificate followed by any intermediates, `key` its private
    /// key (PKCS#8, PKCS#1 or SEC1), `ca` the cluster CA's certificates.
    pub fn from_files(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        ca: impl Into<PathBuf>,
    ) -> Self {
        TlsConfig {
            source: Source::Files {
                cert: cert.into(),
                key: key.into(),
                ca: ca.into(),
            },
            peer_name: None,
            reload_interval: Duration::from_secs(5),
        }
    }

    /// Material as PEM bytes (fixed for the node's life).
    pub fn from_pem(
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
        ca: impl Into<Vec<u8>>,
    ) -> Self {
        TlsConfig {
            source: Source::Pem(Pem {
                cert: cert.into(),
                key: key.into(),
                ca: ca.into(),
            }),
            peer_name: None,
            reload_interval: Duration::from_secs(5),
        }
    }

    /// The DNS name that every node's certificate carries as a subject
    /// alternative name; peers are checked against it instead of against
    /// the host of the address they are dialled at.
    pub fn peer_name(mut self, name: impl Into<String>) -> Self {
        self.peer_name = Some(name.into());
        self
    }

    /// How often files are checked for changes (default 5 s).
    pub fn reload_interval(mut self, interval: Duration) -> Self {
        self.reload_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The settings named by `DREF_TLS_CERT`, `DREF_TLS_KEY`, `DREF_TLS_CA`
    /// and `DREF_TLS_PEER_NAME`; `None` when none of the first three is
    /// set, an error when only some are.
    pub(super) fn from_env() -> Result<Option<Self>> {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        let (cert, key, ca) = (var(TLS_CERT_ENV), var(TLS_KEY_ENV), var(TLS_CA_ENV));
        let config = match (cert, key, ca) {
            (None, None, None) => return Ok(None),
            (Some(cert), Some(key), Some(ca)) => TlsConfig::from_files(cert, key, ca),
            _ => {
                return Err(Error::Config(format!(
                    "TLS needs all of {TLS_CERT_ENV}, {TLS_KEY_ENV} and {TLS_CA_ENV}, but only some are set"
                )))
            }
        };
        Ok(Some(match std::env::var(TLS_PEER_NAME_ENV) {
            Ok(name) if !name.trim().is_empty() => config.peer_name(name.trim()),
            _ => config,
        }))
    }

    fn read(&self) -> Result<Pem> {
        match &self.source {
            Source::Pem(pem) => Ok(pem.clone()),
            Source::Files { cert, key, ca } => {
                let read = |what: &str, path: &PathBuf| {
                    std::fs::read(path).map_err(|e| {
                        Error::Config(format!(
                            "cannot read the TLS {what} {}: {e}",
                            path.display()
                        ))
                    })
                };
                Ok(Pem {
                    cert: read("certificate", cert)?,
                    key: read("private key", key)?,
                    ca: read("CA file", ca)?,
                })
            }
        }
    }
}

/// A node's loaded TLS material, swapped whole when the files change.
pub(super) struct Tls {
    config: TlsConfig,
    peer_name: Option<ServerName<'static>>,
    current: RwLock<Loaded>,
    /// The bytes last read, loaded or not: a change that fails to load is
    /// reported once, not at every check.
    last_read: Mutex<Pem>,
}

#[derive(Clone)]
struct Loaded {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl Tls {
    /// Reads and checks the material; any problem is a configuration
    /// error naming the file and what is wrong with it.
    pub(super) fn load(config: TlsConfig) -> Result<Arc<Tls>> {
        let peer_name = match &config.peer_name {
            None => None,
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|e| {
                Error::Config(format!("the TLS peer name {name:?} is not a DNS name: {e}"))
            })?),
        };
        let pem = config.read()?;
        let loaded = build(&pem)?;
        Ok(Arc::new(Tls {
            config,
            peer_name,
            current: RwLock::new(loaded),
            last_read: Mutex::new(pem),
        }))
    }

    /// How often [`reload`](Self::reload) should run; `None` when the
    /// material cannot change.
    pub(super) fn reload_interval(&self) -> Option<Duration> {
        match self.config.source {
            Source::Files { .. } => Some(self.config.reload_interval),
            Source::Pem(_) => None,
        }
    }

    /// Re-reads the files and, if they changed and load, uses them for new
    /// connections. A change that does not load (a file half written, a
    /// key that does not match) keeps the current material, logged.
    pub(super) fn reload(&self) {
        let pem = match self.config.read() {
            Ok(pem) => pem,
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-read the raft TLS files; keeping the current certificates");
                return;
            }
        };
        {
            let mut last = self.last_read.lock();
            if *last == pem {
                return;
            }
            last.clone_from(&pem);
        }
        match build(&pem) {
            Ok(loaded) => {
                *self.current.write() = loaded;
                tracing::info!("raft TLS certificates changed on disk: new connections use them");
            }
            Err(e) => tracing::error!(
                error = %e,
                "the raft TLS files changed but do not load; keeping the current certificates"
            ),
        }
    }

    /// The acceptor for a new incoming connection.
    pub(super) fn acceptor(&self) -> TlsAcceptor {
        self.current.read().acceptor.clone()
    }

    /// The connector for a new outgoing connection, and the name the peer
    /// at `host` must prove.
    pub(super) fn connector(
        &self,
        host: &str,
    ) -> std::io::Result<(TlsConnector, ServerName<'static>)> {
        let name = match &self.peer_name {
            Some(name) => name.clone(),
            None => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                match host.parse::<IpAddr>() {
                    Ok(ip) => ServerName::IpAddress(ip.into()),
                    Err(_) => ServerName::try_from(host.to_owned()).map_err(|e| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            format!("{host:?} is not a host name a certificate can prove: {e}"),
                        )
                    })?,
                }
            }
        };
        Ok((self.current.read().connector.clone(), name))
    }
}

fn build(pem: &Pem) -> Result<Loaded> {
    let certs = CertificateDer::pem_slice_iter(&pem.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("the TLS certificate is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Config(
            "the TLS certificate file holds no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&pem.key)
        .map_err(|e| Error::Config(format!("the TLS private key is not a PEM private key: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&pem.ca) {
        let ca = ca.map_err(|e| Error::Config(format!("the TLS CA file is not valid PEM: {e}")))?;
        roots
            .add(ca)
            .map_err(|e| Error::Config(format!("the TLS CA file holds a bad certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Error::Config("the TLS CA file holds no certificate".into()));
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |what: &str, e: rustls::Error| Error::Config(format!("{what}: {e}"));

    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| Error::Config(format!("the TLS CA cannot verify peers: {e}")))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("TLS setup", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(|e| {
            tls_error(
                "the TLS certificate and key do not make a server identity",
                e,
            )
        })?;
    server.alpn_protocols = vec![b"h2".to_vec()];

    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("TLS setup", e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| {
            tls_error(
                "the TLS certificate and key do not make a client identity",
                e,
            )
        })?;
    client.alpn_protocols = vec![b"h2".to_vec()];

    Ok(Loaded {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        connector: TlsConnector::from(Arc::new(client)),
    })
}

/// Re-reads the files every reload interval while the node runs.
pub(super) async fn reload_on_change(
    tls: Arc<Tls>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let Some(interval) = tls.reload_interval() else {
        return;
    };
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            () = tokio::time::sleep(interval) => tls.reload(),
        }
    }
}
