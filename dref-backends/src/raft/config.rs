//! Configuration of a Raft node.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use dref::{Error, Result};

use super::tls::{TlsConfig, TLS_REQUIRED_ENV};
use super::RaftBackend;

/// Comma-separated peer addresses (`host:port`), read by
/// [`RaftConfig::from_env`].
pub const ADDRESSES_ENV: &str = "DREF_NODE_ADDRESSES";
/// Comma-separated DNS names whose addresses are peers (re-resolved
/// periodically), read by [`RaftConfig::from_env`].
pub const SERVICES_ENV: &str = "DREF_NODE_SERVICES";
/// The port this node listens on and peers found by DNS listen on.
pub const PORT_ENV: &str = "DREF_PORT";
/// The address other nodes reach this node at (`host:port`), when the
/// default (this host's name resolved, or the listen address) is wrong.
pub const ADVERTISE_ENV: &str = "DREF_ADVERTISE_ADDRESS";
/// The directory a node keeps its log, vote, snapshots and identity in
/// (unset: everything in memory), read by [`RaftConfig::from_env`].
pub const DATA_DIR_ENV: &str = "DREF_DATA_DIR";
/// The session TTL of contexts made by [`RaftBackend::context_builder`]
/// (`5s`, `1500ms`, `2m`, or a number of seconds), read by
/// [`RaftConfig::from_env`].
pub const SESSION_TTL_ENV: &str = "DREF_SESSION_TTL";
/// The cluster's name: nodes of clusters with other names never join each
/// other, and a data directory made for another cluster is refused.
pub const CLUSTER_NAME_ENV: &str = "DREF_CLUSTER_NAME";
/// The default cluster name.
pub const DEFAULT_CLUSTER_NAME: &str = "dref";
/// The longest timeout a setting accepts.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The default port.
pub const DEFAULT_PORT: u16 = 8082;

/// Settings of one Raft node. Setters consume and return the config; finish
/// with [`connect`](RaftConfig::connect).
///
/// ```no_run
/// # async fn demo() -> dref::Result<()> {
/// use dref_backends::raft::RaftConfig;
///
/// // Three replicas, each started with its own listen address.
/// let backend = RaftConfig::new("127.0.0.1:7001".parse().unwrap())
///     .peers(["127.0.0.1:7002", "127.0.0.1:7003"])
///     .connect()
///     .await?;
/// let ctx = backend.context_builder().connect().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RaftConfig {
    pub(super) listen: SocketAddr,
    pub(super) advertise: Option<String>,
    pub(super) peers: Vec<String>,
    pub(super) services: Vec<String>,
    pub(super) service_port: u16,
    pub(super) heartbeat: Duration,
    pub(super) election_timeout: (Duration, Duration),
    pub(super) session_ttl: Duration,
    pub(super) snapshot_after: u64,
    pub(super) snapshot_after_bytes: u64,
    pub(super) snapshot_chunk_bytes: u64,
    pub(super) snapshot_timeout: Duration,
    pub(super) max_voters: usize,
    pub(super) request_timeout: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) join_timeout: Duration,
    pub(super) discovery_interval: Duration,
    pub(super) max_write_bytes: usize,
    pub(super) watch_buffer: usize,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) cluster_name: String,
    pub(super) tls: Option<TlsConfig>,
    pub(super) tls_required: bool,
    /// Shared by clones of the config, and taken by the node that starts
    /// with it: no copy of the socket outlives that node.
    #[cfg(feature = "test-util")]
    pub(super) listener: Option<GivenListener>,
}

/// A listener handed over by the caller (feature `test-util`).
#[cfg(feature = "test-util")]
pub(super) type GivenListener = std::sync::Arc<parking_lot::Mutex<Option<std::net::TcpListener>>>;

