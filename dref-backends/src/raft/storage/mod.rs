//! Where a node keeps its Raft log, vote and snapshots: in memory (tests,
//! caches), or on disk in a data directory, so that a replica keeps its
//! identity and state across restarts and a whole cluster survives a full
//! restart.
//!
//! [`Storage::open`] gives the log store to hand to `openraft::Raft::new`
//! and, on disk, the snapshots to hand to `StateMachine::open`. The state
//! machine itself stays in memory: at start it is restored from the newest
//! snapshot, and openraft replays the committed entries after it from the
//! log (which is why the commit index is stored too).
//!
//! # A data directory
//!
//! ```text
//! <data_dir>/LOCK        flock(2)-ed while open: one process per directory
//! <data_dir>/identity    node id and cluster (see Identity)
//! <data_dir>/log/        the write-ahead log: r-<offset>.wal chunk files
//! <data_dir>/snapshots/  snapshot-<position>-<term>-<seq>.snap, newest two
//! ```
//!
//! # Durability
//!
//! The vote and every appended entry are on disk (`fdatasync`) before they
//! are acknowledged; see [`disk`] for what else is written and
//! when, and how concurrent appends share one sync. Every record read back
//! is checked (CRC32): a record torn by a crash at the end of the log is
//! dropped with a warning (it was never acknowledged), damage anywhere else
//! refuses to open with an error naming the file. Snapshots are written to
//! a temporary file, fsynced and renamed; the newest valid one is used.
//! Disk use stays bounded: a snapshot lets openraft purge the log behind
//! it, and purged entries go a whole chunk file at a time, so at most one
//! chunk ([`StorageOptions::chunk_entries`]) of dead entries stays behind.
//!
//! # Why `raft-log`
//!
//! The log is [`raft-log`](https://docs.rs/raft-log) 0.4 (pinned to 0.4:
//! its minor versions break the API), written by openraft's author for
//! openraft's log API: a chunked append-only WAL with a CRC32 per record,
//! a writer thread that batches `fdatasync`, directory fsync when a chunk
//! file is created or removed, truncation of a torn last record, and purge
//! by deleting whole chunk files once the purge record is synced. It is
//! maintained (history from 2024, releases through 2026). The candidates,
//! measured on this project's 2-core machine (clean `cargo build` of a
//! scratch crate depending only on the library, all its dependencies
//! included):
//!
//! | library | debug | release | MSRV / edition | durability model |
//! |---|---|---|---|---|
//! | raft-log 0.4.6 | 14.5 s | 16.3 s | edition 2024, Rust 1.85 (ours) | append + one `fdatasync` per batch; CRC32 per record; torn tail truncated |
//! | redb 4.6 | 6.0 s | 13.9 s | Rust 1.90, above our 1.85 | B-tree pages copied on write, checksummed commit; one write transaction at a time |
//! | rocksdb 0.25 (no default features) | 23.5 min | not run | C++17, needs libclang for bindgen | LSM: WAL + memtables + compaction threads |
//!
//! (rocksdb's build ran beside another test run, load ≈ 4; it is the C++
//! compile, and it needs `libclang-dev`, which this machine lacks until
//! installed. Far past acceptable for every clean build and CI run here.)
//! redb is lean and well kept, but a Raft log in a B-tree rewrites pages
//! for every append and frees purged pages without shrinking the file;
//! raft-log is made for exactly this access pattern, and its batching is
//! what group commit needs.
//!
//! In this workspace raft-log adds 25 crates to `Cargo.lock` (3 of them
//! Windows-only): `chunked-wal`, `codeq`, `fs2`, `crc32fast`, `byteorder`,
//! `base2histogram`, and `display-more`, which brings `chrono-tz` and a
//! build script over the time-zone database (`phf`, `regex`,
//! `parse-zoneinfo`): much of the build time above, for a debug-display
//! helper. The first build of `dref-backends` after adding it took 63 s,
//! mostly recompiling shared crates (`syn`, `serde`) with more features. Its read path serves entries from a
//! bounded in-memory cache and `pread`s the rest; it refuses votes that go
//! backwards, appends that are not consecutive and commits past the last
//! entry, which turns misuse into an error rather than stored state. It
//! logs through `log`, not `tracing`: its own messages (a truncated tail,
//! a removed chunk) need a `log` bridge to be seen; the warnings that
//! matter are repeated here through `tracing`.

