//! What an operator sees of a node: log events for a change of leader,
//! term or membership, and the node's gauges (see the metrics table in
//! `dref::metrics`), updated from openraft's metrics as they change.

use metrics::{counter, gauge};
use openraft::Raft;

use super::types::TypeConfig;

/// Logs what an operator must know of the cluster as this node sees it
/// (a change of leader or term, and of membership) and keeps the node's
/// gauges current.
pub(super) async fn report_changes(raft: Raft<TypeConfig>, id: u64) {
    let mut metrics = raft.metrics();
    let mut leader = None;
    let mut membership = None;
    let node = id.to_string();
    // Ends when openraft stops (the metrics' sender is dropped).
    while metrics.changed().await.is_ok() {
        let m = metrics.borrow_and_update().clone();
        record(&node, id, &m);
        if m.current_leader != leader {
            counter!("dref_raft_leader_changes_total", "node" => node.clone()).increment(1);
            leader = m.current_leader;
            match leader {
                Some(l) if l == id => {
                    tracing::info!(
                        node = id,
                        term = m.current_term,
                        "this node leads the raft cluster"
                    )
                }
                Some(l) => tracing::info!(
                    node = id,
                    leader = l,
                    term = m.current_term,
                    "raft leader changed"
                ),
                None => tracing::warn!(node = id, term = m.current_term, "no raft leader known"),
            }
        }
        let config = m.membership_config.log_id().map(|l| l.index);
        if config != membership {
            membership = config;
            let members = m.membership_config.membership();
            tracing::info!(
                node = id,
                voters = ?members.voter_ids().collect::<Vec<_>>(),
                learners = ?members.learner_ids().collect::<Vec<_>>(),
                "raft membership changed"
            );
        }
    }
}

/// Sets the node's gauges from one reading of openraft's metrics.
fn record(node: &str, id: u64, m: &openraft::RaftMetrics<u64, openraft::BasicNode>) {
    let last_log = m.last_log_index.unwrap_or(0);
    let applied = m.last_applied.map_or(0, |l| l.index);
    let leads = m.current_leader == Some(id);
    gauge!("dref_raft_leader", "node" => node.to_owned()).set(if leads { 1.0 } else { 0.0 });
    gauge!("dref_raft_term", "node" => node.to_owned()).set(m.current_term as f64);
    gauge!("dref_raft_last_log_index", "node" => node.to_owned()).set(last_log as f64);
    gauge!("dref_raft_applied_index", "node" => node.to_owned()).set(applied as f64);
    gauge!("dref_raft_apply_lag", "node" => node.to_owned())
        .set(last_log.saturating_sub(applied) as f64);
    let voters = m.membership_config.membership().voter_ids().count();
    gauge!("dref_raft_voters", "node" => node.to_owned()).set(voters as f64);
    if let Some(replication) = &m.replication {
        for (peer, matched) in replication {
            let lag = last_log.saturating_sub(matched.map_or(0, |l| l.index));
            let (node, peer) = (node.to_owned(), peer.to_string());
            gauge!("dref_raft_replication_lag", "node" => node, "peer" => peer).set(lag as f64);
        }
    }
}
