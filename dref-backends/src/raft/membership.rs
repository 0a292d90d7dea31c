//! Membership: forming a cluster, joining and leaving it, and handing
//! over the leadership when the leader leaves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use dref::{Error, Result};

use openraft::error::RaftError;
use openraft::{BasicNode, ChangeMembers};
use tokio::time::Instant;

use super::cluster::ClusterTag;
use super::node::{stopped, unavailable, Node};
use super::rpc::{ClientRequest, ClientResponse};
use super::types::millis;

impl Node {
    /// Adds a node as a learner, then as a voter while there are fewer
    /// than `max_voters`; first removes stale members at the same address
    /// (a replica that restarted with a fresh identity). A member that
    /// comes back (with its data directory) at another address gets its
    /// address updated. Answers with the cluster's id, which the node
    /// keeps; a node of another cluster is refused.
    pub(super) async fn join_local(
        &self,
        id: u64,
        addr: String,
        cluster: ClusterTag,
    ) -> ClientResponse {
        let _serial = self.membership_lock.lock().await;
        if self.leader_term().is_none() {
            return ClientResponse::NotLeader(self.leader());
        }
        let ours = self.peers.cluster().tag();
        if let Some(why) = ours.refuses(&cluster) {
            return ClientResponse::Refused(why);
        }
        let Some(cluster_id) = ours.id else {
            // Only a cluster formed before ids existed has none: this
            // leader draws one now, and the members learn it as they join.
            return match self.peers.cluster().adopt(super::random_id(&self.addr)) {
                Ok(()) => ClientResponse::Failed("the cluster id was just drawn; try again".into()),
                Err(why) => ClientResponse::Failed(why),
            };
        };
        let membership = self.membership();
        if let Some(known) = membership.get_node(&id).filter(|n| n.addr != addr) {
            let moved = BTreeMap::from([(id, BasicNode::new(&addr))]);
            if let Err(e) = self
                .raft
                .change_membership(ChangeMembers::SetNodes(moved), false)
                .await
            {
                return ClientResponse::Failed(format!("moving member {id} to {addr}: {e}"));
            }
            tracing::info!(member = id, from = %known.addr, to = %addr, "a member came back at a new address");
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
            let removed = self
                .raft
                .change_membership(ChangeMembers::RemoveNodes(stale.clone()), false)
                .await;
            match removed {
                Ok(_) => {
                    tracing::info!(?stale, %addr, "removed the stale members at a rejoining address")
                }
                // Harmless: a learner left over is never counted for a
                // majority, and the next join tries again.
                Err(e) => tracing::warn!(?stale, %addr, error = %e, "cannot remove stale learners"),
            }
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
        ClientResponse::Joined(cluster_id)
    }

    pub(super) async fn leave_local(&self, id: u64) -> ClientResponse {
        let _serial = self.membership_lock.lock().await;
        if self.leader_term().is_none() {
            return ClientResponse::NotLeader(self.leader());
        }
        let membership = self.membership();
        if membership.voter_ids().any(|v| v == id) {
            if membership.voter_ids().count() == 1 {
                return ClientResponse::LastVoter;
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

    /// Forms a one-node cluster with this node as its first member, under
    /// a fresh cluster id (kept in the data directory first).
    pub(super) async fn initialize(&self) -> Result<()> {
        if self.peers.cluster().tag().id.is_none() {
            self.peers
                .cluster()
                .adopt(super::random_id(&self.addr))
                .map_err(|why| unavailable(format!("cannot form a cluster: {why}")))?;
        }
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
                cluster: self.peers.cluster().tag(),
            };
            match self
                .peers
                .client(&target, req, self.config.request_timeout)
                .await
            {
                Ok(ClientResponse::Joined(cluster)) => {
                    return self
                        .peers
                        .cluster()
                        .adopt(cluster)
                        .map_err(|why| Error::Config(format!("joining through {target}: {why}")));
                }
                Ok(ClientResponse::Refused(why)) => {
                    self.peers
                        .cluster()
                        .refused_by(&target, format!("{target} refused this node: {why}"));
                    return Err(Error::Config(format!("{target} refused this node: {why}")));
                }
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
                        ClientResponse::LastVoter => break,
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            };
            if tokio::time::timeout_at(deadline, leave).await.is_err() {
                tracing::warn!(
                    node = self.id,
                    "stopping without confirmation that this node left the membership \
                     (no leader with a majority answered in time)"
                );
            }
        }
        self.stop.send_replace(true);
        self.stop_server_and_wait().await;
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(node = self.id, error = %e, "openraft did not shut down cleanly");
        }
    }

    /// After this leader removed itself: asks the most up-to-date
    /// remaining voter to campaign as soon as the others' leader lease
    /// allows, instead of everyone waiting for an election timeout.
    /// (openraft 0.9 has no leadership transfer, and followers refuse to
    /// vote while the lease of the leader they last heard runs; the lease
    /// is half the configured maximum election timeout.)
    pub(super) async fn hand_over(&self) {
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
        if let Err(e) = self
            .peers
            .client(&addr, request, Duration::from_secs(1))
            .await
        {
            tracing::debug!(successor = %addr, error = %e, "hand-over not delivered");
        }
    }

    /// Campaigns after `after` if the departed leader is still the last
    /// one this node knows.
    pub(super) fn campaign_later(self: &Arc<Self>, departed: u64, after: Duration) {
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(node) = node.upgrade() else { return };
            let leader = node.leader().map(|(id, _)| id);
            if !node.is_shutting_down() && (leader.is_none() || leader == Some(departed)) {
                if let Err(e) = node.raft.trigger().elect().await {
                    tracing::debug!(node = node.id, error = %e, "hand-over campaign not started");
                }
            }
        });
    }
}
