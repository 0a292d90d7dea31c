//! Durable snapshots of the state machine, one file each.
//!
//! A snapshot is written to a temporary file, fsynced, renamed into place
//! and the directory fsynced, so a crash leaves the previous snapshots and
//! at most a stray temporary file (removed at the next start). Each file
//! carries a CRC32 over its metadata and content and its exact length, so a
//! torn or damaged file is recognised; at start the newest valid one is
//! used, and the newest few are kept.
//!
//! File layout (version 1), integers little-endian:
//! `DREFSNAP`, version `u8`, metadata length `u32`, data length `u64`,
//! metadata (postcard `SnapshotMeta`), data, CRC32 of all before it `u32`.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{BasicNode, ErrorSubject, ErrorVerb, LogId, SnapshotMeta, StorageError};
use parking_lot::Mutex;

use super::dir::{io_error, refusal, sync_dir, temp_path, DirLock};

const MAGIC: &[u8; 8] = b"DREFSNAP";
const VERSION: u8 = 1;
const HEADER_BYTES: usize = 8 + 1 + 4 + 8;
const SUFFIX: &str = ".snap";

/// A snapshot read back from disk, checked.
#[derive(Clone, Debug)]
pub struct StoredSnapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta<u64, BasicNode>,
    /// The state machine's encoded image.
    pub data: Vec<u8>,
}

/// The snapshot directory of an opened [`Storage`](super::Storage), and the
/// newest snapshot found in it when it was opened. Hand it to
/// `StateMachine::open`, which starts from `newest` and writes every
/// snapshot it builds or installs to `store`.
#[derive(Debug)]
pub struct Snapshots {
    /// Where snapshots are written.
    pub store: SnapshotStore,
    /// The newest valid snapshot at open time.
    pub newest: Option<StoredSnapshot>,
}

/// Writes snapshots into a directory (clones share it).
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    keep: usize,
    /// Serialises writers (a built and an installed snapshot may race) and
    /// numbers their files.
    next_seq: Mutex<u64>,
    _lock: Arc<DirLock>,
}

/// Where a file sorts among snapshots: by the log position it covers, then
/// by when it was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    /// `last_log_id.index + 1`, 0 for a snapshot of nothing.
    position: u64,
    term: u64,
    seq: u64,
}

impl Key {
    fn of(last: Option<LogId<u64>>, seq: u64) -> Key {
        Key {
            position: last.map_or(0, |l| l.index + 1),
            term: last.map_or(0, |l| l.leader_id.term),
            seq,
        }
    }

    fn file_name(&self) -> String {
        format!(
            "snapshot-{:020}-{:020}-{:020}{SUFFIX}",
            self.position, self.term, self.seq
        )
    }

    fn parse(name: &str) -> Option<Key> {
        let rest = name.strip_prefix("snapshot-")?.strip_suffix(SUFFIX)?;
        let mut parts = rest.split('-').map(str::parse::<u64>);
        let key = Key {
            position: parts.next()?.ok()?,
            term: parts.next()?.ok()?,
            seq: parts.next()?.ok()?,
        };
        parts.next().is_none().then_some(key)
    }
}

fn snapshot_error(doing: &str, path: &Path, verb: ErrorVerb, e: &io::Error) -> StorageError<u64> {
    io_error(ErrorSubject::Snapshot(None), verb, doing, path, e)
}

/// Why a snapshot file cannot be used.
enum Unusable {
    /// Torn or damaged: an older snapshot may stand in for it.
    Damaged(String),
    /// Written by another version: nothing may stand in for it, or state
    /// this build cannot read would be silently replaced by older state.
    Unsupported(String),
}

