//! Finding peers and forming one cluster without an operator.
//!
//! A node that is not a member yet repeats, every discovery interval:
//! resolve the configured peers (static addresses and DNS names), ask each
//! who it is (`Hello`), then
//! - if any peer belongs to a cluster, ask it to add this node (the request
//!   reaches the leader, which adds it as a learner, then as a voter while
//!   there are fewer voters than the maximum);
//! - otherwise, once the set of reachable nodes has been the same for
//!   [`STABLE_ROUNDS`] rounds, the node with the lowest advertised address
//!   initializes a one-node cluster, and the others join it in the next
//!   rounds. Every replica applies the same rule to the same set, so
//!   replicas started together form exactly one cluster. Each node also
//!   announces whom it expects to initialize, and a node initializes only
//!   when every peer it reaches names it: when reachability is lopsided (B
//!   cannot reach A, C reaches both), B does not start a second cluster
//!   beside A's; bootstrap waits until the views agree. A node that a peer
//!   refuses (another cluster, a TLS certificate it does not accept) never
//!   forms a cluster: it would be a second one beside the peer's, holding
//!   writes nobody else sees; its start fails with the refusal instead.

use std::collections::BTreeSet;
use std::sync::Weak;
use std::time::Duration;

use futures_util::future::join_all;

use super::config::RaftConfig;
use super::node::Node;
use super::rpc::{ClientRequest, ClientResponse, NodeInfo};

/// Rounds the reachable set must stay unchanged before the lowest address
/// initializes a cluster.
pub const STABLE_ROUNDS: u32 = 3;

/// The configured peers' addresses right now (DNS names re-resolved).
pub(super) async fn peer_addresses(config: &RaftConfig) -> BTreeSet<String> {
    let mut addrs: BTreeSet<String> = config.peers.iter().cloned().collect();
    for name in &config.services {
        if let Ok(found) = tokio::net::lookup_host((name.as_str(), config.service_port)).await {
            addrs.extend(found.map(|a| a.to_string()));
        }
    }
    addrs
}

/// Runs until the node is a member of a cluster (or is dropped).
pub(super) async fn bootstrap(node: Weak<Node>) {
    let mut last_seen: Option<BTreeSet<String>> = None;
    let mut stable = 0;
    let mut warned: BTreeSet<String> = BTreeSet::new();
    loop {
        let Some(n) = node.upgrade() else { return };
        if n.is_shutting_down() || n.is_member_here() {
            return;
        }
        let interval = n.config.discovery_interval;
        let addrs = peer_addresses(&n.config).await;
        let hello = Duration::from_secs(1);
        let others: Vec<&String> = addrs.iter().filter(|a| **a != n.addr).collect();
        let answers = join_all(
            others
                .iter()
                .map(|a| n.peers.client(a, ClientRequest::Hello, hello)),
        )
        .await;
        let cluster = n.peers.cluster();
        let ours = cluster.tag();
        // Peers that are there but will not have this node (another
        // cluster, a certificate they do not accept): while any is, this
        // node must not form a cluster of its own beside theirs.
        let mut refusing = false;
        let mut infos: Vec<NodeInfo> = Vec::new();
        for (addr, answer) in others.into_iter().zip(answers) {
            match answer {
                Ok(ClientResponse::Hello(info)) if info.id != n.id => {
                    match ours.refuses(&info.cluster) {
                        None => infos.push(info),
                        Some(why) => {
                            refusing = true;
                            if warned.insert(info.addr.clone()) {
                                tracing::warn!(peer = %info.addr, %why, "a peer of another cluster");
                            }
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => refusing |= cluster.is_refused_by(addr),
            }
        }
        if n.is_member() {
            // A member back at another address (its data directory kept
            // its identity): the leader records the new address.
            if let Some(member) = infos.iter().find(|i| i.initialized) {
                if let Err(e) = n.request_join(&member.addr).await {
                    tracing::debug!(node = n.id, error = %e, "cannot record the new address yet");
                }
            }
        } else if let Some(member) = infos.iter().find(|i| i.initialized) {
            // Failures are retried next round.
            match n.request_join(&member.addr).await {
                Ok(()) => tracing::info!(node = n.id, via = %member.addr, "joined the cluster"),
                Err(e) => {
                    tracing::debug!(node = n.id, via = %member.addr, error = %e, "join failed; retrying")
                }
            }
        } else {
            let seen: BTreeSet<String> = infos
                .iter()
                .map(|i| i.addr.clone())
                .chain([n.addr.clone()])
                .collect();
            if last_seen.as_ref() == Some(&seen) {
                stable += 1;
            } else {
                stable = 0;
                last_seen = Some(seen.clone());
            }
            *n.initializer.lock() = seen.first().cloned();
            if stable >= STABLE_ROUNDS && !refusing && may_initialize(&n.addr, &seen, &infos) {
                match n.initialize().await {
                    Ok(()) => tracing::info!(node = n.id, addr = %n.addr, "formed a new cluster"),
                    Err(e) => {
                        tracing::warn!(node = n.id, error = %e, "cannot form a cluster; retrying")
                    }
                }
            }
        }
        drop(n);
        tokio::time::sleep(interval).await;
    }
}

/// Whether `me` forms the cluster: it has the lowest address it reaches,
/// and every peer it reaches expects it to.
fn may_initialize(me: &str, seen: &BTreeSet<String>, peers: &[NodeInfo]) -> bool {
    seen.first().map(String::as_str) == Some(me)
        && peers.iter().all(|p| p.initializer.as_deref() == Some(me))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(addr: &str, initializer: Option<&str>) -> NodeInfo {
        NodeInfo {
            id: 1,
            addr: addr.into(),
            initialized: false,
            cluster: crate::raft::cluster::ClusterTag {
                name: "dref".into(),
                id: None,
            },
            initializer: initializer.map(Into::into),
        }
    }

    fn set(addrs: &[&str]) -> BTreeSet<String> {
        addrs.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn the_lowest_address_initializes_once_everyone_agrees() {
        let all = set(&["a:1", "b:1", "c:1"]);
        let agree = [peer("b:1", Some("a:1")), peer("c:1", Some("a:1"))];
        assert!(may_initialize("a:1", &all, &agree));
        assert!(!may_initialize("b:1", &all, &agree));
        // A peer that has not formed its view yet holds the decision back.
        let undecided = [peer("b:1", Some("a:1")), peer("c:1", None)];
        assert!(!may_initialize("a:1", &all, &undecided));
        // Alone, a node forms its own cluster.
        assert!(may_initialize("a:1", &set(&["a:1"]), &[]));
    }

    #[test]
    fn lopsided_reachability_never_makes_two_clusters() {
        // b cannot reach a; c reaches both; a reaches both.
        let b_sees = set(&["b:1", "c:1"]);
        let b_hears = [peer("c:1", Some("a:1"))];
        assert!(
            !may_initialize("b:1", &b_sees, &b_hears),
            "b must not start a second cluster"
        );
        let a_sees = set(&["a:1", "b:1", "c:1"]);
        let a_hears = [peer("b:1", Some("b:1")), peer("c:1", Some("a:1"))];
        assert!(
            !may_initialize("a:1", &a_sees, &a_hears),
            "a waits until b agrees"
        );
    }
}
