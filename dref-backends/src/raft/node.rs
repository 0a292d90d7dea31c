//! One embedded node: the openraft instance, its RPC server, request
//! routing to the leader, and the leader's lease deadlines.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dref::engine::{Key, LeaseId, Record};
use dref::{Error, Result};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use openraft::error::{CheckIsLeaderError, ClientWriteError, Fatal, RaftError};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::{BasicNode, ChangeMembers, Membership, Raft, ServerState};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::config::RaftConfig;
use super::rpc::{
    ClientRequest, ClientResponse, Handler, LeaderHint, NodeInfo, Peers, RaftResult, SnapshotChunk,
    SnapshotResult,
};
use super::state_machine::Machines;
use super::types::{millis, Applied, Command, CommandOp, RequestId, TypeConfig};

pub(super) const BACKEND: &str = "raft";

fn unavailable(message: impl Into<String>) -> Error {
    Error::Unavailable {
        backend: BACKEND,
        message: message.into(),
    }
}

/// Lease deadlines, kept by the leader only and never replicated. They
/// belong to one leadership term: a new term starts every deadline afresh
/// (a full TTL from when the new leader first sees the lease), so a
/// deadline is never shortened by a change of leader.
#[derive(Default)]
struct Deadlines {
    term: u64,
    due: HashMap<LeaseId, Instant>,
}

impl Deadlines {
    /// The deadlines of `term`: all of them dropped when the term is new.
    fn of_term(&mut self, term: u64) -> &mut HashMap<LeaseId, Instant> {
        if self.term != term {
            self.term = term;
            self.due.clear();
        }
        &mut self.due
    }
}

pub(super) struct Node {
    pub(super) id: u64,
    pub(super) addr: String,
    pub(super) config: RaftConfig,
    pub(super) raft: Raft<TypeConfig>,
    pub(super) machines: Arc<Machines>,
    pub(super) peers: Peers,
    deadlines: Mutex<Deadlines>,
    seq: AtomicU64,
    membership_lock: tokio::sync::Mutex<()>,
    stop: watch::Sender<bool>,
    stopped: AtomicBool,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
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
        Node {
            id,
            addr,
            config,
            raft,
            machines,
            peers,
            deadlines: Mutex::default(),
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
    fn membership(&self) -> Membership<u64, BasicNode> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    }

    /// Resolves once this node no longer believes `leader` leads (or the
    /// node stopped).
    async fn leader_moved(&self, leader: u64) {
        let mut metrics = self.raft.metrics();
        let _ = metrics.wait_for(|m| m.current_leader != Some(leader)).await;
    }