impl SnapshotStore {
    /// Opens (creating) `dir`, removes unfinished temporary files, and
    /// finds the newest valid snapshot. A damaged newest snapshot is
    /// skipped (with a warning) for an older valid one; if snapshots exist
    /// but none is valid, that is an error. Blocking.
    pub(super) fn open(
        dir: &Path,
        keep: usize,
        lock: Arc<DirLock>,
    ) -> Result<Snapshots, StorageError<u64>> {
        fs::create_dir_all(dir).map_err(|e| {
            snapshot_error("create the snapshot directory", dir, ErrorVerb::Write, &e)
        })?;
        let mut found = list(dir)?;
        found.sort_by_key(|(key, _)| std::cmp::Reverse(*key));
        let next_seq = found.iter().map(|(k, _)| k.seq + 1).max().unwrap_or(0);

        let mut newest = None;
        let mut damaged = Vec::new();
        for (key, path) in &found {
            match read(path) {
                Ok(snapshot) => {
                    if Key::of(snapshot.meta.last_log_id, key.seq) != *key {
                        damaged.push((
                            path.clone(),
                            "its name disagrees with its content".to_owned(),
                        ));
                        continue;
                    }
                    newest = Some((path.clone(), snapshot));
                    break;
                }
                Err(Unusable::Damaged(why)) => damaged.push((path.clone(), why)),
                Err(Unusable::Unsupported(why)) => {
                    return Err(refusal(
                        ErrorSubject::Snapshot(None),
                        ErrorVerb::Read,
                        format!("the snapshot {} cannot be used: {why}", path.display()),
                    ))
                }
            }
        }
        let listing = |damaged: &[(PathBuf, String)]| {
            damaged
                .iter()
                .map(|(p, why)| format!("{}: {why}", p.display()))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let newest = match newest {
            Some((path, snapshot)) => {
                for (bad, why) in &damaged {
                    tracing::warn!(
                        snapshot = %bad.display(),
                        reason = %why,
                        using = %path.display(),
                        "skipping a damaged snapshot for an older valid one, and removing it"
                    );
                    if let Err(e) = fs::remove_file(bad) {
                        tracing::warn!(snapshot = %bad.display(), error = %e, "cannot remove a damaged snapshot");
                    }
                }
                Some(snapshot)
            }
            None if damaged.is_empty() => None,
            None => {
                return Err(refusal(
                    ErrorSubject::Snapshot(None),
                    ErrorVerb::Read,
                    format!(
                        "no valid snapshot in {}: {}",
                        dir.display(),
                        listing(&damaged)
                    ),
                ))
            }
        };
        let store = SnapshotStore {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                keep: keep.max(1),
                next_seq: Mutex::new(next_seq),
                _lock: lock,
            }),
        };
        store.prune()?;
        Ok(Snapshots { store, newest })
    }

    /// Writes a snapshot durably, then removes all but the newest few.
    /// Blocking: call it from `spawn_blocking`, never holding a lock the
    /// node needs meanwhile.
    pub fn save(
        &self,
        meta: &SnapshotMeta<u64, BasicNode>,
        data: &[u8],
    ) -> Result<(), StorageError<u64>> {
        let signature = Some(meta.signature());
        let write_error = |doing: &str, path: &Path, e: &io::Error| {
            io_error(
                ErrorSubject::Snapshot(signature.clone()),
                ErrorVerb::Write,
                doing,
                path,
                e,
            )
        };
        let meta_bytes = postcard::to_allocvec(meta).map_err(|e| {
            refusal(
                ErrorSubject::Snapshot(signature.clone()),
                ErrorVerb::Write,
                format!("cannot encode snapshot metadata: {e}"),
            )
        })?;
        let mut seq = self.inner.next_seq.lock();
        let key = Key::of(meta.last_log_id, *seq);
        *seq += 1;
        let path = self.inner.dir.join(key.file_name());
        let tmp = temp_path(&path);

        let write = || -> io::Result<()> {
            let file = File::create(&tmp)?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            let mut crc = crc32fast::Hasher::new();
            let mut put = |out: &mut BufWriter<File>, bytes: &[u8]| {
                crc.update(bytes);
                out.write_all(bytes)
            };
            put(&mut out, MAGIC)?;
            put(&mut out, &[VERSION])?;
            put(&mut out, &(meta_bytes.len() as u32).to_le_bytes())?;
            put(&mut out, &(data.len() as u64).to_le_bytes())?;
            put(&mut out, &meta_bytes)?;
            put(&mut out, data)?;
            let crc = crc.finalize();
            out.write_all(&crc.to_le_bytes())?;
            let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
            file.sync_all()
        };
        if let Err(e) = write() {
            // Best effort: a leftover temporary file is also removed at
            // the next start.
            if let Err(rm) = fs::remove_file(&tmp) {
                tracing::warn!(path = %tmp.display(), error = %rm, "cannot remove an unfinished snapshot");
            }
            return Err(write_error("write the snapshot", &tmp, &e));
        }
        fs::rename(&tmp, &path).map_err(|e| write_error("rename the snapshot into", &path, &e))?;
        sync_dir(&self.inner.dir)
            .map_err(|e| write_error("sync the snapshot directory", &self.inner.dir, &e))?;
        drop(seq);
        self.prune()
    }

    /// Removes all snapshots but the newest `keep`.
    fn prune(&self) -> Result<(), StorageError<u64>> {
        let mut found = list(&self.inner.dir)?;
        if found.len() <= self.inner.keep {
            return Ok(());
        }
        found.sort_by_key(|(key, _)| std::cmp::Reverse(*key));
        for (_, path) in &found[self.inner.keep..] {
            fs::remove_file(path).map_err(|e| {
                snapshot_error("remove the old snapshot", path, ErrorVerb::Delete, &e)
            })?;
        }
        sync_dir(&self.inner.dir).map_err(|e| {
            snapshot_error(
                "sync the snapshot directory",
                &self.inner.dir,
                ErrorVerb::Write,
                &e,
            )
        })
    }
}