impl RaftConfig {
    /// A node listening on `listen` (port 0 picks a free port), with no
    /// peers yet.
    pub fn new(listen: SocketAddr) -> Self {
        RaftConfig {
            listen,
            advertise: None,
            peers: Vec::new(),
            services: Vec::new(),
            service_port: listen.port(),
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(600), Duration::from_millis(1200)),
            session_ttl: dref::DEFAULT_SESSION_TTL,
            snapshot_after: 10_000,
            snapshot_after_bytes: 64 << 20,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_timeout: Duration::from_secs(30),
            max_voters: 5,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            join_timeout: Duration::from_secs(60),
            discovery_interval: Duration::from_millis(200),
            max_write_bytes: dref::memory::DEFAULT_MAX_WRITE_BYTES,
            watch_buffer: 256,
            data_dir: None,
            cluster_name: DEFAULT_CLUSTER_NAME.to_owned(),
            tls: None,
            tls_required: false,
            #[cfg(feature = "test-util")]
            listener: None,
        }
    }

    /// A config from the environment:
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `DREF_PORT` | the listen port, on all interfaces (default 8082) |
    /// | `DREF_NODE_ADDRESSES` | static peers, `host:port,...` |
    /// | `DREF_NODE_SERVICES` | DNS names whose addresses are peers |
    /// | `DREF_ADVERTISE_ADDRESS` | the `host:port` peers reach this node at |
    /// | `DREF_DATA_DIR` | the data directory ([`data_dir`](Self::data_dir); unset: in memory) |
    /// | `DREF_SESSION_TTL` | contexts' session TTL (`5s`, `1500ms`, `2m`, or seconds) |
    /// | `DREF_CLUSTER_NAME` | the cluster's name (default `dref`) |
    /// | `DREF_TLS_CERT`, `DREF_TLS_KEY`, `DREF_TLS_CA` | PEM files: this node's certificate and key, the cluster CA ([`tls`](Self::tls); all three or none) |
    /// | `DREF_TLS_PEER_NAME` | the DNS name every node's certificate carries ([`TlsConfig::peer_name`]) |
    /// | `DREF_TLS_REQUIRED` | `1`: refuse to start without TLS ([`tls_required`](Self::tls_required)) |
    pub fn from_env() -> Result<Self> {
        let port = match std::env::var(PORT_ENV) {
            Ok(p) => p
                .trim()
                .parse::<u16>()
                .map_err(|_| Error::Config(format!("{PORT_ENV}={p:?} is not a port number")))?,
            Err(_) => DEFAULT_PORT,
        };
        let list = |name: &str| -> Vec<String> {
            std::env::var(name)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let mut config = RaftConfig::new(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
            .peers(list(ADDRESSES_ENV))
            .services(list(SERVICES_ENV));
        if let Ok(advertise) = std::env::var(ADVERTISE_ENV) {
            config = config.advertise(advertise.trim());
        }
        if let Some(dir) = std::env::var_os(DATA_DIR_ENV).filter(|d| !d.is_empty()) {
            config = config.data_dir(dir);
        }
        if let Ok(ttl) = std::env::var(SESSION_TTL_ENV) {
            let parsed = parse_duration(&ttl).ok_or_else(|| {
                Error::Config(format!(
                    "{SESSION_TTL_ENV}={ttl:?} is not a duration (such as 5s, 1500ms, 2m)"
                ))
            })?;
            config = config.session_ttl(parsed);
        }
        if let Ok(name) = std::env::var(CLUSTER_NAME_ENV) {
            config = config.cluster_name(name.trim());
        }
        if let Some(tls) = TlsConfig::from_env()? {
            config = config.tls(tls);
        }
        if let Ok(required) = std::env::var(TLS_REQUIRED_ENV) {
            let required = match required.trim() {
                "1" | "true" | "yes" => true,
                "" | "0" | "false" | "no" => false,
                other => {
                    return Err(Error::Config(format!(
                        "{TLS_REQUIRED_ENV}={other:?} is neither 1 nor 0"
                    )))
                }
            };
            config = config.tls_required(required);
        }
        Ok(config)
    }

    /// The address peers reach this node at. Default: the listen address,
    /// or when listening on all interfaces, this host's name resolved (the
    /// container's address under Docker).
    pub fn advertise(mut self, addr: impl Into<String>) -> Self {
        self.advertise = Some(addr.into());
        self
    }

    /// Static peer addresses (`host:port`); this node's own address may be
    /// among them.
    pub fn peers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, peers: I) -> Self {
        self.peers = peers.into_iter().map(Into::into).collect();
        self
    }

    /// DNS names whose addresses (on [`service_port`](Self::service_port))
    /// are peers; re-resolved periodically, so replicas that appear later
    /// are found.
    pub fn services<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.services = names.into_iter().map(Into::into).collect();
        self
    }

    /// The port of peers found through [`services`](Self::services)
    /// (default: the listen port).
    pub fn service_port(mut self, port: u16) -> Self {
        self.service_port = port;
        self
    }

    /// Leader heartbeat interval (default 100 ms).
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }

    /// A follower that stops hearing from its leader starts an election
    /// after a random time in `(min + max) / 2..max` (default 600..1200
    /// ms, so 900..1200 ms): openraft's leader lease (`max / 2`, during
    /// which followers refuse to vote for anyone else) plus a random
    /// `min / 2..max / 2`. A candidate whose log is behind another
    /// node's waits one more `max`, so that an up-to-date node wins, and
    /// a failover takes at most about two `max`. `min` must exceed twice
    /// the heartbeat interval.
    pub fn election_timeout(mut self, min: Duration, max: Duration) -> Self {
        self.election_timeout = (min, max);
        self
    }

    /// Session TTL of contexts made by
    /// [`RaftBackend::context_builder`] (default
    /// [`dref::DEFAULT_SESSION_TTL`]).
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// Take a snapshot (and compact the log) every `entries` applied
    /// entries (default 10 000).
    pub fn snapshot_after(mut self, entries: u64) -> Self {
        self.snapshot_after = entries;
        self
    }

    /// Also take a snapshot once the writes applied since the last one add
    /// up to `bytes` of field data (default 64 MiB), so that a log of few
    /// but large writes is compacted too.
    pub fn snapshot_after_bytes(mut self, bytes: u64) -> Self {
        self.snapshot_after_bytes = bytes.max(1);
        self
    }

    /// Snapshot transfer: chunk size (default 1 MiB) and the time allowed
    /// per chunk (default 30 s).
    pub fn snapshot_transfer(mut self, chunk_bytes: u64, chunk_timeout: Duration) -> Self {
        self.snapshot_chunk_bytes = chunk_bytes.max(1);
        self.snapshot_timeout = chunk_timeout;
        self
    }

    /// Nodes that join while fewer than `max` voters exist become voters;
    /// the rest stay learners (default 5).
    pub fn max_voters(mut self, max: usize) -> Self {
        self.max_voters = max.max(1);
        self
    }

    /// How long a read or write waits for a leader before failing with
    /// `Unavailable` (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long [`connect`](Self::connect) waits for this node to be part
    /// of a cluster with a leader (default 60 s).
    pub fn join_timeout(mut self, timeout: Duration) -> Self {
        self.join_timeout = timeout;
        self
    }

    /// How often a node that is not yet a member looks for peers (default
    /// 200 ms).
    pub fn discovery_interval(mut self, interval: Duration) -> Self {
        self.discovery_interval = interval;
        self
    }

    /// Serve on an already bound listener instead of binding the listen
    /// address (so that a test can learn every node's port before any node
    /// starts). Feature `test-util`: not part of the production API.
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn listener(mut self, listener: std::net::TcpListener) -> Self {
        self.listener = Some(std::sync::Arc::new(parking_lot::Mutex::new(Some(listener))));
        self
    }

    /// Keep the log, the vote, snapshots and this node's identity in `dir`
    /// (created if missing), so that the node survives a restart with its
    /// identity and membership, and a whole cluster survives a full
    /// restart with every acknowledged write. Without it (the default)
    /// everything lives in memory: a restarted node joins as a new member
    /// and is sent the current state, and a cluster survives only while a
    /// majority keeps running.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// The cluster's name (default `dref`): nodes of differently named
    /// clusters never join each other, and a data directory made for
    /// another cluster is refused.
    pub fn cluster_name(mut self, name: impl Into<String>) -> Self {
        self.cluster_name = name.into();
        self
    }

    /// Mutual TLS on every connection of this node, in and out
    /// (replication, votes, snapshots, forwarded requests, joins): peers
    /// must present a certificate of the cluster CA, and plain-text peers
    /// are refused. Without it the node talks plain text, which anyone who
    /// can reach its port can use to join the cluster and write; it says so
    /// in a warning at start.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Refuse to start without [`tls`](Self::tls) settings (default
    /// false), for production deployments.
    pub fn tls_required(mut self, required: bool) -> Self {
        self.tls_required = required;
        self
    }

    /// Events buffered per watched key before a slow watcher gets a
    /// resync (default 256).
    pub fn watch_buffer(mut self, events: usize) -> Self {
        self.watch_buffer = events.max(1);
        self
    }

    /// Largest encoded write (default 1 MiB).
    pub fn max_write_bytes(mut self, limit: usize) -> Self {
        self.max_write_bytes = limit;
        self
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.tls_required && self.tls.is_none() {
            return Err(Error::Config(format!(
                "TLS is required ({TLS_REQUIRED_ENV} or RaftConfig::tls_required) but no TLS settings are given"
            )));
        }
        let name_ok = !self.cluster_name.is_empty()
            && self.cluster_name.len() <= 255
            && self
                .cluster_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(Error::Config(format!(
                "the raft cluster name {:?} must be 1 to 255 letters, digits, '-', '_' or '.'",
                self.cluster_name
            )));
        }
        let (min, max) = self.election_timeout;
        if self.heartbeat.is_zero() || min <= self.heartbeat * 2 || max <= min {
            return Err(Error::Config(format!(
                "raft timing needs 0 < 2 x heartbeat < election timeout min < max, got heartbeat {:?}, election timeout {min:?}..{max:?}",
                self.heartbeat
            )));
        }
        // Deadlines are computed as now + timeout: keep them representable.
        let longest = [
            ("request timeout", self.request_timeout),
            ("join timeout", self.join_timeout),
            ("snapshot chunk timeout", self.snapshot_timeout),
            ("connect timeout", self.connect_timeout),
            ("election timeout", max),
        ];
        if let Some((what, value)) = longest.iter().find(|(_, d)| *d > MAX_TIMEOUT) {
            return Err(Error::Config(format!(
                "raft {what} {value:?} is longer than the {MAX_TIMEOUT:?} allowed"
            )));
        }
        Ok(())
    }

    /// Starts the node: binds the listen address, then finds peers and
    /// forms or joins a cluster. Returns once this node is a member of a
    /// cluster with a leader.
    pub async fn connect(self) -> Result<RaftBackend> {
        RaftBackend::start(self).await
    }
}

