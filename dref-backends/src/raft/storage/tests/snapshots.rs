//! Snapshot files: crashes while writing, damage, retention, and the state
//! machine restored from them.

use std::fs;
use std::path::PathBuf;

use dref::engine::Key;
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder, SnapshotMeta};

use super::{append, entry, log_id, open, write_command, TempDir};
use crate::raft::state_machine::StateMachine;
use crate::raft::storage::{Storage, StorageOptions, StoredSnapshot, SNAPSHOT_DIR};

fn meta(index: u64) -> SnapshotMeta<u64, openraft::BasicNode> {
    SnapshotMeta {
        last_log_id: Some(log_id(1, index)),
        last_membership: Default::default(),
        snapshot_id: format!("s-{index}"),
    }
}

fn snapshot_files(data_dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(data_dir.join(SNAPSHOT_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_writing_a_snapshot_leaves_the_previous_one_in_use() {
    let dir = TempDir::new("snap-crash");
    {
        let snapshots = open(dir.path()).await.snapshots.unwrap();
        snapshots.store.save(&meta(10), b"ten").unwrap();
        snapshots.store.save(&meta(20), b"twenty").unwrap();
    }
    let files = snapshot_files(dir.path());
    let newest = fs::read(files.last().unwrap()).unwrap();
    let snap_dir = dir.path().join(SNAPSHOT_DIR);
    // A crash before the rename: a temporary file...
    fs::write(
        snap_dir.join(
            "snapshot-00000000000000000031-00000000000000000001-00000000000000000007.snap.tmp",
        ),
        &newest[..newest.len() / 3],
    )
    .unwrap();
    // ...and one after a rename whose content never reached the disk.
    let torn = snap_dir
        .join("snapshot-00000000000000000031-00000000000000000001-00000000000000000008.snap");
    fs::write(&torn, &newest[..newest.len() / 2]).unwrap();

    let snapshots = open(dir.path()).await.snapshots.unwrap();
    let found: StoredSnapshot = snapshots.newest.expect("the previous snapshot is used");
    assert_eq!(found.meta, meta(20));
    assert_eq!(found.data, b"twenty");
    // Both leftovers are gone; the two good snapshots stay.
    assert_eq!(snapshot_files(dir.path()), files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_valid_snapshot_is_an_error_not_an_empty_state() {
    let dir = TempDir::new("snap-bad");
    drop(
        open(dir.path())
            .await
            .snapshots
            .unwrap()
            .store
            .save(&meta(5), b"five"),
    );
    let file = snapshot_files(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&file).unwrap();
    // A byte of the image ("five", just before the checksum).
    let at = bytes.len() - 6;
    bytes[at] ^= 1;
    fs::write(&file, &bytes).unwrap();
    let err = Storage::open(Some(dir.path()), &StorageOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no valid snapshot") && err.contains("checksum"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_a_newer_format_is_refused_not_skipped() {
    let dir = TempDir::new("snap-version");
    {
        let store = open(dir.path()).await.snapshots.unwrap().store;
        store.save(&meta(5), b"five").unwrap();
        store.save(&meta(6), b"six").unwrap();
    }
    let file = snapshot_files(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&file).unwrap();
    bytes[8] = 2;
    fs::write(&file, &bytes).unwrap();
    let err = Storage::open(Some(dir.path()), &StorageOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("format version 2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_newest_snapshots_are_kept() {
    let dir = TempDir::new("snap-keep");
    let store = open(dir.path()).await.snapshots.unwrap().store;
    for index in [3, 9, 4, 12, 7] {
        store.save(&meta(index), b"x").unwrap();
    }
    let names: Vec<String> = snapshot_files(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names[0].starts_with("snapshot-00000000000000000010-"),
        "{names:?}"
    );
    assert!(
        names[1].starts_with("snapshot-00000000000000000013-"),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_purged_past_the_surviving_snapshot_is_refused() {
    let dir = TempDir::new("snap-gap");
    {
        let storage = open(dir.path()).await;
        let mut log = storage.log;
        let store = storage.snapshots.unwrap().store;
        append(&mut log, (1..=30).map(|i| entry(1, i))).await;
        store.save(&meta(12), b"twelve").unwrap();
        store.save(&meta(25), b"twenty-five").unwrap();
        log.purge(log_id(1, 20)).await.unwrap();
    }
    // The newest snapshot is damaged: the older one ends before the log
    // starts, so the state between cannot be rebuilt.
    let newest = snapshot_files(dir.path()).pop().unwrap();
    let len = fs::metadata(&newest).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let err = Storage::open(Some(dir.path()), &StorageOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("starts after index 20") && err.contains("ends at index 12"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_machine_restarts_from_its_newest_snapshot() {
    let dir = TempDir::new("snap-machine");
    let key = Key::from("key-3".to_owned());
    let (applied, record) = {
        let storage = open(dir.path()).await;
        let mut log = storage.log;
        let mut machine = StateMachine::open(16, storage.snapshots).unwrap();
        let entries: Vec<_> = (1..=40)
            .map(|i| openraft::Entry {
                log_id: log_id(1, i),
                payload: EntryPayload::Normal(write_command(i, &format!("key-{}", i % 5), 8)),
            })
            .collect();
        append(&mut log, entries.clone()).await;
        machine.apply(entries).await.unwrap();
        let snapshot = machine
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 40)));
        log.purge(log_id(1, 40)).await.unwrap();
        (
            machine.applied_state().await.unwrap(),
            machine.shared().get(&key),
        )
    };
    assert!(record.is_some());
    let storage = open(dir.path()).await;
    let mut machine = StateMachine::open(16, storage.snapshots).unwrap();
    assert_eq!(machine.applied_state().await.unwrap(), applied);
    assert_eq!(machine.shared().get(&key), record);
    let current = machine.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.last_log_id, Some(log_id(1, 40)));
}
