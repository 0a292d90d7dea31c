//! Which cluster a node belongs to, and which peers it will talk to.
//!
//! A cluster has a configured name and, from the moment its first node
//! forms it, a random id that every member learns when it joins (and keeps
//! in its data directory). Every RPC names the caller's cluster in a
//! header, and a node refuses a caller of another name, or of another id
//! once both know theirs: two clusters of one name never mix their logs,
//! and a data directory of one cluster cannot bring its log into another.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::storage::Identity;

/// A cluster's name and, once known, its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterTag {
    /// The configured name.
    pub name: String,
    /// Drawn by the node that formed the cluster.
    pub id: Option<u64>,
}

impl ClusterTag {
    /// The header form: `name`, or `name/id` (id in hex).
    pub fn header(&self) -> String {
        match self.id {
            Some(id) => format!("{}/{id:016x}", self.name),
            None => self.name.clone(),
        }
    }

    /// Reads [`header`](Self::header)'s form.
    pub fn parse(header: &str) -> Option<ClusterTag> {
        let (name, id) = match header.rsplit_once('/') {
            Some((name, id)) => (name, Some(u64::from_str_radix(id, 16).ok()?)),
            None => (header, None),
        };
        Some(ClusterTag {
            name: name.to_owned(),
            id,
        })
    }

    /// Why a peer of cluster `other` must be refused, if it must: another
    /// name, or another id when both are known.
    pub fn refuses(&self, other: &ClusterTag) -> Option<String> {
        if self.name != other.name {
            return Some(format!(
                "it belongs to cluster {:?}, this node to cluster {:?}",
                other.name, self.name
            ));
        }
        match (self.id, other.id) {
            (Some(mine), Some(theirs)) if mine != theirs => Some(format!(
                "it belongs to another cluster named {:?} (id {theirs:016x}; this node's is \
                 {mine:016x}): a data directory or node of another deployment",
                self.name
            )),
            _ => None,
        }
    }
}

/// This node's cluster: shared by the node and its outgoing links.
pub struct Cluster {
    tag: RwLock<ClusterTag>,
    /// Where the node's identity is kept, to record the id once learnt.
    identity: Option<(PathBuf, u64)>,
    /// The last refusal a peer answered this node with, for the error of a
    /// node that finds no cluster to be part of.
    refused: Mutex<Option<String>>,
    /// Peers that refused this node (its certificate or its cluster) and
    /// have not answered a call since: while any is, this node must not
    /// form a cluster of its own beside theirs.
    refusing: Mutex<HashSet<String>>,
    /// Whether `refusing` may be non-empty, so that answered calls need
    /// not take its lock.
    any_refusing: AtomicBool,
}

impl Cluster {
    /// A node of cluster `tag`, whose identity (node id `node`) is kept in
    /// `dir` when it has a data directory.
    pub fn new(tag: ClusterTag, dir: Option<PathBuf>, node: u64) -> Self {
        Cluster {
            tag: RwLock::new(tag),
            identity: dir.map(|d| (d, node)),
            refused: Mutex::new(None),
            refusing: Mutex::default(),
            any_refusing: AtomicBool::new(false),
        }
    }

    /// Whether this node knows its cluster's id (a cheap check for every
    /// replication call).
    pub fn knows_id(&self) -> bool {
        self.tag.read().id.is_some()
    }

    /// The cluster as this node knows it now.
    pub fn tag(&self) -> ClusterTag {
        self.tag.read().clone()
    }

    /// Learns (or, forming a cluster, draws) the cluster's id, and keeps it
    /// in the data directory before any peer hears of it. Fails if this
    /// node already belongs to a cluster of another id, or the identity
    /// cannot be written.
    pub fn adopt(&self, id: u64) -> Result<(), String> {
        let mut tag = self.tag.write();
        match tag.id {
            Some(known) if known == id => return Ok(()),
            Some(known) => {
                return Err(format!(
                    "this node belongs to cluster {:?} of id {known:016x}, not {id:016x}",
                    tag.name
                ))
            }
            None => {}
        }
        if let Some((dir, node)) = &self.identity {
            let identity = Identity {
                node_id: *node,
                cluster: tag.name.clone(),
                cluster_id: Some(id),
            };
            identity
                .save(dir)
                .map_err(|e| format!("cannot record the cluster id: {e}"))?;
        }
        tag.id = Some(id);
        tracing::info!(cluster = %tag.header(), "cluster id known");
        Ok(())
    }

    /// Notes that the peer at `addr` refused this node, and why (logged
    /// when the peer was not refusing already: discovery asks again every
    /// round).
    pub fn refused_by(&self, addr: &str, why: String) {
        if self.refusing.lock().insert(addr.to_owned()) {
            tracing::error!(peer = %addr, %why, "a peer refused this node");
        }
        self.any_refusing.store(true, Ordering::Release);
        *self.refused.lock() = Some(why);
    }

    /// The peer at `addr` answered a call: it does not refuse this node
    /// (any more).
    pub fn accepted_by(&self, addr: &str) {
        if self.any_refusing.load(Ordering::Acquire) {
            let mut refusing = self.refusing.lock();
            refusing.remove(addr);
            self.any_refusing
                .store(!refusing.is_empty(), Ordering::Release);
        }
    }

    /// Whether the peer at `addr` refused this node and has not answered
    /// since.
    pub fn is_refused_by(&self, addr: &str) -> bool {
        self.refusing.lock().contains(addr)
    }

    /// The last refusal noted.
    pub fn last_refusal(&self) -> Option<String> {
        self.refused.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, id: Option<u64>) -> ClusterTag {
        ClusterTag {
            name: name.into(),
            id,
        }
    }

    #[test]
    fn headers_round_trip() {
        for t in [
            tag("dref", None),
            tag("a/b", Some(0xabc)),
            tag("x", Some(u64::MAX)),
        ] {
            assert_eq!(ClusterTag::parse(&t.header()), Some(t));
        }
        assert_eq!(ClusterTag::parse("name/zz"), None);
    }

    #[test]
    fn other_names_and_other_ids_are_refused() {
        let mine = tag("dref", Some(1));
        assert!(mine.refuses(&tag("dref", Some(1))).is_none());
        // A node that has not learnt the id yet (it is joining) may talk.
        assert!(mine.refuses(&tag("dref", None)).is_none());
        assert!(tag("dref", None).refuses(&mine).is_none());
        assert!(mine.refuses(&tag("dref", Some(2))).is_some());
        assert!(mine.refuses(&tag("billing", Some(1))).is_some());
    }
}