/// `5s`, `1500ms`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let duration = match unit.trim() {
        "" | "s" => Duration::from_secs(number),
        "ms" => Duration::from_millis(number),
        "m" => Duration::from_secs(number.checked_mul(60)?),
        "h" => Duration::from_secs(number.checked_mul(3600)?),
        _ => return None,
    };
    Some(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test that touches these variables (tests share the
    /// process environment).
    #[test]
    fn from_env_reads_port_peers_services_and_advertised_address() {
        let vars = [
            PORT_ENV,
            ADDRESSES_ENV,
            SERVICES_ENV,
            ADVERTISE_ENV,
            DATA_DIR_ENV,
            SESSION_TTL_ENV,
            CLUSTER_NAME_ENV,
            super::super::TLS_CERT_ENV,
            super::super::TLS_KEY_ENV,
            super::super::TLS_CA_ENV,
            super::super::TLS_PEER_NAME_ENV,
            TLS_REQUIRED_ENV,
        ];
        std::env::set_var(PORT_ENV, " 9101 ");
        std::env::set_var(ADDRESSES_ENV, "10.0.0.1:9101, 10.0.0.2:9101,,");
        std::env::set_var(SERVICES_ENV, "dref-example");
        std::env::set_var(ADVERTISE_ENV, "10.0.0.3:9101");
        std::env::set_var(DATA_DIR_ENV, "/var/lib/dref");
        std::env::set_var(SESSION_TTL_ENV, "1500ms");
        std::env::set_var(CLUSTER_NAME_ENV, "billing");
        let config = RaftConfig::from_env().expect("a valid environment");
        assert_eq!(
            config.data_dir.as_deref(),
            Some(std::path::Path::new("/var/lib/dref"))
        );
        assert_eq!(config.session_ttl, Duration::from_millis(1500));
        assert_eq!(config.cluster_name, "billing");
        assert_eq!(config.listen, "0.0.0.0:9101".parse().unwrap());
        assert_eq!(config.service_port, 9101);
        assert_eq!(config.peers, ["10.0.0.1:9101", "10.0.0.2:9101"]);
        assert_eq!(config.services, ["dref-example"]);
        assert_eq!(config.advertise.as_deref(), Some("10.0.0.3:9101"));
        assert!(config.tls.is_none() && !config.tls_required);

        std::env::set_var(super::super::TLS_CERT_ENV, "/etc/dref/node.pem");
        let err = RaftConfig::from_env().unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("only some are set")),
            "{err}"
        );
        std::env::set_var(super::super::TLS_KEY_ENV, "/etc/dref/node.key");
        std::env::set_var(super::super::TLS_CA_ENV, "/etc/dref/ca.pem");
        std::env::set_var(super::super::TLS_PEER_NAME_ENV, "dref-example");
        std::env::set_var(TLS_REQUIRED_ENV, "1");
        let config = RaftConfig::from_env().expect("TLS settings");
        let tls = format!("{:?}", config.tls.expect("TLS is set"));
        assert!(
            tls.contains("node.pem") && tls.contains("dref-example"),
            "{tls}"
        );
        assert!(config.tls_required);
        std::env::set_var(TLS_REQUIRED_ENV, "maybe");
        let err = RaftConfig::from_env().unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("DREF_TLS_REQUIRED")),
            "{err}"
        );
        std::env::set_var(TLS_REQUIRED_ENV, "0");

        std::env::set_var(SESSION_TTL_ENV, "soon");
        let err = RaftConfig::from_env().unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("DREF_SESSION_TTL")),
            "{err}"
        );
        std::env::set_var(SESSION_TTL_ENV, "5");
        std::env::set_var(PORT_ENV, "eighty");
        let err = RaftConfig::from_env().unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("DREF_PORT")),
            "{err}"
        );

        for var in vars {
            std::env::remove_var(var);
        }
        let config = RaftConfig::from_env().expect("defaults");
        assert_eq!(config.listen.port(), DEFAULT_PORT);
        assert!(config.peers.is_empty() && config.services.is_empty());
    }

    #[test]
    fn timeouts_beyond_a_day_are_refused() {
        let config = RaftConfig::new("127.0.0.1:0".parse().unwrap()).request_timeout(Duration::MAX);
        let err = config.validate().unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("request timeout")),
            "{err}"
        );
        assert!(RaftConfig::new("127.0.0.1:0".parse().unwrap())
            .validate()
            .is_ok());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_duration(" 1500ms "),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("5 weeks"), None);
    }
}