#![allow(
    clippy::result_large_err,
    reason = "openraft's StorageError is the error of its storage traits, which these functions feed"
)]

mod codec;
mod dir;
mod disk;
mod durability;
mod identity;
mod memory;
mod snapshots;
#[cfg(test)]
mod tests;

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogReader, StorageError,
    Vote,
};

#[cfg(feature = "test-util")]
pub use disk::SyncStall;
pub use disk::{DiskLog, LogStats};
pub use durability::Durability;
pub use identity::Identity;
#[cfg(test)]
pub use identity::IDENTITY_FILE;
pub use memory::MemoryLog;
#[cfg(test)]
pub use snapshots::StoredSnapshot;
pub use snapshots::{SnapshotStore, Snapshots};

use super::types::TypeConfig;
use dir::{refusal, DirLock};

/// The log subdirectory of a data directory.
pub const LOG_DIR: &str = "log";
/// The snapshot subdirectory of a data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// Tuning of the durable store (the in-memory store has none).
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// Entries per log chunk file (default 4096). The log is purged a
    /// whole chunk at a time, so up to this many dead entries stay on disk
    /// behind a snapshot: keep it at or below the snapshot interval.
    pub chunk_entries: usize,
    /// Largest chunk file in bytes (default 64 MiB), for logs of few but
    /// large entries.
    pub chunk_bytes: usize,
    /// Memory for recent entries kept decoded, so that replication reads
    /// no file (default 64 MiB).
    pub cache_bytes: usize,
    /// Snapshots kept on disk (default 2): the newest, and one to fall back
    /// on should the newest be damaged.
    pub snapshots_kept: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            chunk_entries: 4096,
            chunk_bytes: 64 << 20,
            cache_bytes: 64 << 20,
            snapshots_kept: 2,
        }
    }
}

/// A node's storage, opened: the log store for `openraft::Raft::new`, and
/// on disk the snapshots for `StateMachine::open`. Dropping every part
/// (openraft drops the log store when the node stops) closes it and
/// unlocks the directory.
#[derive(Debug)]
pub struct Storage {
    /// The log store.
    pub log: LogStore,
    /// Snapshots, on disk only.
    pub snapshots: Option<Snapshots>,
}

impl Storage {
    /// Opens the storage of a node: in `data_dir` if one is given (created
    /// if missing, locked against other processes), else in memory.
    ///
    /// On disk the log is replayed and the newest valid snapshot read; the
    /// open is refused, with an error saying why and where, if the
    /// directory is locked, a record is damaged, or the log was purged
    /// past what the surviving snapshots cover (the node cannot rebuild
    /// its state; emptying the directory lets it rejoin as a new node).
    pub async fn open(
        data_dir: Option<&Path>,
        options: &StorageOptions,
    ) -> Result<Storage, StorageError<u64>> {
        let Some(dir) = data_dir else {
            return Ok(Storage {
                log: LogStore::Memory(MemoryLog::default()),
                snapshots: None,
            });
        };
        let dir = dir.to_owned();
        let options = options.clone();
        tokio::task::spawn_blocking(move || Storage::open_blocking(&dir, &options))
            .await
            .map_err(|e| {
                refusal(
                    ErrorSubject::Store,
                    ErrorVerb::Read,
                    format!("opening the storage stopped: {e}"),
                )
            })?
    }