    fn is_leader(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        (m.state == ServerState::Leader && m.current_leader == Some(self.id))
            .then_some(m.current_term)
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

    fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.id,
            addr: self.addr.clone(),
            initialized: self.is_member(),
            initializer: self.initializer.lock().clone(),
        }
    }

    fn next_request(&self) -> RequestId {
        RequestId {
            client: self.id,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Runs `local` when this node leads, else sends `remote` to the
    /// leader; retries across leader changes until the request timeout.
    async fn route<T>(
        &self,
        what: &str,
        remote: ClientRequest,
        mut local: impl FnMut() -> BoxFuture<'static, Routed<T>>,
        mut answer: impl FnMut(ClientResponse) -> Routed<T>,
    ) -> Result<T> {
        let timeout = self.config.request_timeout;
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(5);
        let mut last;
        loop {
            if self.stopped.load(Ordering::Acquire) {
                return Err(unavailable("this raft node was shut down"));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let routed = match self.leader() {
                Some((leader, _)) if leader == self.id => {
                    let attempt = tokio::time::timeout(remaining, local());
                    tokio::select! {
                        done = attempt => done.unwrap_or_else(|_| {
                            Routed::Retry("the leader did not commit in time".into())
                        }),
                        () = self.leader_moved(leader) => {
                            Routed::Retry("this node lost the leadership".into())
                        }
                    }
                }
                Some((leader, addr)) => {
                    // A leader that dies mid-call never answers: give up
                    // on it as soon as this node sees the leadership move
                    // (its election timeout), and resend to the next one.
                    // A resent proposal keeps its request id, so it is
                    // applied at most once.
                    let call = self.peers.client(&addr, remote.clone(), remaining);
                    tokio::select! {
                        answered = call => match answered {
                            Ok(resp) => answer(resp),
                            Err(e) => Routed::Retry(format!("leader {leader} at {addr}: {e}")),
                        },
                        () = self.leader_moved(leader) => {
                            Routed::Retry(format!("leader {leader} at {addr} lost the leadership"))
                        }
                    }
                }
                None => Routed::Retry("no leader is known".into()),
            };
            match routed {
                Routed::Done(result) => return result,
                Routed::Retry(why) => last = why,
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(unavailable(format!(
                    "{what} could not be completed within {timeout:?}: {last}"
                )));
            }
            tokio::time::sleep(backoff.min(remaining)).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// Commits a command through the leader and returns its result once
    /// this node has applied it too, so a caller reads its own write from
    /// this node's state (watches, `peek`, lock monitors) right away.
    pub(super) async fn propose(self: &Arc<Self>, op: CommandOp) -> Result<Applied> {
        let command = Command {
            id: self.next_request(),
            op,
        };
        let node = self.clone();
        let local_command = command.clone();
        let (applied, index) = self
            .route(
                "the write",
                ClientRequest::Propose(command),
                move || {
                    let (node, command) = (node.clone(), local_command.clone());
                    async move { node.commit_local(command).await }.boxed()
                },
                |resp| match resp {
                    ClientResponse::Applied(applied, index) => Routed::Done(Ok((applied, index))),
                    ClientResponse::NotLeader(_) | ClientResponse::Failed(_) => {
                        Routed::Retry(format!("{resp:?}"))
                    }
                    other => Routed::Done(Err(unexpected(&other))),
                },
            )
            .await?;
        self.applied_at_least(index, "the write").await?;
        Ok(applied)
    }

    /// Waits until this node's state machine has applied `index`.
    async fn applied_at_least(&self, index: u64, what: &str) -> Result<()> {
        if self.machines.applied_index() >= index {
            return Ok(());
        }
        self.raft
            .wait(Some(self.config.request_timeout))
            .applied_index_at_least(Some(index), what)
            .await
            .map(|_| ())
            .map_err(|e| {
                unavailable(format!(
                    "{what} committed at index {index}, but this node did not apply it in time: {e}"
                ))
            })
    }

    async fn commit_local(&self, command: Command) -> Routed<(Applied, u64)> {
        match self.raft.client_write(command).await {
            Ok(resp) => Routed::Done(Ok((resp.data, resp.log_id.index))),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Routed::Retry(format!("leadership moved: {f}"))
            }
            Err(RaftError::APIError(e)) => Routed::Retry(e.to_string()),
            Err(RaftError::Fatal(f)) => Routed::Done(Err(stopped(&f))),
        }
    }

    /// The index a linearizable read must see: confirmed by the leader
    /// with a heartbeat round, then awaited in the local applied state.
    pub(super) async fn read(self: &Arc<Self>, key: Key) -> Result<Option<Record>> {
        let node = self.clone();
        let index = self
            .route(
                "the linearizable read",
                ClientRequest::ReadIndex,
                move || {
                    let node = node.clone();
                    async move { node.read_index_local().await }.boxed()
                },
                |resp| match resp {
                    ClientResponse::ReadIndex(index) => Routed::Done(Ok(index)),
                    ClientResponse::NotLeader(_) | ClientResponse::Failed(_) => {
                        Routed::Retry(format!("{resp:?}"))
                    }
                    other => Routed::Done(Err(unexpected(&other))),
                },
            )
            .await?;
        self.applied_at_least(index, "the linearizable read")
            .await?;
        Ok(self.machines.get(&key))
    }

    async fn read_index_local(&self) -> Routed<u64> {
        match self.raft.ensure_linearizable().await {
            Ok(log_id) => Routed::Done(Ok(log_id.map_or(0, |l| l.index))),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Routed::Retry(format!("leadership moved: {f}"))
            }
            Err(RaftError::APIError(e)) => Routed::Retry(e.to_string()),
            Err(RaftError::Fatal(f)) => Routed::Done(Err(stopped(&f))),
        }
    }

    /// Restarts a lease's deadline on the leader.
    pub(super) async fn keep_alive(self: &Arc<Self>, lease: LeaseId) -> Result<()> {
        let node = self.clone();
        self.route(
            "the lease keep-alive",
            ClientRequest::KeepAlive(lease.0),
            move || {
                let node = node.clone();
                async move { node.keep_alive_local(lease).await }.boxed()
            },
            |resp| match resp {
                ClientResponse::Done => Routed::Done(Ok(())),
                ClientResponse::LeaseExpired => Routed::Done(Err(Error::LeaseExpired { lease })),
                ClientResponse::NotLeader(_) | ClientResponse::Failed(_) => {
                    Routed::Retry(format!("{resp:?}"))
                }
                other => Routed::Done(Err(unexpected(&other))),
            },
        )
        .await
    }

    /// Restarts a lease's deadline, vouched for by this leader only after
    /// a majority has confirmed, in a heartbeat round started after the
    /// keep-alive arrived, that it still leads.
    ///
    /// Why that is enough: any later leader is elected by a majority, which
    /// shares a node with the majority that confirmed; that node voted for
    /// the new leader after it confirmed this one (it would have refused
    /// our heartbeat otherwise), so the new leader's term starts after the
    /// keep-alive arrived, and a new term starts every deadline afresh (a
    /// full TTL from then). The holder, which trusts the lease for less
    /// than a TTL from when it sent the keep-alive, stops trusting it before
    /// any leader can expire it. A leader cut off from its majority cannot
    /// confirm, so it vouches for nothing (openraft 0.9 does not make an
    /// isolated leader step down by itself).
    async fn keep_alive_local(&self, lease: LeaseId) -> Routed<()> {
        // The confirmation is also the read barrier that settles a grant
        // committed but not yet applied here before answering "expired".
        match self.read_index_local().await {
            Routed::Done(Ok(_)) => {}
            Routed::Done(Err(e)) => return Routed::Done(Err(e)),
            Routed::Retry(why) => return Routed::Retry(why),
        }
        let Some(ttl) = self.machines.lease_ttl(lease) else {
            return Routed::Done(Err(Error::LeaseExpired { lease }));
        };
        let Some(term) = self.is_leader() else {
            return Routed::Retry("not the leader".into());
        };
        self.deadlines
            .lock()
            .of_term(term)
            .insert(lease, Instant::now() + ttl);
        Routed::Done(Ok(()))
    }

    /// One round of the leader's lease check: the leases whose deadlines
    /// have passed.
    fn due_leases(&self) -> Vec<LeaseId> {
        let Some(term) = self.is_leader() else {
            self.deadlines.lock().due.clear();
            return Vec::new();
        };
        let leases = self.machines.leases();
        let now = Instant::now();
        let mut deadlines = self.deadlines.lock();
        let due = deadlines.of_term(term);
        let live: BTreeSet<LeaseId> = leases.iter().map(|(id, _)| *id).collect();
        due.retain(|id, _| live.contains(id));
        leases
            .into_iter()
            .filter(|(id, ttl)| *due.entry(*id).or_insert(now + *ttl) <= now)
            .map(|(id, _)| id)
            .collect()
    }

    /// Adds a node as a learner, then as a voter while there are fewer
    /// than `max_voters`; first removes stale members at the same address
    /// (a replica that restarted with a fresh identity).
    async fn join_local(&self, id: u64, addr: String) -> ClientResponse {
        let _serial = self.membership_lock.lock().await;
        if self.is_leader().is_none() {
            return ClientResponse::NotLeader(self.leader());
        }
        let membership = self.membership();
        let stale: BTreeSet<u64> = membership
            .nodes()
            .filter(|(nid, node)| **nid != id && node.addr == addr)
            .map(|(nid, _)| *nid)
            .collect();
        if !stale.is_empty() {
            let voters: BTreeSet<u64> = membership
                .voter_ids()
                .filter(|v| stale.contains(v))
                .collect();
            if !voters.is_empty() {
                if let Err(e) = self
                    .raft
                    .change_membership(ChangeMembers::RemoveVoters(voters), false)
                    .await
                {
                    return ClientResponse::Failed(format!(
                        "removing the stale member at {addr}: {e}"
                    ));
                }
            }
            let _ = self
                .raft
                .change_membership(ChangeMembers::RemoveNodes(stale), false)
                .await;
        }
        let membership = self.membership();
        if membership.get_node(&id).is_none() {
            if let Err(e) = self.raft.add_learner(id, BasicNode::new(&addr), true).await {
                return ClientResponse::Failed(format!("adding {addr} as a learner: {e}"));
            }
        }
        let membership = self.membership();
        let voters = membership.voter_ids().count();
        if !membership.voter_ids().any(|v| v == id) && voters < self.config.max_voters {
            let add = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
            if let Err(e) = self.raft.change_membership(add, false).await {
                return ClientResponse::Failed(format!("promoting {addr} to voter: {e}"));
            }
        }
        ClientResponse::Done
    }

    async fn leave_local(&self, id: u64) -> ClientResponse {
        let _serial = self.membership_lock.lock().await;
        if self.is_leader().is_none() {
            return ClientResponse::NotLeader(self.leader());
        }
        let membership = self.membership();
        if membership.voter_ids().any(|v| v == id) {
            if membership.voter_ids().count() == 1 {
                return ClientResponse::Failed("the last voter cannot leave".into());
            }
            if let Err(e) = self
                .raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
            {
                return ClientResponse::Failed(e.to_string());
            }
        }
        let membership = self.membership();
        if membership.get_node(&id).is_some() {
            if let Err(e) = self
                .raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
            {
                return ClientResponse::Failed(e.to_string());
            }
        }
        ClientResponse::Done
    }

    /// Forms a one-node cluster with this node as its first member.
    pub(super) async fn initialize(&self) -> Result<()> {
        let members = BTreeMap::from([(self.id, BasicNode::new(&self.addr))]);
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(e)) => {
                Err(unavailable(format!("cannot initialize the cluster: {e}")))
            }
            Err(RaftError::Fatal(f)) => Err(stopped(&f)),
        }
    }

    /// Asks the cluster (through `via`) to add this node.
    pub(super) async fn request_join(&self, via: &str) -> Result<()> {
        let mut target = via.to_owned();
        for _ in 0..4 {
            let req = ClientRequest::Join {
                id: self.id,
                addr: self.addr.clone(),
            };
            match self
                .peers
                .client(&target, req, self.config.request_timeout)
                .await
            {
                Ok(ClientResponse::Done) => return Ok(()),
                Ok(ClientResponse::NotLeader(Some((_, leader)))) => target = leader,
                Ok(other) => {
                    return Err(unavailable(format!("joining through {target}: {other:?}")))
                }
                Err(e) => return Err(unavailable(format!("joining through {target}: {e}"))),
            }
        }
        Err(unavailable(format!(
            "joining through {via}: no stable leader"
        )))
    }

    /// Leaves the membership (best effort), then stops.
    pub(super) async fn shutdown(&self, leave: bool) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        if leave && self.is_member() {
            // Long enough for an election after a leader that left just
            // before (several replicas leaving together) and a commit.
            let deadline =
                Instant::now() + self.config.election_timeout.1 * 2 + self.config.request_timeout;
            let call_timeout = Duration::from_secs(2);
            // Bounded as a whole: a membership change on a leader that has
            // lost its majority never completes.
            let leave = async {
                while self.is_member() {
                    let answer = match self.leader() {
                        Some((leader, _)) if leader == self.id => {
                            let answer = self.leave_local(self.id).await;
                            if matches!(answer, ClientResponse::Done) {
                                self.hand_over().await;
                            }
                            answer
                        }
                        Some((_, addr)) => self
                            .peers
                            .client(&addr, ClientRequest::Leave { id: self.id }, call_timeout)
                            .await
                            .unwrap_or_else(|e| ClientResponse::Failed(e.to_string())),
                        None => ClientResponse::NotLeader(None),
                    };
                    match answer {
                        ClientResponse::Done => break,
                        ClientResponse::Failed(m) if m.contains("last voter") => break,
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            };
            let _ = tokio::time::timeout_at(deadline, leave).await;
        }
        let _ = self.stop.send(true);
        self.stop_server();
        let _ = self.raft.shutdown().await;
    }

    /// After this leader removed itself: asks the most up-to-date
    /// remaining voter to campaign as soon as the others' leader lease
    /// allows, instead of everyone waiting for an election timeout.
    /// (openraft 0.9 has no leadership transfer, and followers refuse to
    /// vote while the lease of the leader they last heard runs; the lease
    /// is half the configured maximum election timeout.)
    async fn hand_over(&self) {
        let addr = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let matched = |id: &u64| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|log_id| log_id.index)
            };
            let Some(successor) = membership
                .voter_ids()
                .filter(|id| *id != self.id)
                .max_by_key(|id| matched(id))
            else {
                return;
            };
            let Some(node) = membership.get_node(&successor) else {
                return;
            };
            node.addr.clone()
        };
        let lease = self.config.election_timeout.1 / 2;
        let request = ClientRequest::Campaign {
            departed: self.id,
            after_ms: millis(lease + self.config.heartbeat),
        };
        // Best effort: without it the survivors elect on their own timers.
        let _ = self
            .peers
            .client(&addr, request, Duration::from_secs(1))
            .await;
    }

    /// Campaigns after `after` if the departed leader is still the last
    /// one this node knows.
    fn campaign_later(self: &Arc<Self>, departed: u64, after: Duration) {
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(node) = node.upgrade() else { return };
            let leader = node.leader().map(|(id, _)| id);
            if !node.is_stopped() && (leader.is_none() || leader == Some(departed)) {
                let _ = node.raft.trigger().elect().await;
            }
        });
    }

    /// Hands the RPC server's task to the node, which ends it on stop.
    pub(super) fn set_server(&self, server: tokio::task::JoinHandle<()>) {
        *self.server.lock() = Some(server);
    }

    /// Closes the listening socket at once: a stopped node refuses new
    /// connections instead of accepting them into a server that no longer
    /// serves (peers would wait for a timeout on each call).
    fn stop_server(&self) {
        if let Some(server) = self.server.lock().take() {
            server.abort();
        }
    }

    pub(super) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Whether the node has stopped serving (after leaving, if it left).
    fn has_stopped(&self) -> bool {
        *self.stop.borrow()
    }

    pub(super) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.stop.send(true);
        self.stop_server();
        let raft = self.raft.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = raft.shutdown().await;
            });
        }
    }
}

