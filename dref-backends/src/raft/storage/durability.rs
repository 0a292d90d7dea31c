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
//!
//! A commit index held back from the followers is owed to them once the
//! disk has it: the network notes it here ([`Durability::withhold`]), and
//! the node sends a heartbeat as soon as the disk catches up
//! ([`Durability::withheld_reached`]) rather than at the next heartbeat
//! (a follower that waits for the write it forwarded would wait for it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::LogId;
use tokio::sync::{watch, Notify};

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
pub struct Durability(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    mark: watch::Sender<Mark>,
    /// The highest commit index held back from followers and not yet
    /// owed to them (0: none).
    withheld: AtomicU64,
    /// Told when the disk may have caught up with `withheld`.
    caught_up: Notify,
}

impl Durability {
    /// Everything up to `durable` is on disk.
    pub(super) fn new(durable: Option<LogId<u64>>) -> Self {
        Durability(Arc::new(Shared {
            mark: watch::Sender::new(Mark {
                durable,
                failed: false,
            }),
            withheld: AtomicU64::new(0),
            caught_up: Notify::new(),
        }))
    }

    /// The last entry on disk.
    pub fn durable(&self) -> Option<LogId<u64>> {
        self.0.mark.borrow().durable
    }

    fn holds(&self, index: u64) -> bool {
        self.durable().is_some_and(|d| d.index >= index)
    }

    /// Everything up to `durable`, and nothing known after it, is on disk
    /// (a truncation may move the mark back).
    pub(super) fn set(&self, durable: Option<LogId<u64>>) {
        self.0.mark.send_if_modified(|mark| {
            let changed = mark.durable != durable;
            mark.durable = durable;
            changed
        });
        let withheld = self.0.withheld.load(Ordering::SeqCst);
        if withheld > 0 && self.holds(withheld) {
            self.0.caught_up.notify_one();
        }
    }

    /// A sync failed: whoever waits is told so.
    pub(super) fn fail(&self) {
        self.0.mark.send_modify(|mark| mark.failed = true);
    }

    /// Notes that followers were told a commit index below `index`
    /// because the disk did not hold `index` yet.
    pub fn withhold(&self, index: u64) {
        self.0.withheld.fetch_max(index, Ordering::SeqCst);
        // The disk may have caught up since the caller looked.
        if self.holds(index) {
            self.0.caught_up.notify_one();
        }
    }

    /// Waits until the disk holds every commit index held back from
    /// followers so far (and forgets them): the followers are owed it.
    pub async fn withheld_reached(&self) {
        loop {
            let withheld = self.0.withheld.load(Ordering::SeqCst);
            if withheld > 0
                && self.holds(withheld)
                && self
                    .0
                    .withheld
                    .compare_exchange(withheld, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                return;
            }
            // A notice between the check and here is kept as a permit.
            self.0.caught_up.notified().await;
        }
    }

    /// Waits until the entry at `index` is on disk; an error once the log
    /// has failed (the entry may never get there).
    pub async fn reached(&self, index: u64) -> Result<(), String> {
        let reached = |mark: &Mark| mark.failed || mark.durable.is_some_and(|d| d.index >= index);
        let mark = *self.0.mark.borrow();
        let mark = if reached(&mark) {
            mark
        } else {
            // The sender lives as long as `self`: the wait cannot end
            // without a mark.
            match self.0.mark.subscribe().wait_for(reached).await {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::{CommittedLeaderId, LogId};

    use super::Durability;

    const PATIENCE: Duration = Duration::from_secs(20);

    fn at(index: u64) -> Option<LogId<u64>> {
        Some(LogId::new(CommittedLeaderId::new(1, 1), index))
    }

    /// A task waiting until the entry at `index` is on disk.
    fn wait_for(
        durability: &Durability,
        index: u64,
    ) -> tokio::task::JoinHandle<Result<(), String>> {
        let durability = durability.clone();
        tokio::spawn(async move { durability.reached(index).await })
    }

    #[tokio::test]
    async fn a_wait_ends_when_the_disk_reaches_the_entry() {
        let durability = Durability::new(at(1));
        let waiting = wait_for(&durability, 3);
        durability.set(at(2));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "entry 3 is not on disk at 2");
        durability.set(at(3));
        let reached = tokio::time::timeout(PATIENCE, waiting).await.unwrap();
        assert_eq!(reached.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_failed_sync_fails_the_waits_below_it_and_not_the_entries_on_disk() {
        let durability = Durability::new(at(2));
        let waiting = wait_for(&durability, 5);
        durability.fail();
        let reached = tokio::time::timeout(PATIENCE, waiting).await.unwrap();
        assert!(
            reached.unwrap().is_err(),
            "entry 5 may never reach the disk"
        );
        assert_eq!(durability.reached(2).await, Ok(()), "entry 2 is on disk");
    }

    #[tokio::test]
    async fn a_withheld_commit_is_owed_once_the_disk_holds_it() {
        let durability = Durability::new(at(1));
        durability.withhold(4);
        let owed = tokio::spawn({
            let durability = durability.clone();
            async move { durability.withheld_reached().await }
        });
        durability.set(at(3));
        tokio::task::yield_now().await;
        assert!(!owed.is_finished(), "commit 4 is not on disk at 3");
        durability.set(at(4));
        tokio::time::timeout(PATIENCE, owed).await.unwrap().unwrap();
        // Withheld after the disk already holds it (the network looked just
        // before the sync ended): owed at once.
        durability.withhold(4);
        tokio::time::timeout(PATIENCE, durability.withheld_reached())
            .await
            .unwrap();
    }
}
