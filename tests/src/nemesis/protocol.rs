//! What a test and a node process say to each other: one JSON object per
//! line, requests on the node's stdin, answers on its stdout.

use serde::{Deserialize, Serialize};

use super::workload::WorkloadSpec;

/// How a node process reaches its store (its command line, as JSON).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct NodeArgs {
    /// The node's name in histories ("n1").
    pub name: String,
    /// Where the node writes its history.
    pub history: String,
    /// The context's session TTL.
    pub session_ttl_ms: u64,
    /// The store.
    pub store: Store,
}

/// A node's store.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub enum Store {
    /// A Redis server, under a key prefix.
    Redis {
        /// `redis://host:port`.
        url: String,
        /// The namespace.
        prefix: String,
    },
    /// A member of a Raft cluster.
    Raft {
        /// The address to listen on and advertise.
        listen: String,
        /// Every member's address.
        peers: Vec<String>,
        /// Heartbeat interval.
        heartbeat_ms: u64,
        /// Election timeout range.
        election_ms: (u64, u64),
        /// Request timeout.
        request_timeout_ms: u64,
        /// The data directory (none: in memory).
        #[serde(default)]
        data_dir: Option<String>,
    },
}

/// A request, with its number.
#[derive(Serialize, Deserialize, Debug)]
pub struct Request {
    /// Echoed in the answer.
    pub id: u64,
    /// What to do.
    pub command: Command,
}

/// What a node can be asked.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub enum Command {
    /// The node's view: [`Status`].
    Status,
    /// Starts the workload's clients (answers at once).
    StartWorkload(Box<WorkloadSpec>),
    /// Stops them after their current operations.
    StopWorkload,
    /// Linearizable final reads of these counters, recorded.
    FinalReads {
        /// Counter names.
        counters: Vec<String>,
        /// The process id the reads are recorded under.
        process: u64,
    },
    /// Takes a lock and keeps it until [`Command::Release`]; answers with
    /// the token.
    Acquire {
        /// Lock name.
        lock: String,
    },
    /// Releases a lock taken with [`Command::Acquire`]; answers with the
    /// outcome ("ok" or the error).
    Release {
        /// Lock name.
        lock: String,
    },
    /// Polls an acquisition of `lock` `polls` times, then drops it;
    /// answers whether it finished first.
    DropAcquire {
        /// Lock name.
        lock: String,
        /// Polls before the drop.
        polls: usize,
    },
    /// Raft: cuts this node's links to these peers (both directions need
    /// the same on the other side).
    Cut {
        /// Peer addresses.
        peers: Vec<String>,
    },
    /// Raft: heals every cut link.
    Heal,
    /// Leaves (Raft: the membership) and exits.
    Shutdown,
}

/// A node's answer.
#[derive(Serialize, Deserialize, Debug)]
pub struct Answer {
    /// The request's number.
    pub id: u64,
    /// The result, or the error as text.
    pub result: Result<serde_json::Value, String>,
}

/// What [`Command::Status`] answers.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Status {
    /// The context's node id.
    pub node_id: String,
    /// Raft: this node's address.
    pub address: Option<String>,
    /// Raft: the leader's address as this node knows it.
    pub leader: Option<String>,
    /// Raft: the voters' addresses.
    pub voters: Vec<String>,
    /// Raft: this node's id.
    #[serde(default)]
    pub raft_id: Option<u64>,
    /// Raft: the voters' ids.
    #[serde(default)]
    pub voter_ids: Vec<u64>,
}
