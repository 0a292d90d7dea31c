//! The embedded Raft backend: every service instance runs a node, and the
//! nodes form a strongly consistent cluster with no external server.
//!
//! - **Consensus**: openraft 0.9 (v2 storage). A write commits once a
//!   majority of voters has it, so acknowledged writes survive the loss of
//!   any minority of nodes.
//! - **Storage**, chosen per node (see [`RaftConfig::data_dir`]):
//!
//!   | | in memory (default) | data directory |
//!   |---|---|---|
//!   | a node restarts | it comes back as a new member and is sent the state | it comes back as itself (same id, same membership) and catches up from its own log |
//!   | a majority, or every node, dies at once | the cluster's state is lost | every acknowledged write survives (the vote and each entry are on disk before they are acknowledged) |
//!   | a rolling restart | each node rejoins as a new member | the membership never changes |
//!
//!   On disk, the log is a checksummed write-ahead log (the `raft-log`
//!   crate) and the state machine's snapshots are checksummed files;
//!   commands proposed together share one disk sync (the leader gathers
//!   concurrent proposals into one log entry). A torn last record is dropped
//!   at start (it was never acknowledged); damage anywhere else refuses to
//!   start, naming the file (empty the directory to rejoin as a new node). A
//!   data directory belongs to one cluster: it is refused under another
//!   cluster name, and the nodes of another cluster refuse it.
//! - **Transport**: one gRPC service (`dref.Raft`) over tonic, messages
//!   encoded with postcard; one HTTP/2 channel per peer, reused.
//! - **Security**: with [`RaftConfig::tls`] (or `DREF_TLS_CERT`,
//!   `DREF_TLS_KEY`, `DREF_TLS_CA`) every connection, in and out, is mutual
//!   TLS 1.3: each node presents its certificate and checks its peer's
//!   against the cluster CA, so a process without a certificate of that CA
//!   can neither join, vote, replicate, send snapshots nor write; it is
//!   refused at the handshake, before any request, and the refusal is
//!   logged on both sides (the refused node's start fails with
//!   [`dref::Error::Refused`]). Plain-text peers are refused too.
//!   Certificate files are re-read when they change, so certificates and
//!   CAs rotate without a restart (trust both CAs, move the nodes to the
//!   new one, then drop the old one). On top of TLS, every request names
//!   its cluster, and nodes of another cluster (name or id) are refused even
//!   when their certificates verify. Without TLS settings the transport is
//!   plain text, for local development only: anyone who can reach the port
//!   can join and write, and the node says so in a warning at start;
//!   [`RaftConfig::tls_required`] (`DREF_TLS_REQUIRED=1`) makes such a
//!   start fail instead.
//! - **Writes** from any node reach the leader by forwarding (callers never
//!   see "forward to leader"); a retried proposal carries the same request
//!   id and is applied at most once. A write returns once the node it was
//!   made through has applied it, so that node's watches and `peek` already
//!   show it.
//!   A write conditional on a record or field revision that the cluster has
//!   already moved past (a lost compare-and-set race) can never succeed: it
//!   is answered after a read barrier, with the current record, and takes no
//!   log entry.
//! - **Reads** are linearizable: the leader confirms its leadership with a
//!   heartbeat round (read index), and the reading node waits until it has
//!   applied up to that index, then reads its own copy.
//! - **Watches** are served from each node's applied state, without RPCs.
//!   A revision is derived from the log: command `i` of the entry at index
//!   `n` commits at revision `n × 1024 + i`, so every node assigns the same
//!   revisions (a lease expiry that deletes several records gives them one
//!   revision, as an etcd transaction does).
//! - **Leases**: deadlines live on the leader; keep-alives go to the leader
//!   and are not replicated; an expiry is proposed through the log. A new
//!   leader starts every deadline afresh, so a lease is never cut short by
//!   a change of leader. Leases are part of the state, so they survive a
//!   restart of the cluster, but a restart never makes one immortal: the
//!   first leader after it starts every lease's TTL afresh, and a lease
//!   whose holder died with the cluster expires one TTL after that.
//! - **Lease safety**: the leader accepts a keep-alive only after a
//!   majority has confirmed, in a heartbeat round begun after the
//!   keep-alive arrived, that it still leads. Any later leader is elected by
//!   a majority that shares a node with the confirming one, and that node
//!   voted only after confirming, so the later leader's term (and its fresh
//!   deadline, a full TTL long) starts after the keep-alive arrived: later
//!   than the holder, which trusts the lease until it sent the keep-alive
//!   plus the TTL minus a margin, still trusts it. A leader cut off from its
//!   majority cannot confirm and so vouches for nothing, although openraft
//!   0.9 lets it go on believing it leads. Elections are locks, so the same
//!   holds for them; when the winner's node was also the Raft leader,
//!   failover takes up to one session TTL plus one election timeout.
//! - **Snapshots**: every [`RaftConfig::snapshot_after`] entries, or once
//!   [`RaftConfig::snapshot_after_bytes`] of data have been written, the
//!   state is snapshotted and the log compacted; a node that falls behind
//!   the compacted log receives the snapshot in chunks.
//! - **Discovery and bootstrap**: a node that is not a member yet asks the
//!   configured peers (static addresses, and DNS names re-resolved every
//!   [`RaftConfig::discovery_interval`]) who they are. If one belongs to a
//!   cluster, it asks to join: the leader adds it as a learner, then as a
//!   voter while there are fewer than [`RaftConfig::max_voters`]; the rest
//!   stay learners (they serve watches and forward writes). If none does,
//!   once the set of reachable nodes has been the same for three rounds, the
//!   node with the lowest advertised address forms a one-node cluster and
//!   the others join it: replicas started together form exactly one
//!   cluster.
//! - **Restarts**: a node with a data directory keeps its id, its
//!   membership and its log; back at another address, it has the leader
//!   record the new one. A node without one is a new node with a new id,
//!   and the leader removes the old member at the same address when it
//!   joins. Replication messages name their target node, so a newcomer
//!   never answers for its predecessor. `connect` returns only once a
//!   leader has answered (a restarted node remembers a leader that may be
//!   gone).
//! - **Clusters**: a cluster has a name ([`RaftConfig::cluster_name`]) and
//!   an id drawn by the node that formed it, which members learn when they
//!   join (and keep in their data directories). Every RPC names the
//!   caller's cluster, and nodes refuse callers of another one.
//! - **Shutdown**: [`RaftBackend::shutdown`] leaves the membership first, so
//!   the others stop counting this node. A leaving leader asks its most
//!   up-to-date follower to campaign as soon as the followers' leader lease
//!   (half the longest election timeout) has run out. (openraft 0.9 has no
//!   leadership transfer, so that wait remains.) [`RaftBackend::kill`]
//!   stops at once, like a crash, and stays a member. Dropping the last
//!   handle stops the node: a durable one stays a member (it comes back), an
//!   in-memory one leaves.

