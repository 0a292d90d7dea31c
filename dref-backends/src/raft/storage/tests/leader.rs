//! A leader's own entries are told flushed before their sync, so that
//! openraft replicates them while the disk syncs; everything else waits
//! for the disk, and the durability mark says what is really there.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, Entry, EntryPayload, Membership, Vote};
use tokio::sync::oneshot;

use super::{entry, log_id, open, TempDir};
use crate::raft::storage::{DiskLog, LogStore};
use crate::raft::types::TypeConfig;

/// The node id of the leader in `log_id` (tests/mod.rs).
const LEADER: u64 = 1;

/// How long an answer that must not come is given to come anyway.
const QUIET: Duration = Duration::from_millis(300);
/// How long an answer that must come may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

fn disk(log: &LogStore) -> DiskLog {
    match log {
        LogStore::Disk(d) => d.clone(),
        LogStore::Memory(_) => panic!("expected the durable log"),
    }
}

/// A durable log of node `me` whose saved vote is `LEADER`'s, won.
async fn log_of(dir: &TempDir, me: u64) -> DiskLog {
    let mut log = open(dir.path()).await.log;
    log.save_vote(&Vote::new_committed(1, LEADER))
        .await
        .unwrap();
    log.lead_as(me);
    disk(&log)
}

/// Appends `entries`; the receiver hears when they are told flushed.
fn append(
    log: &DiskLog,
    entries: Vec<Entry<TypeConfig>>,
) -> oneshot::Receiver<std::io::Result<()>> {
    let (tx, rx) = oneshot::channel();
    log.submit(entries, move |res| {
        // A test that gave up waiting has failed already.
        let _unheard = tx.send(res);
    });
    rx
}

fn membership(index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Membership(Membership::<u64, BasicNode>::new(
            vec![BTreeSet::from([LEADER])],
            None,
        )),
    }
}

async fn told(rx: oneshot::Receiver<std::io::Result<()>>) {
    tokio::time::timeout(PATIENCE, rx)
        .await
        .expect("the append was told flushed in time")
        .expect("the log answered")
        .expect("the append succeeded");
}

/// Asserts that `rx` hears nothing for a while: its append waits for a
/// disk that is held back.
async fn not_told(rx: &mut oneshot::Receiver<std::io::Result<()>>, what: &str) {
    tokio::time::sleep(QUIET).await;
    assert!(
        matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)),
        "{what} was told flushed while no sync could end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_s_own_entries_are_told_flushed_before_they_are_on_disk() {
    let dir = TempDir::new("leader-early");
    let log = log_of(&dir, LEADER).await;
    let before = log.durability().durable();
    log.stall_syncs(true);
    told(append(&log, vec![entry(1, 1), entry(1, 2)])).await;
    assert_eq!(
        log.durability().durable(),
        before,
        "the entries are not on disk yet, and the mark says so"
    );
    // A membership entry of its own waits: openraft acts on its commit.
    let mut config = append(&log, vec![membership(3)]);
    not_told(&mut config, "a membership entry").await;
    log.stall_syncs(false);
    told(config).await;
    tokio::time::timeout(PATIENCE, log.durability().reached(3))
        .await
        .expect("the entries reached the disk in time")
        .expect("the log did not fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_s_appends_are_told_flushed_only_once_on_disk() {
    let dir = TempDir::new("follower-waits");
    // Node 2 follows LEADER: the entries are LEADER's, the vote too.
    let log = log_of(&dir, 2).await;
    log.stall_syncs(true);
    let mut appended = append(&log, vec![entry(1, 1)]);
    not_told(&mut appended, "a follower's append").await;
    assert!(log.durability().durable().is_none_or(|d| d.index < 1));
    log.stall_syncs(false);
    told(appended).await;
    assert!(log.durability().durable().is_some_and(|d| d.index >= 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncation_moves_the_durability_mark_back() {
    let dir = TempDir::new("truncate-mark");
    let mut log = open(dir.path()).await.log;
    let disk = disk(&log);
    for i in 1..=5 {
        told(append(&disk, vec![entry(1, i)])).await;
    }
    assert_eq!(disk.durability().durable().map(|d| d.index), Some(5));
    log.truncate(log_id(1, 3)).await.unwrap();
    assert_eq!(
        disk.durability().durable().map(|d| d.index),
        Some(2),
        "entries 3.. are gone; new ones at those indexes are not on disk"
    );
}
