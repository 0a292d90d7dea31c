//! Provisional copy of the history format (replaced by the checkers' own).

use serde::{Deserialize, Serialize};

/// One line of a history file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    /// Unique in a run.
    pub process: u64,
    /// The node.
    pub node: String,
    /// CLOCK_MONOTONIC ns.
    pub t: u64,
    /// Phase.
    #[serde(rename = "type")]
    pub phase: Phase,
    /// Operation.
    #[serde(flatten)]
    pub op: Op,
}

/// Phase.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Invoke.
    Invoke,
    /// Ok.
    Ok,
    /// Fail.
    Fail,
    /// Info.
    Info,
}

/// Operation.
#[allow(missing_docs)]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Op {
    Read {
        key: String,
        value: Option<u64>,
    },
    Write {
        key: String,
        value: u64,
    },
    Cas {
        key: String,
        from: u64,
        to: u64,
    },
    Incr {
        key: String,
        value: Option<u64>,
    },
    FinalRead {
        key: String,
        value: u64,
    },
    Acquire {
        lock: String,
        token: Option<u64>,
        error: Option<String>,
    },
    Hold {
        lock: String,
        token: u64,
        error: Option<String>,
    },
    Fenced {
        key: String,
        token: u64,
    },
    Campaign {
        election: String,
        token: Option<u64>,
        error: Option<String>,
    },
    Believe {
        election: String,
        token: u64,
    },
    Resign {
        election: String,
        token: u64,
        error: Option<String>,
    },
    WatchOpen {
        key: String,
        watcher: u64,
        after: u64,
    },
    Seen {
        key: String,
        watcher: u64,
        revision: u64,
        kind: String,
    },
    Nemesis {
        action: String,
        nodes: Vec<String>,
    },
}