mod client;
mod cluster;
mod config;
mod discovery;
mod handler;
mod leases;
mod membership;
mod network;
mod node;
mod observe;
mod proposer;
mod routing;
mod rpc;
mod state_machine;
mod storage;
mod tls;
mod transport;
mod types;

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dref::engine::store;
use dref::engine::{
    Backend, Key, LeaseId, Listing, PrefixStream, Record, WatchStream, Write, WriteOutcome,
};
use dref::{Error, Result};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::watch;

pub use client::{RaftClient, RaftClientConfig, RaftClusterStatus, RaftMember, RaftNodeStatus};
pub use config::{
    RaftConfig, ADDRESSES_ENV, ADVERTISE_ENV, CLUSTER_NAME_ENV, DATA_DIR_ENV, DEFAULT_CLUSTER_NAME,
    DEFAULT_PORT, PORT_ENV, SERVICES_ENV, SESSION_TTL_ENV,
};
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub use rpc::Faults;
pub use tls::{
    TlsConfig, TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV, TLS_PEER_NAME_ENV, TLS_REQUIRED_ENV,
};

use handler::Rpc;
use node::{Node, BACKEND};
use rpc::{Peers, RaftService};
use types::{millis, Applied, CommandOp, TypeConfig};

/// A handle on this process's Raft node; clones share the node.
///
/// [`shutdown`](Self::shutdown) leaves the cluster for good and stops;
/// [`kill`](Self::kill) stops and stays a member (a node with a data
/// directory comes back as itself). Dropping the last handle stops the
/// node in the background: a node with a data directory stays a member,
/// one without leaves (it could never come back as itself).
#[derive(Clone)]
pub struct RaftBackend {
    node: Arc<Node>,
    _owner: Arc<Owner>,
    log_stats: Option<Arc<storage::LogStats>>,
    #[cfg(feature = "test-util")]
    sync_stall: Option<storage::SyncStall>,
}

