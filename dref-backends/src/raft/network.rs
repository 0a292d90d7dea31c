//! openraft's network: replication RPCs over [`Peers`].

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use super::rpc::{CallError, Peers};
use super::storage::Durability;
use super::types::TypeConfig;

/// Makes one [`PeerLink`] per replication target; all share the node's
/// [`Peers`] (and so one channel per peer).
#[derive(Clone)]
pub struct Network {
    peers: Peers,
    durability: Option<Durability>,
}

impl Network {
    /// A network over `peers`. With the durability of a log whose leader
    /// entries are replicated while they sync, no commit index beyond what
    /// this node's disk holds is told to a follower (see
    /// `storage/durability.rs`).
    pub fn new(peers: Peers, durability: Option<Durability>) -> Self {
        Network { peers, durability }
    }
}

/// The link to one peer.
pub struct PeerLink {
    peers: Peers,
    durability: Option<Durability>,
    target: u64,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerLink;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerLink {
        PeerLink {
            peers: self.peers.clone(),
            durability: self.durability.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

fn transport_error<E: std::error::Error>(e: CallError) -> RPCError<u64, BasicNode, E> {
    match e {
        // A refusing peer (another cluster) is, for openraft, a peer it
        // cannot reach: it backs off instead of retrying at once.
        CallError::Unreachable { .. } | CallError::Refused { .. } => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        #[cfg(feature = "test-util")]
        CallError::Cut(_) => RPCError::Unreachable(Unreachable::new(&e)),
        CallError::Timeout { .. } | CallError::Failed { .. } => {
            RPCError::Network(NetworkError::new(&e))
        }
    }
}

impl PeerLink {
    /// openraft's view of a call's outcome: the peer's own error, or a
    /// transport failure.
    // The error type is the one openraft's `RaftNetwork` methods return.
    #[allow(clippy::result_large_err)]
    fn answer<T, E: std::error::Error>(
        &self,
        called: Result<Result<T, E>, CallError>,
    ) -> Result<T, RPCError<u64, BasicNode, E>> {
        match called {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                BasicNode::new(&self.addr),
                e,
            ))),
            Err(e) => Err(transport_error(e)),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        if let Some(durability) = &self.durability {
            // A commit counted with this leader's copy still syncing is not
            // told before the copy is on disk: a follower would apply an
            // entry that a crash of this node could still take back.
            let durable = durability.durable();
            let ahead =
                |commit: &openraft::LogId<u64>| durable.is_none_or(|d| d.index < commit.index);
            if let Some(commit) = rpc.leader_commit.filter(ahead) {
                rpc.leader_commit = durable;
                durability.withhold(commit.index);
            }
        }
        let called = self
            .peers
            .append(&self.addr, self.target, rpc, option.hard_ttl())
            .await;
        self.answer(called)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let called = self
            .peers
            .snapshot(&self.addr, self.target, rpc, option.hard_ttl())
            .await;
        self.answer(called)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let called = self
            .peers
            .vote(&self.addr, self.target, rpc, option.hard_ttl())
            .await;
        self.answer(called)
    }

    fn backoff(&self) -> Backoff {
        // An unreachable peer is retried quickly at first, then every
        // second, so a dead replica costs little and a restarted one is
        // found soon.
        Backoff::new(
            (0..)
                .map(|n: u32| Duration::from_millis(50u64 << n.min(4)).min(Duration::from_secs(1))),
        )
    }
}

/// Sends the followers a heartbeat whenever a commit index held back from
/// them (because this leader's disk did not hold it yet) is on disk, so
/// that they learn it at once rather than at the next heartbeat. Ends with
/// the node.
pub(super) async fn tell_withheld_commits(
    raft: openraft::Raft<TypeConfig>,
    durability: Durability,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = durability.withheld_reached() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        if raft.trigger().heartbeat().await.is_err() {
            // The core has stopped: so has the node.
            return;
        }
    }
}
