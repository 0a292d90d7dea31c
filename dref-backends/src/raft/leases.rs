//! The leader's lease deadlines: restarted by keep-alives (vouched for
//! only with a majority's confirmation), checked every heartbeat, and
//! expired through the log.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dref::engine::LeaseId;
use dref::{Error, Result};
use futures_util::FutureExt;
use tokio::time::Instant;

use super::node::{unexpected, Node, Routed};
use super::rpc::{ClientRequest, ClientResponse};
use super::types::{Command, CommandOp};

/// Lease deadlines, kept by the leader only and never replicated. They
/// belong to one leadership term: a new term starts every deadline afresh
/// (a full TTL from when the new leader first sees the lease), so a
/// deadline is never shortened by a change of leader.
#[derive(Default)]
pub(super) struct Deadlines {
    term: u64,
    due: HashMap<LeaseId, Instant>,
}

impl Deadlines {
    /// The deadlines of `term`: all of them dropped when the term is new.
    pub(super) fn of_term(&mut self, term: u64) -> &mut HashMap<LeaseId, Instant> {
        if self.term != term {
            self.term = term;
            self.due.clear();
        }
        &mut self.due
    }
}

impl Node {
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
    pub(super) async fn keep_alive_local(&self, lease: LeaseId) -> Routed<()> {
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
        let Some(term) = self.leader_term() else {
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
    pub(super) fn due_leases(&self) -> Vec<LeaseId> {
        let Some(term) = self.leader_term() else {
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
        if node.is_shutting_down() {
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
