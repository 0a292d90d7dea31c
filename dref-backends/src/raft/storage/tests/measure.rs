//! Throughput of the durable log, to run by hand (not a timed test):
//!
//! ```text
//! TMPDIR=/work/tmp cargo test -p dref-backends --features raft --lib --release \
//!     storage::tests::measure -- --ignored --nocapture --test-threads 1
//! ```
//!
//! `TMPDIR` picks the disk (`/dev/shm` is tmpfs, where a sync is free).
//!
//! On this project's 2-core machine (release build, 3 s per run, 100-byte
//! values):
//!
//! | | /work (virtio disk) | /dev/shm |
//! |---|---|---|
//! | log, 1 proposer | 3 309 appends/s = syncs/s | 13 547 appends/s |
//! | log, 64 proposers | 69 748 appends/s, 1 781 syncs/s (39 per sync) | 136 417 appends/s (40 per sync) |
//! | openraft 0.9.25 leader, 1 client | 2 173 writes/s, 1 sync each | 24 751 writes/s |
//! | openraft 0.9.25 leader, 64 clients | 2 494 writes/s, 1 sync each | 23 442 writes/s |
//!
//! The log shares a sync among whatever is queued, but openraft 0.9's core
//! appends one client write at a time and waits for its flush before it
//! takes the next (`RaftCore::append_to_log`), so a leader never has two
//! appends outstanding: its write rate is one per sync whatever the
//! number of clients. Batching must happen above it (several commands per
//! entry) for concurrency to pay; followers already get batches (one
//! `AppendEntries` of up to `max_payload_entries` per sync).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{entry, node, open, write_command, TempDir};
use crate::raft::storage::LogStore;

const RUN: Duration = Duration::from_secs(3);

/// Proposers that each append one entry and wait for it to be durable, as
/// a leader whose core hands over every proposal at once would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn appends_and_syncs_per_second() {
    for proposers in [1u64, 64] {
        let dir = TempDir::new("measure");
        let log = open(dir.path()).await.log;
        let LogStore::Disk(disk) = &log else {
            unreachable!()
        };
        let disk = disk.clone();
        let next = Arc::new(tokio::sync::Mutex::new(1u64));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..proposers {
            let (disk, next, stop) = (disk.clone(), next.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
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
        tokio::time::sleep(RUN).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        let (appends, syncs) = (disk.stats().appended(), disk.stats().syncs());
        eprintln!(
            "storage, {proposers:>2} proposers in {}: {:>8.0} appends/s, {:>6.0} syncs/s, {:.1} appends per sync",
            dir.path().display(),
            appends as f64 / secs,
            syncs as f64 / secs,
            appends as f64 / syncs.max(1) as f64
        );
    }
}

/// Clients writing through a one-node openraft 0.9 leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn openraft_client_writes_per_second() {
    for clients in [1u64, 64] {
        let dir = TempDir::new("measure-raft");
        let (raft, _machines, log) = node::start(dir.path(), 100_000).await;
        let syncs_before = log.stats().map_or(0, |s| s.syncs());
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for client in 0..clients {
            let (raft, stop, writes) = (raft.clone(), stop.clone(), writes.clone());
            tasks.push(tokio::spawn(async move {
                let mut seq = client << 32;
                while !stop.load(Ordering::Relaxed) {
                    raft.client_write(write_command(seq, &format!("key-{}", seq % 1000), 100))
                        .await
                        .unwrap();
                    seq += 1;
                    writes.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(RUN).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        let writes = writes.load(Ordering::Relaxed);
        let syncs = log.stats().map_or(0, |s| s.syncs()) - syncs_before;
        eprintln!(
            "openraft, {clients:>2} clients in {}: {:>8.0} writes/s, {:>6.0} syncs/s, {:.2} writes per sync",
            dir.path().display(),
            writes as f64 / secs,
            syncs as f64 / secs,
            writes as f64 / syncs.max(1) as f64
        );
        raft.shutdown().await.unwrap();
    }
}