/// Shared by the user's handles only (the node's own tasks hold weak
/// references): when the last handle goes, the node stops in the
/// background, leaving the cluster unless it keeps a data directory.
struct Owner {
    node: Arc<Node>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        let node = self.node.clone();
        // Without a runtime the node just stops (Node's own drop).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let leave = node.config.data_dir.is_none();
            runtime.spawn(async move { node.shutdown(leave).await });
        }
    }
}

impl std::fmt::Debug for RaftBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftBackend")
            .field("id", &self.node.id)
            .field("addr", &self.node.addr)
            .finish_non_exhaustive()
    }
}

fn random_id(addr: &str) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    RandomState::new().hash_one((addr, nanos, std::process::id()))
}

/// The address peers should use for a node listening on `bound`.
async fn advertised_address(config: &RaftConfig, bound: SocketAddr) -> String {
    if let Some(addr) = &config.advertise {
        return addr.clone();
    }
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty());
    if let Some(host) = host {
        if let Ok(found) = tokio::net::lookup_host((host.as_str(), bound.port())).await {
            if let Some(addr) = found
                .into_iter()
                .find(|a| a.is_ipv4() && !a.ip().is_loopback())
            {
                return addr.to_string();
            }
        }
    }
    SocketAddr::from(([127, 0, 0, 1], bound.port())).to_string()
}

/// The node's listening socket: the one handed over (feature `test-util`),
/// else a new one on the listen address. The node takes the given socket
/// out of the config's shared slot: no copy may outlive the node, or the
/// port would stay bound (and accept connections) after a stop.
async fn listen(config: &RaftConfig) -> Result<tokio::net::TcpListener> {
    #[cfg(feature = "test-util")]
    if let Some(slot) = &config.listener {
        let listener = slot.lock().take().ok_or_else(|| {
            Error::Config("the given listener is already used by another node".into())
        })?;
        return listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
            .map_err(|e| Error::Config(format!("cannot use the given listener: {e}")));
    }
    tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", config.listen)))
}

/// This node's Raft id and its cluster's id if known: those in its data
/// directory (made on first start), so that a restarted replica is the same
/// member of the same cluster; without a data directory, a new id at every
/// start.
async fn node_identity(config: &RaftConfig, addr: &str) -> Result<(u64, Option<u64>)> {
    let Some(dir) = config.data_dir.clone() else {
        return Ok((random_id(addr), None));
    };
    let (cluster, addr) = (config.cluster_name.clone(), addr.to_owned());
    let identity = tokio::task::spawn_blocking(move || {
        let unusable = |e| Error::Config(format!("the raft data directory cannot be used: {e}"));
        let identity = storage::Identity::load_or_create(&dir, || storage::Identity {
            node_id: random_id(&addr),
            cluster: cluster.clone(),
            cluster_id: None,
        })
        .map_err(unusable)?;
        identity.check_cluster(&cluster).map_err(unusable)?;
        Ok(identity)
    })
    .await
    .map_err(|e| Error::Config(format!("reading the node identity stopped: {e}")))??;
    Ok((identity.node_id, identity.cluster_id))
}