/// The snapshot files of `dir`; removes temporary files left by a crash.
fn list(dir: &Path) -> Result<Vec<(Key, PathBuf)>, StorageError<u64>> {
    let entries = fs::read_dir(dir)
        .map_err(|e| snapshot_error("list the snapshot directory", dir, ErrorVerb::Read, &e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| snapshot_error("list the snapshot directory", dir, ErrorVerb::Read, &e))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".tmp") {
            tracing::warn!(path = %path.display(), "removing a snapshot left unfinished by a crash");
            fs::remove_file(&path).map_err(|e| {
                snapshot_error(
                    "remove the unfinished snapshot",
                    &path,
                    ErrorVerb::Delete,
                    &e,
                )
            })?;
            continue;
        }
        match Key::parse(&name) {
            Some(key) => found.push((key, path)),
            None => {
                tracing::warn!(path = %path.display(), "ignoring a file that is not a snapshot")
            }
        }
    }
    Ok(found)
}

/// Reads and checks one snapshot file.
fn read(path: &Path) -> Result<StoredSnapshot, Unusable> {
    let bytes = fs::read(path).map_err(|e| Unusable::Damaged(format!("cannot read it: {e}")))?;
    if bytes.len() < HEADER_BYTES + 4 {
        return Err(Unusable::Damaged(format!(
            "{} bytes is too short",
            bytes.len()
        )));
    }
    if &bytes[..8] != MAGIC {
        return Err(Unusable::Damaged("it is not a dref snapshot".into()));
    }
    if bytes[8] != VERSION {
        return Err(Unusable::Unsupported(format!(
            "it has format version {}, this build reads version {VERSION}",
            bytes[8]
        )));
    }
    let mut meta_len = [0; 4];
    meta_len.copy_from_slice(&bytes[9..13]);
    let mut data_len = [0; 8];
    data_len.copy_from_slice(&bytes[13..21]);
    let meta_len = u64::from(u32::from_le_bytes(meta_len));
    let data_len = u64::from_le_bytes(data_len);
    let expected = (HEADER_BYTES as u64 + 4)
        .checked_add(meta_len)
        .and_then(|n| n.checked_add(data_len));
    if expected != Some(bytes.len() as u64) {
        return Err(Unusable::Damaged(format!(
            "it is {} bytes long, its header says {} (torn or damaged)",
            bytes.len(),
            expected.map_or_else(|| "more than can exist".to_owned(), |n| n.to_string())
        )));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(Unusable::Damaged("it fails its checksum".into()));
    }
    // Both lengths are bounded by the file's, which is in memory.
    let meta_end = HEADER_BYTES + meta_len as usize;
    let meta = postcard::from_bytes(&body[HEADER_BYTES..meta_end])
        .map_err(|e| Unusable::Damaged(format!("its metadata does not decode: {e}")))?;
    Ok(StoredSnapshot {
        meta,
        data: body[meta_end..].to_vec(),
    })
}
