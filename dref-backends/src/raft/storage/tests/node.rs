//! The durable store under a real openraft node (one voter, no network
//! traffic): a restart keeps everything the node acknowledged.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dref::engine::{Key, Record};
use openraft::{BasicNode, Raft};

use super::{copy_dir, write_command, TempDir};
use crate::raft::network::Network;
use crate::raft::rpc::Peers;
use crate::raft::state_machine::{Machines, StateMachine};
use crate::raft::storage::{LogStore, Storage, StorageOptions, LOG_DIR, SNAPSHOT_DIR};
use crate::raft::types::TypeConfig;

const NODE: u64 = 1;

/// A one-node Raft over the storage in `dir`, and its state.
pub(super) async fn start(
    dir: &Path,
    snapshot_every: u64,
) -> (Raft<TypeConfig>, Arc<Machines>, LogStore) {
    let storage = Storage::open(Some(dir), &StorageOptions::default())
        .await
        .unwrap();
    // As in production: the node's own entries are replicated (here:
    // committed) while they sync, and applied once on disk.
    storage.log.lead_as(NODE);
    let durability = storage.log.durability().cloned();
    let machine = StateMachine::open(16, storage.snapshots)
        .unwrap()
        .with_durability(durability.clone());
    let machines = machine.shared().clone();
    let config = openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: 10,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let log = storage.log.clone();
    let raft = Raft::new(
        NODE,
        Arc::new(config),
        Network::new(
            Peers::new(
                Duration::from_secs(1),
                None,
                std::sync::Arc::new(crate::raft::cluster::Cluster::new(
                    crate::raft::cluster::ClusterTag {
                        name: "test".into(),
                        id: None,
                    },
                    None,
                    1,
                )),
            ),
            durability,
        ),
        storage.log,
        machine,
    )
    .await
    .unwrap();
    if !raft.is_initialized().await.unwrap() {
        raft.initialize(BTreeMap::from([(NODE, BasicNode::new("127.0.0.1:1"))]))
            .await
            .unwrap();
    }
    raft.wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader == Some(NODE), "a leader")
        .await
        .unwrap();
    (raft, machines, log)
}

fn records(machines: &Machines) -> Vec<Option<Record>> {
    (0..20)
        .map(|k| machines.get(&Key::from(format!("key-{k}"))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarts_with_everything_it_acknowledged() {
    let dir = TempDir::new("node");
    let (before, last_index) = {
        let (raft, machines, _log) = start(dir.path(), 100).await;
        let mut last_index = 0;
        for seq in 0..350 {
            let reply = raft
                .client_write(write_command(seq, &format!("key-{}", seq % 20), 16))
                .await
                .unwrap();
            last_index = reply.log_id.index;
        }
        // Snapshots were taken and the log purged behind them.
        let metrics = raft.metrics().borrow().clone();
        assert!(
            metrics.snapshot.is_some_and(|s| s.index >= 200),
            "{metrics:?}"
        );
        assert!(metrics.purged.is_some(), "{metrics:?}");
        raft.shutdown().await.unwrap();
        (records(&machines), last_index)
    };
    let (raft, machines, _log) = start(dir.path(), 100).await;
    // The restored snapshot plus the replayed log reach every
    // acknowledged write.
    raft.wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(last_index), "replayed")
        .await
        .unwrap();
    assert_eq!(records(&machines), before);
    assert!(before.iter().all(Option::is_some));
    raft.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarts_from_what_a_crash_left_on_disk() {
    let dir = TempDir::new("node-crash");
    let image = TempDir::new("node-crash-image");
    let (raft, machines, _log) = start(dir.path(), 50).await;
    for seq in 0..200 {
        raft.client_write(write_command(seq, &format!("key-{}", seq % 20), 16))
            .await
            .unwrap();
    }
    let acknowledged = records(&machines);
    // Writes, snapshots and purges go on while the directory is copied, as
    // a crash would catch them: mid-record, mid-snapshot, mid-removal.
    let writer = {
        let raft = raft.clone();
        tokio::spawn(async move {
            for seq in 1_000..1_400 {
                raft.client_write(write_command(seq, &format!("late-{seq}"), 64))
                    .await
                    .unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The log first: a copy is not an instant, and a purge copied after
    // the snapshots it relies on would be a state no crash can leave.
    copy_dir(&dir.path().join(LOG_DIR), &image.path().join(LOG_DIR));
    copy_dir(
        &dir.path().join(SNAPSHOT_DIR),
        &image.path().join(SNAPSHOT_DIR),
    );
    writer.await.unwrap();
    raft.shutdown().await.unwrap();
    drop(_log);

    let (raft, machines, _log) = start(image.path(), 50).await;
    assert_eq!(records(&machines), acknowledged);
    raft.shutdown().await.unwrap();
}