impl RaftBackend {
    async fn start(config: RaftConfig) -> Result<Self> {
        config.validate()?;
        // Certificates are checked before anything else, so that a bad
        // file stops the node at once.
        let tls = config.tls.clone().map(tls::Tls::load).transpose()?;
        let listener = listen(&config).await?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::Config(format!("cannot read the listen address: {e}")))?;
        let addr = advertised_address(&config, bound).await;
        if tls.is_none() {
            tracing::warn!(
                %addr,
                "the raft transport is plain text: anyone who can reach this port can join the cluster, vote, replicate and write; configure TLS (DREF_TLS_CERT, DREF_TLS_KEY, DREF_TLS_CA) outside local development"
            );
        }
        let storage = storage::Storage::open(
            config.data_dir.as_deref(),
            &storage::StorageOptions {
                // Purged a chunk at a time: no more dead entries on disk
                // than one snapshot interval.
                chunk_entries: usize::try_from(config.snapshot_after)
                    .unwrap_or(usize::MAX)
                    .clamp(64, 4096),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| Error::Config(format!("cannot open the raft storage: {e}")))?;
        let (id, cluster_id) = node_identity(&config, &addr).await?;
        let cluster = Arc::new(cluster::Cluster::new(
            cluster::ClusterTag {
                name: config.cluster_name.clone(),
                id: cluster_id,
            },
            config.data_dir.clone(),
            id,
        ));

        let raft_config = openraft::Config {
            cluster_name: config.cluster_name.clone(),
            heartbeat_interval: millis(config.heartbeat),
            // openraft waits its leader lease (= its election_timeout_max)
            // plus a random election timeout before a follower campaigns:
            // halving both makes the whole wait land within the
            // configured range (see RaftConfig::election_timeout).
            election_timeout_min: millis(config.election_timeout.0) / 2,
            election_timeout_max: millis(config.election_timeout.1) / 2,
            install_snapshot_timeout: millis(config.snapshot_timeout),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_after.max(1)),
            snapshot_max_chunk_size: config.snapshot_chunk_bytes,
            max_in_snapshot_log_to_keep: config.snapshot_after.min(1000),
            max_payload_entries: 64,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Config(format!("raft configuration: {e}")))?;

        let log_stats = storage.log.stats().cloned();
        #[cfg(feature = "test-util")]
        let sync_stall = storage.log.sync_stall();
        let peers = Peers::new(config.connect_timeout, tls.clone(), cluster);
        // As leader, this node replicates its own entries while they sync;
        // the state machine and the network keep what is not yet on disk
        // unseen (storage/durability.rs).
        storage.log.lead_as(id);
        let durability = storage.log.durability().cloned();
        let withheld_commits = durability.clone();
        let state_machine =
            state_machine::StateMachine::open(config.watch_buffer, storage.snapshots)
                .map_err(|e| Error::Config(format!("cannot restore the raft state: {e}")))?
                .with_durability(durability.clone());
        let machines = state_machine.shared().clone();
        let raft = openraft::Raft::<TypeConfig>::new(
            id,
            Arc::new(raft_config),
            network::Network::new(peers.clone(), durability.clone()),
            storage.log,
            state_machine,
        )
        .await
        .map_err(|e| Error::Unavailable {
            backend: BACKEND,
            message: format!("cannot start the raft node: {e}"),
        })?;

        let (stop, _) = watch::channel(false);
        let join_timeout = config.join_timeout;
        let heartbeat = config.heartbeat;
        let node = Arc::new(Node::new(id, addr, config, raft, machines, peers, stop));

        let service = RaftService::new(Arc::new(Rpc {
            node: Arc::downgrade(&node),
        }));
        let mut stopped = node.stop_signal();
        if let Some(tls) = &tls {
            tokio::spawn(tls::reload_on_change(tls.clone(), node.stop_signal()));
        }
        let (incoming, accepting) = transport::incoming(listener, tls, node.stop_signal());
        let server = tonic::transport::Server::builder().serve_with_incoming_shutdown(
            service,
            incoming,
            async move {
                // Also ends when the node is gone (the sender dropped).
                stopped.wait_for(|s| *s).await.ok();
            },
        );
        let serving = tokio::spawn(async move {
            // The error (the listener failed) leaves the node unreachable,
            // which peers handle like a dead node.
            if let Err(e) = server.await {
                tracing::error!(error = %e, "the raft RPC server failed: this node is unreachable");
            }
        });
        node.set_server([serving, accepting]);
        tokio::spawn(leases::expire_leases(Arc::downgrade(&node), heartbeat));
        tokio::spawn(observe::report_changes(node.raft.clone(), id));
        tokio::spawn(node::snapshot_when_large(
            Arc::downgrade(&node),
            Duration::from_millis(200),
        ));
        tokio::spawn(discovery::bootstrap(Arc::downgrade(&node)));
        if let Some(durability) = withheld_commits {
            tokio::spawn(network::tell_withheld_commits(
                node.raft.clone(),
                durability,
                node.stop_signal(),
            ));
        }