/// What a routed step produced.
enum Routed<T> {
    Done(Result<T>),
    Retry(String),
}

fn unexpected(resp: &ClientResponse) -> Error {
    Error::Protocol {
        backend: BACKEND,
        message: format!("unexpected answer from a peer: {resp:?}"),
    }
}

fn stopped(f: &Fatal<u64>) -> Error {
    unavailable(format!("this raft node stopped: {f}"))
}

/// The leader's lease check, every heartbeat interval: leases past their
/// deadline are revoked through the log, so every node deletes the same
/// records at the same revisions.
pub(super) async fn expire_leases(node: Weak<Node>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        if node.is_stopped() {
            return;
        }
        for lease in node.due_leases() {
            // Committed here or not at all: a deadline belongs to this
            // leader's term, and forwarding the revoke to a next leader
            // would cut short the deadline it restarted. After a lost
            // leadership the next leader decides on its own deadlines.
            let command = Command {
                id: node.next_request(),
                op: CommandOp::Revoke { lease: lease.0 },
            };
            if let Routed::Retry(_) = node.commit_local(command).await {
                break;
            }
        }
    }
}

/// The size side of the snapshot policy (openraft counts entries only):
/// snapshots once the data written since the last one passes the limit.
pub(super) async fn snapshot_when_large(node: Weak<Node>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        if node.is_stopped() {
            return;
        }
        if node.machines.written_since_snapshot() >= node.config.snapshot_after_bytes {
            // Ignored by openraft while a snapshot is being built.
            let _ = node.raft.trigger().snapshot().await;
        }
    }
}

