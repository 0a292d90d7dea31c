//! One embedded node: its openraft instance, its identity and view of the
//! cluster, and how it stops. What a node does is split by concern:
//! [`routing`](super::routing) takes requests to the leader,
//! [`leases`](super::leases) keeps the leader's lease deadlines,
//! [`membership`](super::membership) bootstraps, joins, leaves and hands
//! over, and [`handler`](super::handler) serves the peers' RPCs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dref::{Error, Result};
use openraft::error::Fatal;
use openraft::{BasicNode, Membership, Raft, ServerState};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::config::RaftConfig;
use super::leases::Deadlines;
use super::rpc::{ClientResponse, LeaderHint, NodeInfo, NodeStatus, Peers};
use super::state_machine::Machines;
use super::types::{RequestId, TypeConfig};

pub(super) const BACKEND: &str = "raft";

pub(super) fn unavailable(message: impl Into<String>) -> Error {
    Error::Unavailable {
        backend: BACKEND,
        message: message.into(),
    }
}

pub(super) struct Node {
    pub(super) id: u64,
    pub(super) addr: String,
    pub(super) config: RaftConfig,
    pub(super) raft: Raft<TypeConfig>,
    pub(super) machines: Arc<Machines>,
    pub(super) peers: Peers,
    /// Gathers this node's proposals into log entries while it leads.
    pub(super) proposer: super::proposer::Proposer,
    pub(super) deadlines: Mutex<Deadlines>,
    /// Names this process's requests in the dedup table: new at every
    /// start, unlike the node id (kept in a data directory), since the
    /// sequence restarts from 0 and a retried request must never be
    /// answered with a result of the node's previous life.
    incarnation: u64,
    seq: AtomicU64,
    pub(super) membership_lock: tokio::sync::Mutex<()>,
    pub(super) stop: watch::Sender<bool>,
    pub(super) stopped: AtomicBool,
    /// The gRPC server's task and the task that owns the listener.
    server: Mutex<Option<[tokio::task::JoinHandle<()>; 2]>>,
    /// Who this node expects to initialize the cluster (see `discovery`).
    pub(super) initializer: Mutex<Option<String>>,
}

impl Node {
    pub(super) fn new(
        id: u64,
        addr: String,
        config: RaftConfig,
        raft: Raft<TypeConfig>,
        machines: Arc<Machines>,
        peers: Peers,
        stop: watch::Sender<bool>,
    ) -> Self {
        let incarnation = super::random_id(&format!("{id}@{addr}"));
        let proposer = super::proposer::Proposer::start(raft.clone());
        Node {
            id,
            addr,
            config,
            raft,
            machines,
            proposer,
            peers,
            deadlines: Mutex::default(),
            incarnation,
            seq: AtomicU64::new(0),
            membership_lock: tokio::sync::Mutex::new(()),
            stop,
            stopped: AtomicBool::new(false),
            server: Mutex::new(None),
            initializer: Mutex::new(None),
        }
    }

    /// The leader this node knows of, with its address.
    pub(super) fn leader(&self) -> LeaderHint {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }

    /// The membership in effect on this node.
    pub(super) fn membership(&self) -> Membership<u64, BasicNode> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    }

    /// Resolves once this node no longer believes `leader` leads (or the
    /// node stopped).
    pub(super) async fn leader_moved(&self, leader: u64) {
        let mut metrics = self.raft.metrics();
        // An error means openraft stopped: the leader is gone for us too.
        metrics
            .wait_for(|m| m.current_leader != Some(leader))
            .await
            .ok();
    }

    pub(super) fn leader_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        (m.state == ServerState::Leader && m.current_leader == Some(self.id))
            .then_some(m.current_term)
    }

    /// Whether the membership holds this node at its current address.
    pub(super) fn is_member_here(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let here = m
            .membership_config
            .membership()
            .get_node(&self.id)
            .is_some_and(|n| n.addr == self.addr);
        here
    }

    pub(super) fn is_member(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let is_member = m
            .membership_config
            .membership()
            .get_node(&self.id)
            .is_some();
        is_member
    }

    pub(super) fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.id,
            addr: self.addr.clone(),
            initialized: self.is_member(),
            cluster: self.peers.cluster().tag(),
            initializer: self.initializer.lock().clone(),
        }
    }

    /// This node's own state, for operators' tools.
    pub(super) fn status(&self) -> NodeStatus {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone(), voters.contains(id)))
            .collect();
        let state = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        NodeStatus {
            id: self.id,
            addr: self.addr.clone(),
            state: state.to_owned(),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: self.machines.applied_index(),
            members,
        }
    }

    pub(super) fn next_request(&self) -> RequestId {
        RequestId {
            client: self.incarnation,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Hands the RPC server's task to the node, which ends it on stop.
    pub(super) fn set_server(&self, server: [tokio::task::JoinHandle<()>; 2]) {
        *self.server.lock() = Some(server);
    }

    /// Closes the listening socket at once: a stopped node refuses new
    /// connections instead of accepting them into a server that no longer
    /// serves (peers would wait for a timeout on each call).
    pub(super) fn stop_server(&self) {
        for task in self.server.lock().take().into_iter().flatten() {
            task.abort();
        }
    }

    /// [`stop_server`](Self::stop_server), returning once the socket is
    /// closed (an abort only asks; the task drops the listener when it
    /// next runs), so that the address is free for a restart at once.
    pub(super) async fn stop_server_and_wait(&self) {
        let Some(tasks) = self.server.lock().take() else {
            return;
        };
        for task in tasks {
            task.abort();
            match task.await {
                Err(e) if e.is_panic() => {
                    tracing::warn!(node = self.id, error = %e, "a raft server task panicked")
                }
                _ => {}
            }
        }
    }

    pub(super) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Whether the node has stopped serving (after leaving, if it left).
    pub(super) fn has_stopped_serving(&self) -> bool {
        *self.stop.borrow()
    }

    pub(super) fn is_shutting_down(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.stop.send_replace(true);
        self.stop_server();
        let raft = self.raft.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = raft.shutdown().await {
                    tracing::warn!(error = %e, "openraft did not shut down cleanly");
                }
            });
        }
    }
}

/// What a routed step produced.
#[derive(Clone)]
pub(super) enum Routed<T> {
    Done(Result<T>),
    Retry(String),
}

pub(super) fn unexpected(resp: &ClientResponse) -> Error {
    Error::Protocol {
        backend: BACKEND,
        message: format!("unexpected answer from a peer: {resp:?}"),
    }
}

pub(super) fn stopped(f: &Fatal<u64>) -> Error {
    unavailable(format!("this raft node stopped: {f}"))
}

/// The size side of the snapshot policy (openraft counts entries only):
/// snapshots once the data written since the last one passes the limit.
pub(super) async fn snapshot_when_large(node: Weak<Node>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        if node.is_shutting_down() {
            return;
        }
        if node.machines.written_since_snapshot() >= node.config.snapshot_after_bytes {
            // Ignored by openraft while a snapshot is being built.
            if let Err(e) = node.raft.trigger().snapshot().await {
                tracing::warn!(node = node.id, error = %e, "cannot start a snapshot");
            }
        }
    }
}
