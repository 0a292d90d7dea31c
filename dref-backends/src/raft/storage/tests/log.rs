//! The durable log across restarts, torn tails, damage, concurrency and
//! a long run.

use std::fs::{self, OpenOptions};
use std::sync::Arc;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{LogState, RaftLogReader, RaftSnapshotBuilder, Vote};

use super::{
    append, copy_dir, entry, last_chunk, log_id, open, same, tree_size, write_command, TempDir,
};
use crate::raft::state_machine::StateMachine;
use crate::raft::storage::{LogStore, Storage, StorageOptions};

fn disk(log: &LogStore) -> &crate::raft::storage::DiskLog {
    match log {
        LogStore::Disk(d) => d,
        LogStore::Memory(_) => panic!("expected the durable log"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_written_comes_back_after_a_restart() {
    let dir = TempDir::new("reopen");
    let mut expected = Vec::new();
    {
        let storage = open(dir.path()).await;
        let mut log = storage.log;
        let first: Vec<_> = (1..=100).map(|i| entry(1, i)).collect();
        for chunk in first.chunks(7) {
            append(&mut log, chunk.to_vec()).await;
        }
        let mut vote = Vote::new(3, 1);
        vote.commit();
        log.save_vote(&vote).await.unwrap();
        log.save_committed(Some(log_id(1, 80))).await.unwrap();
        // A new leader replaces the uncommitted tail...
        log.truncate(log_id(1, 91)).await.unwrap();
        let second: Vec<_> = (91..=95).map(|i| entry(3, i)).collect();
        append(&mut log, second.clone()).await;
        // ...and a snapshot lets the head go.
        let meta = openraft::SnapshotMeta {
            last_log_id: Some(log_id(1, 10)),
            last_membership: Default::default(),
            snapshot_id: "s".into(),
        };
        storage
            .snapshots
            .unwrap()
            .store
            .save(&meta, b"image")
            .unwrap();
        log.purge(log_id(1, 10)).await.unwrap();
        expected.extend(first[10..90].iter().cloned());
        expected.extend(second);
    }
    let mut log = open(dir.path()).await.log;
    let state = log.get_log_state().await.unwrap();
    assert_eq!(
        (state.last_purged_log_id, state.last_log_id),
        (Some(log_id(1, 10)), Some(log_id(3, 95)))
    );
    let mut vote = Vote::new(3, 1);
    vote.commit();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 80)));
    let read = log.try_get_log_entries(0..1000).await.unwrap();
    assert!(same(&read, &expected), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_cannot_open_a_data_directory() {
    let dir = TempDir::new("lock");
    let storage = open(dir.path()).await;
    // flock(2) excludes another open file description even in this
    // process, as it would another process.
    let err = Storage::open(Some(dir.path()), &StorageOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("in use by another process"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    drop(storage);
    // Dropped means closed: the directory opens again at once.
    drop(open(dir.path()).await);
}

/// Sizes of the last chunk file after each of `n` single-entry appends.
async fn write_one_by_one(dir: &TempDir, n: u64) -> Vec<u64> {
    let mut log = open(dir.path()).await.log;
    let mut sizes = vec![fs::metadata(last_chunk(dir.path())).unwrap().len()];
    for i in 1..=n {
        append(&mut log, [entry(1, i)]).await;
        sizes.push(fs::metadata(last_chunk(dir.path())).unwrap().len());
    }
    sizes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_dropped_and_what_precedes_it_kept() {
    let original = TempDir::new("torn");
    // sizes[i] is where entry i ends in the chunk file.
    let sizes = write_one_by_one(&original, 20).await;
    let all: Vec<_> = (1..=20).map(|i| entry(1, i)).collect();
    // Cut inside the last two records at every few bytes (every byte of
    // the last record), and at their boundaries.
    let cuts = (sizes[18]..sizes[19])
        .step_by(3)
        .chain(sizes[19]..sizes[20])
        .chain([sizes[18], sizes[19]]);
    for cut in cuts {
        let copy = TempDir::new("torn-copy");
        copy_dir(original.path(), copy.path());
        let chunk = last_chunk(copy.path());
        OpenOptions::new()
            .write(true)
            .open(&chunk)
            .unwrap()
            .set_len(cut)
            .unwrap();

        let mut log = open(copy.path()).await.log;
        let kept = if cut >= sizes[19] { 19 } else { 18 };
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, kept)), "cut at {cut}");
        let read = log.try_get_log_entries(0..100).await.unwrap();
        assert!(same(&read, &all[..kept as usize]), "cut at {cut}");
        // The log goes on from there.
        append(&mut log, [entry(2, kept + 1)]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_inside_the_log_is_refused_with_an_error_naming_it() {
    let original = TempDir::new("flip");
    let sizes = write_one_by_one(&original, 20).await;
    // Every byte of a record in the middle (type, log id, payload header,
    // payload, checksum), and of the last record: a flipped byte is
    // never a torn tail, never a wrong entry.
    let bytes = (sizes[9]..sizes[10]).chain(sizes[19]..sizes[20]);
    for at in bytes {
        let copy = TempDir::new("flip-copy");
        copy_dir(original.path(), copy.path());
        let chunk = last_chunk(copy.path());
        let mut content = fs::read(&chunk).unwrap();
        content[at as usize] ^= 0x10;
        fs::write(&chunk, &content).unwrap();

        let err = Storage::open(Some(copy.path()), &StorageOptions::default())
            .await
            .expect_err(&format!("a flipped byte at {at} must be refused"))
            .to_string();
        assert!(err.contains("log"), "flip at {at}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_syncs() {
    let dir = TempDir::new("group");
    let log = open(dir.path()).await.log;
    let disk = disk(&log).clone();
    const PROPOSERS: u64 = 64;
    const EACH: u64 = 20;
    // Like the leader's core: indexes are assigned in one place, in
    // order; each proposer then waits for its own entry to be durable.
    let next = Arc::new(tokio::sync::Mutex::new(1u64));
    let mut tasks = Vec::new();
    for _ in 0..PROPOSERS {
        let disk = disk.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..EACH {
                let (tx, rx) = tokio::sync::oneshot::channel();
                {
                    let mut index = next.lock().await;
                    disk.submit(vec![entry(1, *index)], move |res| {
                        tx.send(res).unwrap();
                    });
                    *index += 1;
                }
                rx.await.unwrap().unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let appended = disk.stats().appended();
    let syncs = disk.stats().syncs();
    assert_eq!(appended, PROPOSERS * EACH);
    assert!(
        syncs * 4 <= appended,
        "{appended} appends took {syncs} syncs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_use_stays_a_small_multiple_of_the_live_state() {
    const WRITES: u64 = 200_000;
    const KEYS: u64 = 1_000;
    const SNAPSHOT_EVERY: u64 = 5_000;
    const KEEP_AFTER_SNAPSHOT: u64 = 500;
    let dir = TempDir::new("bounded");
    let options = StorageOptions {
        chunk_entries: 2048,
        ..StorageOptions::default()
    };
    let storage = Storage::open(Some(dir.path()), &options).await.unwrap();
    let mut log = storage.log;
    let mut machine = StateMachine::open(16, storage.snapshots).unwrap();
    let mut index = 0;
    let mut snapshot_bytes = 0;
    while index < WRITES {
        let batch: Vec<_> = (index + 1..=index + 1000)
            .map(|i| openraft::Entry {
                log_id: log_id(1, i),
                payload: openraft::EntryPayload::Normal(write_command(
                    i,
                    &format!("key-{}", i % KEYS),
                    100,
                )),
            })
            .collect();
        index += 1000;
        append(&mut log, batch.clone()).await;
        log.save_committed(Some(log_id(1, index))).await.unwrap();
        machine.apply(batch).await.unwrap();
        if index % SNAPSHOT_EVERY == 0 {
            let snapshot = machine
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            snapshot_bytes = snapshot.snapshot.get_ref().len() as u64;
            log.purge(log_id(1, index - KEEP_AFTER_SNAPSHOT))
                .await
                .unwrap();
        }
    }
    // Let the purge's chunk removal (behind the next sync) happen.
    append(&mut log, [entry(1, WRITES + 1)]).await;
    let used = tree_size(dir.path());
    eprintln!(
        "{WRITES} writes over {KEYS} keys: data directory {used} bytes, newest snapshot {snapshot_bytes} bytes ({:.1}x)",
        used as f64 / snapshot_bytes as f64
    );
    assert!(snapshot_bytes > 0);
    // Two snapshots kept, the log since the purge point, and at most one
    // chunk of purged entries waiting for the chunk to fill.
    assert!(
        used <= 5 * snapshot_bytes,
        "{used} bytes on disk for {snapshot_bytes} of state"
    );
    let state: LogState<_> = log.get_log_state().await.unwrap();
    assert_eq!(
        state.last_purged_log_id,
        Some(log_id(1, WRITES - KEEP_AFTER_SNAPSHOT))
    );
}
