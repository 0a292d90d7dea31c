//! How far a node's log is on its disk.
//!
//! A leader tells openraft that its own appends are flushed before their
//! sync ends (see `disk.rs`), so that it replicates them while its disk
//! syncs instead of after: openraft 0.9 sends nothing to the followers
//! until the leader's append is flushed, which put two syncs in a row on
//! every write's path. openraft may then count a commit with the leader's
//! copy still in memory. Nothing that commit implies may be seen before
//! two copies are on disk, and two rules, both read from here, make sure
//! nothing is:
//!
//! - the state machine applies an entry only once it is on this node's
//!   disk (a client's answer, a watch event and a read all come from the
//!   state machine), and
//! - a leader tells followers a commit index no further than its own disk
//!   holds (`network.rs`), so no follower applies an entry the leader
//!   could still lose.
//!
//! An entry the leader lost in a crash was therefore never applied
//! anywhere nor acknowledged, and Raft may replace it like any entry that
//! was not committed.

use std::sync::Arc;

use openraft::LogId;
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mark {
    /// The last entry on disk.
    durable: Option<LogId<u64>>,
    /// A sync failed: nothing more will reach the disk.
    failed: bool,
}

/// How far the log is on disk, shared by the log, the state machine and
/// the network of one node (clones share it).
#[derive(Clone, Debug)]
pub struct Durability(Arc<watch::Sender<Mark>>);

impl Durability {
    /// Everything up to `durable` is on disk.
    pub(super) fn new(durable: Option<LogId<u64>>) -> Self {
        Durability(Arc::new(watch::Sender::new(Mark {
            durable,
            failed: false,
        })))
    }

    /// The last entry on disk.
    pub fn durable(&self) -> Option<LogId<u64>> {
        self.0.borrow().durable
    }

    /// Everything up to `durable`, and nothing known after it, is on disk
    /// (a truncation may move the mark back).
    pub(super) fn set(&self, durable: Option<LogId<u64>>) {
        self.0.send_if_modified(|mark| {
            let changed = mark.durable != durable;
            mark.durable = durable;
            changed
        });
    }

    /// A sync failed: whoever waits is told so.
    pub(super) fn fail(&self) {
        self.0.send_modify(|mark| mark.failed = true);
    }

    /// Waits until the entry at `index` is on disk; an error once the log
    /// has failed (the entry may never get there).
    pub async fn reached(&self, index: u64) -> Result<(), String> {
        let reached = |mark: &Mark| mark.failed || mark.durable.is_some_and(|d| d.index >= index);
        let mark = *self.0.borrow();
        let mark = if reached(&mark) {
            mark
        } else {
            // The sender lives as long as `self`: the wait cannot end
            // without a mark.
            match self.0.subscribe().wait_for(reached).await {
                Ok(mark) => *mark,
                Err(_) => return Err("the raft log closed".to_owned()),
            }
        };
        if mark.durable.is_some_and(|d| d.index >= index) {
            Ok(())
        } else {
            Err(format!(
                "entry {index} may never reach the disk: a sync of the raft log failed"
            ))
        }
    }
}