        let backend = RaftBackend {
            _owner: Arc::new(Owner { node: node.clone() }),
            node,
            log_stats,
            #[cfg(feature = "test-util")]
            sync_stall,
        };
        backend.wait_ready(join_timeout).await?;
        Ok(backend)
    }

    /// Waits until this node is a member of a cluster that has a leader.
    /// Waits until this node is a member of a cluster that has a leader,
    /// proven by a read barrier through that leader (a node restarted from
    /// its data directory remembers a leader that may be long gone).
    async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let mut metrics = self.node.raft.metrics();
        let node = self.node.clone();
        let ready = async move {
            let id = node.id;
            metrics
                .wait_for(|m| {
                    m.current_leader.is_some()
                        && m.membership_config.membership().get_node(&id).is_some()
                })
                .await
                .map_err(|_| Error::Unavailable {
                    backend: BACKEND,
                    message: "the raft node stopped while joining".into(),
                })?;
            loop {
                match node.read_barrier().await {
                    Ok(()) => return Ok(()),
                    Err(e) if e.is_transient() && !node.is_shutting_down() => {
                        tracing::debug!(node = node.id, error = %e, "no leader answers yet");
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        match tokio::time::timeout(timeout, ready).await {
            Ok(result) => result,
            Err(_) => {
                let refused = self.node.peers.cluster().last_refusal();
                let message = format!(
                    "node {} found no cluster to join within {timeout:?} (peers: {:?}, services: {:?}){}",
                    self.node.addr,
                    self.node.config.peers,
                    self.node.config.services,
                    refused
                        .as_ref()
                        .map(|r| format!("; {r}"))
                        .unwrap_or_default()
                );
                // A refusal (another cluster, a certificate not accepted)
                // will repeat: say so with its own kind.
                Err(match refused {
                    Some(_) => Error::Refused {
                        backend: BACKEND,
                        message,
                    },
                    None => Error::Unavailable {
                        backend: BACKEND,
                        message,
                    },
                })
            }
        }
    }

    /// This node's Raft id: kept in the data directory, else new at every
    /// start.
    pub fn node_id(&self) -> u64 {
        self.node.id
    }

    /// The address peers reach this node at.
    pub fn address(&self) -> &str {
        &self.node.addr
    }

    /// The current leader's address, as this node knows it.
    pub fn leader(&self) -> Option<String> {
        self.node.leader().map(|(_, addr)| addr)
    }

    /// Whether this node is the leader now.
    pub fn is_leader(&self) -> bool {
        self.node.leader().is_some_and(|(id, _)| id == self.node.id)
    }

    /// Node ids of the voting members.
    pub fn voter_ids(&self) -> Vec<u64> {
        self.node
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// Addresses of the voting members.
    pub fn voters(&self) -> Vec<String> {
        let metrics = self.node.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|n| n.addr.clone()))
            .collect()
    }

    /// The durable log's counters since this node started: entries
    /// appended and disk syncs (`None` without a data directory).
    pub fn log_syncs(&self) -> Option<(u64, u64)> {
        self.log_stats.as_ref().map(|s| (s.appended(), s.syncs()))
    }

    /// Holds this node's disk syncs back (`true`) or lets them go on
    /// (`false`): its log keeps taking entries, but none becomes durable
    /// meanwhile (nothing with the log in memory). Feature `test-util`:
    /// not part of the production API.
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn stall_log_syncs(&self, stalled: bool) {
        if let Some(stall) = &self.sync_stall {
            stall.set(stalled);
        }
    }

    /// Index of the last entry in this node's log (appended, not
    /// necessarily committed), as its metrics last showed. Feature
    /// `test-util`: not part of the production API.
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn last_log_index(&self) -> Option<u64> {
        self.node.raft.metrics().borrow().last_log_index
    }

    /// Waits until this node leads, its log holds an entry beyond
    /// `index`, and every follower has acknowledged its whole log (the
    /// leader's replication metrics). `false` when that does not happen
    /// within `timeout`. Feature `test-util`: not part of the production
    /// API.
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub async fn wait_followers_matched_beyond(&self, index: u64, timeout: Duration) -> bool {
        let id = self.node.id;
        let mut metrics = self.node.raft.metrics();
        let matched = metrics.wait_for(|m| {
            let Some(last) = m.last_log_index.filter(|last| *last > index) else {
                return false;
            };
            m.current_leader == Some(id)
                && m.replication.as_ref().is_some_and(|followers| {
                    followers
                        .iter()
                        .filter(|(follower, _)| **follower != id)
                        .all(|(_, matched)| matched.is_some_and(|log| log.index >= last))
                })
        });
        let matched = tokio::time::timeout(timeout, matched).await;
        matches!(matched, Ok(Ok(_)))
    }

    /// Index of the last log entry this node has applied.
    pub fn applied_index(&self) -> u64 {
        self.node.machines.applied_index()
    }

    /// Index of the last entry in this node's latest snapshot, if any.
    pub fn snapshot_index(&self) -> Option<u64> {
        self.node.raft.metrics().borrow().snapshot.map(|l| l.index)
    }

    /// Index of the last log entry this node has removed by compaction: a
    /// peer that has not replicated up to it can only catch up from a
    /// snapshot.
    pub fn purged_index(&self) -> Option<u64> {
        self.node.raft.metrics().borrow().purged.map(|l| l.index)
    }

    /// Takes a snapshot now (and compacts the log behind it).
    pub async fn snapshot_now(&self) -> Result<()> {
        self.node
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| Error::Unavailable {
                backend: BACKEND,
                message: format!("snapshot: {e}"),
            })
    }

    /// The fault injector on this node's outgoing links: cut links to
    /// simulate a network partition in tests, then heal (feature
    /// `test-util`: not part of the production API).
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn faults(&self) -> &Faults {
        self.node.peers.faults()
    }

    /// A context builder on this backend, with the configured session TTL.
    pub fn context_builder(&self) -> dref::ContextBuilder {
        dref::Context::builder()
            .backend(self.clone())
            .session_ttl(self.node.config.session_ttl)
    }

    /// Leaves the cluster (the leader removes this node from the
    /// membership, so the others no longer count it) and stops the node.
    pub async fn shutdown(&self) {
        self.node.shutdown(true).await;
    }

    /// Stops the node at once without leaving the membership, as a crash
    /// would. With a data directory the node comes back as itself at its
    /// next start (a restart, an upgrade), and the others keep counting it
    /// meanwhile (three replicas tolerate one stopped this way). Without
    /// one, prefer [`shutdown`](Self::shutdown) for a planned stop: the
    /// member left behind never returns.
    pub async fn kill(&self) {
        self.node.shutdown(false).await;
    }
}