/// Serves the RPCs of a node it does not keep alive.
pub(super) struct Rpc {
    pub(super) node: Weak<Node>,
}

impl Rpc {
    /// Hands a replication message to the node's Raft. A leaving node keeps
    /// answering replication until it has left: its own removal may need
    /// its acknowledgement.
    fn replicate<T, E, F, Fut>(&self, call: F) -> BoxFuture<'static, Result<T, RaftError<u64, E>>>
    where
        F: FnOnce(Raft<TypeConfig>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, RaftError<u64, E>>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let raft = self
            .node
            .upgrade()
            .filter(|n| !n.has_stopped())
            .map(|n| n.raft.clone());
        async move {
            match raft {
                Some(raft) => call(raft).await,
                None => Err(RaftError::Fatal(Fatal::Stopped)),
            }
        }
        .boxed()
    }
}

impl Handler for Rpc {
    fn append(
        &self,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> BoxFuture<'static, RaftResult<AppendEntriesResponse<u64>>> {
        self.replicate(|raft| async move { raft.append_entries(req).await })
    }

    fn vote(&self, req: VoteRequest<u64>) -> BoxFuture<'static, RaftResult<VoteResponse<u64>>> {
        self.replicate(|raft| async move { raft.vote(req).await })
    }

    fn snapshot(&self, req: SnapshotChunk) -> BoxFuture<'static, SnapshotResult> {
        self.replicate(|raft| async move { raft.install_snapshot(req.into()).await })
    }

    fn node_id(&self) -> Option<u64> {
        self.node.upgrade().map(|n| n.id)
    }

    fn client(&self, req: ClientRequest) -> BoxFuture<'static, ClientResponse> {
        let node = self.node.upgrade().filter(|n| !n.is_stopped());
        async move {
            let Some(node) = node else {
                return ClientResponse::Failed("the node is shutting down".into());
            };
            let not_leader = || ClientResponse::NotLeader(node.leader());
            fn done<T>(
                node: &Node,
                routed: Routed<T>,
                ok: fn(T) -> ClientResponse,
            ) -> ClientResponse {
                match routed {
                    Routed::Done(Ok(v)) => ok(v),
                    Routed::Done(Err(Error::LeaseExpired { .. })) => ClientResponse::LeaseExpired,
                    Routed::Done(Err(e)) => ClientResponse::Failed(e.to_string()),
                    Routed::Retry(_) => ClientResponse::NotLeader(node.leader()),
                }
            }
            match req {
                ClientRequest::Hello => ClientResponse::Hello(node.info()),
                ClientRequest::Campaign { departed, after_ms } => {
                    node.campaign_later(departed, Duration::from_millis(after_ms));
                    ClientResponse::Done
                }
                _ if node.is_leader().is_none() => not_leader(),
                ClientRequest::Propose(command) => {
                    let timeout = node.config.request_timeout;
                    let mut stop = node.stop_signal();
                    tokio::select! {
                        committed = tokio::time::timeout(timeout, node.commit_local(command)) => {
                            match committed {
                                Ok(routed) => done(&node, routed, |(applied, index)| {
                                    ClientResponse::Applied(applied, index)
                                }),
                                Err(_) => ClientResponse::Failed(
                                    "the leader did not commit in time".into(),
                                ),
                            }
                        }
                        _ = stop.wait_for(|s| *s) => {
                            ClientResponse::Failed("the node is shutting down".into())
                        }
                    }
                }
                ClientRequest::ReadIndex => done(
                    &node,
                    node.read_index_local().await,
                    ClientResponse::ReadIndex,
                ),
                ClientRequest::KeepAlive(lease) => {
                    done(&node, node.keep_alive_local(LeaseId(lease)).await, |()| {
                        ClientResponse::Done
                    })
                }
                // Bounded, as they hold the membership lock: a change on a
                // leader that lost its majority never completes.
                ClientRequest::Join { id, addr } => {
                    let timeout = node.config.request_timeout;
                    tokio::time::timeout(timeout, node.join_local(id, addr))
                        .await
                        .unwrap_or_else(|_| {
                            ClientResponse::Failed("the join did not complete in time".into())
                        })
                }
                ClientRequest::Leave { id } => {
                    let timeout = node.config.request_timeout;
                    tokio::time::timeout(timeout, node.leave_local(id))
                        .await
                        .unwrap_or_else(|_| {
                            ClientResponse::Failed("the leave did not complete in time".into())
                        })
                }
            }
        }
        .boxed()
    }
}