    fn open_blocking(dir: &Path, options: &StorageOptions) -> Result<Storage, StorageError<u64>> {
        let lock = DirLock::acquire(dir)?;
        let log = DiskLog::open(&dir.join(LOG_DIR), options, lock.clone())?;
        let snapshots = SnapshotStore::open(&dir.join(SNAPSHOT_DIR), options.snapshots_kept, lock)?;
        let purged = log.purged_at_open();
        let covered = snapshots
            .newest
            .as_ref()
            .and_then(|s| s.meta.last_log_id)
            .map(|l| l.index);
        if let Some(purged) = purged {
            if covered.is_none_or(|covered| covered < purged.index) {
                return Err(refusal(
                    ErrorSubject::Store,
                    ErrorVerb::Read,
                    format!(
                        "the raft log in {} starts after index {}, but {}: this node cannot rebuild its state; \
                         empty the directory to rejoin as a new node",
                        dir.join(LOG_DIR).display(),
                        purged.index,
                        match covered {
                            Some(index) => format!("the newest valid snapshot ends at index {index}"),
                            None => "there is no snapshot".to_owned(),
                        }
                    ),
                ));
            }
        }
        Ok(Storage {
            log: LogStore::Disk(log),
            snapshots: Some(snapshots),
        })
    }
}

/// The Raft log store: in memory or on disk.
#[derive(Clone, Debug)]
pub enum LogStore {
    /// Lost with the process.
    Memory(MemoryLog),
    /// Durable, in a data directory.
    Disk(DiskLog),
}

impl Default for LogStore {
    /// The in-memory store.
    fn default() -> Self {
        LogStore::Memory(MemoryLog::default())
    }
}

impl LogStore {
    /// The durable log's counters (appends, syncs); `None` in memory.
    pub fn stats(&self) -> Option<&std::sync::Arc<LogStats>> {
        match self {
            LogStore::Memory(_) => None,
            LogStore::Disk(disk) => Some(disk.stats()),
        }
    }

    /// How far the durable log is on disk; `None` in memory, where an
    /// entry is "flushed" once stored.
    pub fn durability(&self) -> Option<&Durability> {
        match self {
            LogStore::Memory(_) => None,
            LogStore::Disk(disk) => Some(disk.durability()),
        }
    }

    /// Node `id` runs on this store: as leader, its own entries may be
    /// replicated while they sync (see [`DiskLog::lead_as`]).
    pub fn lead_as(&self, id: u64) {
        if let LogStore::Disk(disk) = self {
            disk.lead_as(id);
        }
    }

    /// A switch that holds the durable log's syncs back (feature
    /// `test-util`; `None` in memory). It does not keep the log open.
    #[cfg(feature = "test-util")]
    pub fn sync_stall(&self) -> Option<SyncStall> {
        match self {
            LogStore::Memory(_) => None,
            LogStore::Disk(disk) => Some(disk.sync_stall()),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        match self {
            LogStore::Memory(m) => m.try_get_log_entries(range).await,
            LogStore::Disk(d) => d.try_get_log_entries(range).await,
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        match self {
            LogStore::Memory(m) => m.get_log_state().await,
            LogStore::Disk(d) => d.get_log_state().await,
        }
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        match self {
            LogStore::Memory(m) => m.save_vote(vote).await,
            LogStore::Disk(d) => d.save_vote(vote).await,
        }
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        match self {
            LogStore::Memory(m) => m.read_vote().await,
            LogStore::Disk(d) => d.read_vote().await,
        }
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        match self {
            LogStore::Memory(m) => m.save_committed(committed).await,
            LogStore::Disk(d) => d.save_committed(committed).await,
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        match self {
            LogStore::Memory(m) => m.read_committed().await,
            LogStore::Disk(d) => d.read_committed().await,
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match self {
            LogStore::Memory(m) => m.append(entries, callback).await,
            LogStore::Disk(d) => d.append(entries, callback).await,
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        match self {
            LogStore::Memory(m) => m.truncate(log_id).await,
            LogStore::Disk(d) => d.truncate(log_id).await,
        }
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        match self {
            LogStore::Memory(m) => m.purge(log_id).await,
            LogStore::Disk(d) => d.purge(log_id).await,
        }
    }
}
