//! Tests of the storage layer: openraft's own suite against both stores,
//! then what the suite cannot see (restarts, damage, crashes, group
//! commit, disk use), and a measurement to run by hand.

mod identity;
mod leader;
mod log;
mod measure;
mod node;
mod snapshots;
mod suite;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use openraft::storage::RaftLogStorageExt;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

use super::{LogStore, Storage, StorageOptions};
use crate::raft::types::{
    Command, CommandOp, Proposal, RequestId, TypeConfig, WireCondition, WireOp, WireWrite,
};

/// A directory under the system's temporary directory (`TMPDIR` picks the
/// disk), removed when dropped, unless its test failed (then it is kept as
/// evidence, as `dref_tests::scratch::ScratchDir` keeps the integration
/// tests' directories, which this crate's tests cannot depend on).
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("dref-storage-{tag}-{}-{n}", std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path).expect("remove a stale test directory");
        }
        fs::create_dir_all(&path).expect("create a test directory");
        TempDir(path)
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} (the test failed)", self.0.display());
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("cannot remove {}: {e}", self.0.display());
        }
    }
}

pub(super) fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// A write of `value_len` bytes to `key`, as the node proposes it.
/// A log entry's payload of one write.
pub(super) fn write_command(seq: u64, key: &str, value_len: usize) -> Proposal {
    Proposal {
        commands: vec![one_write(seq, key, value_len)],
    }
}

fn one_write(seq: u64, key: &str, value_len: usize) -> Command {
    Command {
        id: RequestId { client: 7, seq },
        op: CommandOp::Write(WireWrite {
            key: key.to_owned(),
            condition: WireCondition::Any,
            op: WireOp::Put(vec![(
                "v".to_owned(),
                Bytes::from(vec![(seq % 251) as u8; value_len]),
            )]),
            lease: None,
            max_record_bytes: None,
        }),
    }
}

pub(super) fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(write_command(index, &format!("key-{}", index % 10), 24)),
    }
}

pub(super) async fn open(dir: &Path) -> Storage {
    Storage::open(Some(dir), &StorageOptions::default())
        .await
        .expect("the storage opens")
}

pub(super) async fn append(
    log: &mut LogStore,
    entries: impl IntoIterator<Item = Entry<TypeConfig>>,
) {
    log.blocking_append(entries.into_iter().collect::<Vec<_>>())
        .await
        .expect("the entries are appended");
}

/// Entries compared by what they say (`Entry` has no `PartialEq`).
pub(super) fn same(a: &[Entry<TypeConfig>], b: &[Entry<TypeConfig>]) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// Copies a directory tree (a data directory frozen as a crash left it).
/// A file removed while the copy runs is left out, as if removed before.
pub(super) fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create the copy");
    for entry in fs::read_dir(from).expect("list the directory") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            match fs::copy(entry.path(), &target) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("cannot copy {}: {e}", entry.path().display()),
            }
        }
    }
}

/// Bytes in the files under `dir`.
pub(super) fn tree_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .expect("list the directory")
        .map(|e| {
            let e = e.expect("a directory entry");
            let meta = e.metadata().expect("metadata");
            if meta.is_dir() {
                tree_size(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// The newest chunk file of a data directory's log.
pub(super) fn last_chunk(data_dir: &Path) -> PathBuf {
    let mut chunks: Vec<PathBuf> = fs::read_dir(data_dir.join(super::LOG_DIR))
        .expect("list the log")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    chunks.sort();
    chunks.pop().expect("the log has a chunk")
}