impl Backend for RaftBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn read(&self, key: Key) -> BoxFuture<'_, Result<Option<Record>>> {
        timed(self.node.id, "read", self.node.read(key)).boxed()
    }

    fn list(&self, prefix: String) -> BoxFuture<'_, Result<Listing>> {
        timed(self.node.id, "list", self.node.list(prefix)).boxed()
    }

    fn write(&self, write: Write) -> BoxFuture<'_, Result<WriteOutcome>> {
        timed(self.node.id, "write", self.node.write(write)).boxed()
    }

    fn watch(&self, key: Key, since: Option<u64>) -> BoxFuture<'_, Result<WatchStream>> {
        let stream = store::watch(&self.node.machines, key, since);
        async move { Ok(stream) }.boxed()
    }

    fn watch_prefix(
        &self,
        prefix: String,
        since: Option<u64>,
    ) -> BoxFuture<'_, Result<PrefixStream>> {
        let stream = store::watch_prefix(&self.node.machines, prefix, since);
        async move { Ok(stream) }.boxed()
    }

    fn grant_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId>> {
        async move {
            if ttl.is_zero() {
                return Err(Error::Config("a lease TTL must be positive".into()));
            }
            let ttl_ms = millis(ttl).max(1);
            match self.node.propose(CommandOp::Grant { ttl_ms }).await? {
                Applied::Granted(id) => Ok(LeaseId(id)),
                other => Err(Error::Protocol {
                    backend: BACKEND,
                    message: format!("a lease grant was answered with {other:?}"),
                }),
            }
        }
        .boxed()
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>> {
        timed(self.node.id, "keep_alive", self.node.keep_alive(lease)).boxed()
    }

    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>> {
        async move {
            self.node
                .propose(CommandOp::Revoke { lease: lease.0 })
                .await
                .map(|_| ())
        }
        .boxed()
    }
}

/// Runs `request` and records its latency in `dref_raft_request_seconds`
/// (failures too: an operator wants to see slow errors).
async fn timed<T>(node: u64, op: &'static str, request: impl Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let answer = request.await;
    metrics::histogram!("dref_raft_request_seconds", "node" => node.to_string(), "op" => op)
        .record(started.elapsed().as_secs_f64());
    answer
}
