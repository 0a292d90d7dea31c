//! In-process Raft clusters on loopback, for tests: every node is a real
//! node with its own gRPC server, talking to the others over TCP.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dref::engine::Backend;
use dref::Context;
use dref_backends::raft::{RaftBackend, RaftConfig};
use dref_tests::Harness;
use futures_util::future::{join_all, BoxFuture};

/// The longest election timeout of [`test_config`].
pub const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(1000);

/// Timing for tests: quick elections, but not so quick that a loaded
/// two-core machine flaps between leaders.
pub fn test_config(listener: TcpListener, peers: &[String]) -> RaftConfig {
    let addr = listener.local_addr().expect("listener address");
    RaftConfig::new(addr)
        .listener(listener)
        .peers(peers.iter().cloned())
        .heartbeat(Duration::from_millis(50))
        .election_timeout(Duration::from_millis(500), ELECTION_TIMEOUT_MAX)
        .discovery_interval(Duration::from_millis(100))
        .request_timeout(Duration::from_secs(10))
}

/// Binds `n` loopback listeners, so every node knows every address before
/// any node starts.
pub fn listeners(n: usize) -> (Vec<TcpListener>, Vec<String>) {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr().expect("listener address").to_string())
        .collect();
    (listeners, addrs)
}

/// A cluster of `n` nodes started together (they find each other through
/// static addresses and bootstrap on their own).
pub async fn start(n: usize, tune: impl Fn(RaftConfig) -> RaftConfig) -> Vec<RaftBackend> {
    let (listeners, addrs) = listeners(n);
    let starts = listeners
        .into_iter()
        .map(|l| tune(test_config(l, &addrs)).connect());
    let nodes: Vec<RaftBackend> = join_all(starts)
        .await
        .into_iter()
        .map(|r| r.expect("start a raft node"))
        .collect();
    wait_for_voters(&nodes, n).await;
    nodes
}

/// Waits until every node sees `voters` voters and one common leader.
pub async fn wait_for_voters(nodes: &[RaftBackend], voters: usize) {
    dref_tests::within("the cluster to settle", async {
        loop {
            let leaders: Vec<Option<String>> = nodes.iter().map(|n| n.leader()).collect();
            let settled = leaders[0].is_some()
                && leaders.iter().all(|l| *l == leaders[0])
                && nodes.iter().all(|n| n.voters().len() == voters);
            if settled {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A context on `node`, with a session TTL other than the node's when
/// given.
pub async fn context(node: &RaftBackend, session_ttl: Option<Duration>) -> Context {
    let builder = node.context_builder();
    let builder = match session_ttl {
        Some(ttl) => builder.session_ttl(ttl),
        None => builder,
    };
    builder.connect().await.expect("a context on a raft node")
}

/// One context per node, in order.
pub async fn contexts(nodes: &[RaftBackend], session_ttl: Option<Duration>) -> Vec<Context> {
    let mut contexts = Vec::new();
    for node in nodes {
        contexts.push(context(node, session_ttl).await);
    }
    contexts
}

/// The index of the node that leads now.
pub fn leader_of(nodes: &[RaftBackend]) -> usize {
    nodes
        .iter()
        .position(RaftBackend::is_leader)
        .expect("a settled cluster has a leader")
}

/// The index of a node that does not lead now.
pub fn follower_of(nodes: &[RaftBackend]) -> usize {
    nodes
        .iter()
        .position(|n| !n.is_leader())
        .expect("a cluster of several nodes has a follower")
}

/// The port `node` listens on.
pub fn port(node: &RaftBackend) -> u16 {
    node.address()
        .parse::<std::net::SocketAddr>()
        .expect("a node's address is ip:port")
        .port()
}

/// The conformance harness: a fresh cluster per test case, backend
/// handles handed out round-robin so that nodes of a test sit on
/// different cluster members.
pub struct RaftHarness {
    nodes: Vec<RaftBackend>,
    next: AtomicUsize,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// Clusters alive at once in one test binary: the harness runs every
/// conformance case in parallel, and dozens of clusters heartbeating on
/// two cores would turn timing margins into flakes.
const CONCURRENT_CLUSTERS: usize = 2;

fn cluster_slots() -> Arc<tokio::sync::Semaphore> {
    static SLOTS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    SLOTS
        .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(CONCURRENT_CLUSTERS)))
        .clone()
}

impl RaftHarness {
    /// A harness on a new cluster of `n` nodes.
    pub async fn new(n: usize) -> Self {
        let slot = cluster_slots()
            .acquire_owned()
            .await
            .expect("the cluster semaphore is never closed");
        RaftHarness {
            _slot: slot,
            nodes: start(n, |c| c).await,
            next: AtomicUsize::new(0),
        }
    }
}

impl Harness for RaftHarness {
    fn backend(&self) -> BoxFuture<'_, Arc<dyn Backend>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len();
        let backend: Arc<dyn Backend> = Arc::new(self.nodes[i].clone());
        Box::pin(async move { backend })
    }
}
