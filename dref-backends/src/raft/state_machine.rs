//! The replicated state machine: a [`Store`] that every node feeds with the
//! same committed commands, plus snapshots of it.
//!
//! The state lives in memory. With a data directory, every snapshot built
//! or installed is also written to disk (off the async workers and outside
//! the machine's lock) before openraft is told about it, so that openraft
//! purges the log only behind a durable snapshot; at start the machine is
//! restored from the newest one (see [`StateMachine::open`]).
//!
//! A revision is derived from the log (see [`revision_of`] and
//! [`Store::commit_at`]): every node applies the same entries, so every node
//! assigns the same revisions, and a lease expiry deletes all of its records
//! at one revision.

#![allow(
    clippy::result_large_err,
    reason = "openraft's StorageError is the error of its storage traits, which these functions feed"
)]

use std::collections::{HashMap, VecDeque};
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use dref::engine::store::{Store, StoreAccess, StoreImage};
use dref::engine::{Key, LeaseId, Record, WriteOutcome};
use openraft::storage::RaftStateMachine;
use openraft::AnyError;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::storage::{Durability, SnapshotStore, Snapshots};
use super::types::{
    millis, revision_of, Applied, Command, CommandOp, RequestId, TypeConfig, WireRecord,
};

/// How many recent request results are remembered for deduplication.
const DEDUP_WINDOW: usize = 50_000;

/// Answers of recently applied requests, so that a retried proposal is
/// answered from here instead of being applied twice.
#[derive(Default)]
struct Dedup {
    results: HashMap<RequestId, Applied>,
    order: VecDeque<RequestId>,
}

impl Dedup {
    fn remember(&mut self, id: RequestId, applied: &Applied) {
        if !applied.is_final() {
            return;
        }
        if self.results.insert(id, applied.clone()).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > DEDUP_WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.results.remove(&old);
            }
        }
    }
}

struct Machine {
    store: Store,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    dedup: Dedup,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    snapshots_built: u64,
    /// Bytes written since the last snapshot was built or installed: the
    /// size side of the snapshot policy.
    written_since_snapshot: u64,
}

/// What a snapshot holds besides its metadata.
#[derive(Serialize, Deserialize)]
struct SnapshotImage {
    revision: u64,
    last_lease: u64,
    records: Vec<(String, WireRecord)>,
    leases: Vec<(u64, u64)>,
    dedup: Vec<(RequestId, Applied)>,
}

/// The state shared by the state machine, the snapshot builder and the
/// node's readers and watchers.
pub struct Machines {
    machine: Mutex<Machine>,
}

impl StoreAccess for Machines {
    fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.machine.lock().store)
    }
}

impl Machines {
    /// The index of the last applied log entry.
    pub fn applied_index(&self) -> u64 {
        self.machine.lock().last_applied.map_or(0, |l| l.index)
    }

    /// The record under `key`.
    pub fn get(&self, key: &Key) -> Option<Record> {
        self.machine.lock().store.get(key).cloned()
    }

    /// Live leases and their TTLs.
    pub fn leases(&self) -> Vec<(LeaseId, Duration)> {
        self.machine.lock().store.leases().collect()
    }

    /// The TTL of a live lease.
    pub fn lease_ttl(&self, lease: LeaseId) -> Option<Duration> {
        self.machine.lock().store.lease_ttl(lease)
    }

    /// Bytes written since the last snapshot.
    pub fn written_since_snapshot(&self) -> u64 {
        self.machine.lock().written_since_snapshot
    }
}

/// The openraft state machine (a handle; clones share the state).
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Machines>,
    /// Where snapshots are made durable; `None` keeps them in memory only.
    snapshots: Option<SnapshotStore>,
    /// How far this node's log is on disk: an entry is applied only once
    /// it is there (`None`: a log in memory, whose entries are stored when
    /// appended). See `storage/durability.rs`.
    durability: Option<Durability>,
}

impl StateMachine {
    /// An empty state machine whose snapshots live in memory only.
    pub fn new(watch_buffer: usize) -> Self {
        StateMachine {
            snapshots: None,
            durability: None,
            shared: Arc::new(Machines {
                machine: Mutex::new(Machine {
                    store: Store::new(watch_buffer),
                    last_applied: None,
                    membership: StoredMembership::default(),
                    dedup: Dedup::default(),
                    snapshot: None,
                    snapshots_built: 0,
                    written_since_snapshot: 0,
                }),
            }),
        }
    }

    /// Applies an entry only once `durability` says it is on this node's
    /// disk (see `storage/durability.rs`); `None` applies at once.
    pub fn with_durability(mut self, durability: Option<Durability>) -> Self {
        self.durability = durability;
        self
    }

    /// A state machine for a node's storage (`Storage::open`): in memory
    /// for `None`; else restored from the newest snapshot on disk, if any,
    /// and writing every later snapshot there. openraft then replays the
    /// committed log entries after that snapshot.
    pub fn open(
        watch_buffer: usize,
        snapshots: Option<Snapshots>,
    ) -> Result<Self, StorageError<u64>> {
        let mut machine = StateMachine::new(watch_buffer);
        let Some(Snapshots { store, newest }) = snapshots else {
            return Ok(machine);
        };
        if let Some(snapshot) = newest {
            let (image, dedup) = decode_snapshot(&snapshot.data)
                .map_err(|e| StorageIOError::read_snapshot(Some(snapshot.meta.signature()), &e))?;
            restore(
                &mut machine.shared.machine.lock(),
                &snapshot.meta,
                snapshot.data,
                image,
                dedup,
            );
        }
        machine.snapshots = Some(store);
        Ok(machine)
    }

    /// The shared state, for reads and watches.
    pub fn shared(&self) -> &Arc<Machines> {
        &self.shared
    }
}

/// Replaces the machine's state with a decoded snapshot.
fn restore(
    m: &mut Machine,
    meta: &SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
    image: StoreImage,
    dedup: Dedup,
) {
    m.store.restore(image);
    m.written_since_snapshot = 0;
    m.dedup = dedup;
    m.last_applied = meta.last_log_id;
    m.membership = meta.last_membership.clone();
    m.snapshot = Some((meta.clone(), data));
}

fn apply_command(m: &mut Machine, command: Command) -> Applied {
    if let Some(answer) = m.dedup.results.get(&command.id) {
        return answer.clone();
    }
    let applied = match command.op {
        CommandOp::Write(write) => match m.store.write({
            let write = write.into_engine();
            m.written_since_snapshot += write.payload_size() as u64;
            write
        }) {
            Ok(WriteOutcome::Committed { revision, version }) => {
                Applied::Committed { revision, version }
            }
            Ok(WriteOutcome::Rejected { current }) => {
                Applied::Rejected(current.as_ref().map(WireRecord::from))
            }
            Err(dref::Error::LeaseExpired { lease }) => Applied::LeaseExpired(lease.0),
            Err(dref::Error::ValueTooLarge { size, limit, .. }) => Applied::TooLarge {
                size: size as u64,
                limit: limit as u64,
            },
            Err(e) => Applied::Failed(e.to_string()),
        },
        CommandOp::Grant { ttl_ms } => {
            Applied::Granted(m.store.grant(Duration::from_millis(ttl_ms)).0)
        }
        CommandOp::Revoke { lease } => {
            m.store.revoke(LeaseId(lease));
            Applied::Revoked
        }
    };
    m.dedup.remember(command.id, &applied);
    applied
}

/// The snapshot content, built from what was copied out of the machine
/// under its lock (records share their bytes, so that copy is cheap); the
/// conversion and encoding run without the lock.
fn snapshot_image(image: StoreImage, dedup: Vec<(RequestId, Applied)>) -> SnapshotImage {
    SnapshotImage {
        revision: image.revision,
        last_lease: image.last_lease,
        records: image
            .records
            .iter()
            .map(|(k, r)| (k.as_str().to_owned(), WireRecord::from(r)))
            .collect(),
        leases: image
            .leases
            .iter()
            .map(|(id, ttl)| (id.0, millis(*ttl)))
            .collect(),
        dedup,
    }
}

fn decode_snapshot(bytes: &[u8]) -> Result<(StoreImage, Dedup), postcard::Error> {
    let image: SnapshotImage = postcard::from_bytes(bytes)?;
    let store = StoreImage {
        revision: image.revision,
        last_lease: image.last_lease,
        records: image
            .records
            .into_iter()
            .map(|(k, r)| (Key::from(k), Record::from(r)))
            .collect(),
        leases: image
            .leases
            .into_iter()
            .map(|(id, ttl)| (LeaseId(id), Duration::from_millis(ttl)))
            .collect(),
    };
    let mut dedup = Dedup::default();
    for (id, applied) in image.dedup {
        dedup.remember(id, &applied);
    }
    Ok((store, dedup))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let (image, dedup, meta) = {
            let mut m = self.shared.machine.lock();
            m.written_since_snapshot = 0;
            m.snapshots_built += 1;
            let dedup: Vec<(RequestId, Applied)> = m
                .dedup
                .order
                .iter()
                .filter_map(|id| m.dedup.results.get(id).map(|a| (*id, a.clone())))
                .collect();
            let last = m.last_applied;
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: m.membership.clone(),
                snapshot_id: format!(
                    "{}-{}-{}",
                    last.map_or(0, |l| l.leader_id.term),
                    last.map_or(0, |l| l.index),
                    m.snapshots_built
                ),
            };
            (m.store.export(), dedup, meta)
        };
        // Converting, encoding and writing a large state takes a while: off
        // the async workers and outside the lock, so that heartbeats,
        // writes and reads keep flowing meanwhile. The file is durable
        // before openraft hears of the snapshot (and purges the log).
        let store = self.snapshots.clone();
        let file_meta = meta.clone();
        let started = std::time::Instant::now();
        let data = tokio::task::spawn_blocking(move || {
            let data = postcard::to_allocvec(&snapshot_image(image, dedup))
                .map_err(|e| StorageError::from(StorageIOError::write_snapshot(None, &e)))?;
            if let Some(store) = store {
                store.save(&file_meta, &data)?;
            }
            Ok::<_, StorageError<u64>>(data)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, &e))??;
        let took = started.elapsed();
        metrics::histogram!("dref_raft_snapshot_seconds").record(took.as_secs_f64());
        metrics::gauge!("dref_raft_snapshot_bytes").set(data.len() as f64);
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), ?took, "raft snapshot taken");
        let mut m = self.shared.machine.lock();
        let last = meta.last_log_id;
        // An installed snapshot may have overtaken this one meanwhile.
        let newer = m
            .snapshot
            .as_ref()
            .is_none_or(|(current, _)| current.last_log_id < last);
        if newer {
            m.snapshot = Some((meta.clone(), data.clone()));
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let m = self.shared.machine.lock();
        Ok((m.last_applied, m.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Applied>>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        if let (Some(durability), Some(last)) = (&self.durability, entries.last()) {
            // A leader's own entries may be committed while they sync;
            // what they do is seen only once they are on disk.
            durability
                .reached(last.log_id.index)
                .await
                .map_err(|why| StorageIOError::apply(last.log_id, AnyError::error(why)))?;
        }
        let mut m = self.shared.machine.lock();
        let mut answers = Vec::new();
        for entry in entries {
            m.last_applied = Some(entry.log_id);
            let answer = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(proposal) => {
                    let index = entry.log_id.index;
                    let mut applied = Vec::with_capacity(proposal.commands.len());
                    for (position, command) in proposal.commands.into_iter().enumerate() {
                        // The same revisions on every node alike.
                        m.store.commit_at(revision_of(index, position));
                        applied.push(apply_command(&mut m, command));
                    }
                    applied
                }
                EntryPayload::Membership(membership) => {
                    m.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Vec::new()
                }
            };
            answers.push(answer);
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        // Decode before touching the state: a corrupt snapshot changes
        // nothing and is reported as a storage error.
        let (image, dedup) = decode_snapshot(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        // Durable before openraft purges the log behind it; written off the
        // async workers, before the lock is taken.
        let data = match self.snapshots.clone() {
            Some(store) => {
                let file_meta = meta.clone();
                tokio::task::spawn_blocking(move || store.save(&file_meta, &data).map(|()| data))
                    .await
                    .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))??
            }
            None => data,
        };
        let bytes = data.len();
        restore(&mut self.shared.machine.lock(), meta, data, image, dedup);
        tracing::info!(snapshot = %meta.snapshot_id, bytes, "raft snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let m = self.shared.machine.lock();
        Ok(m.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_snapshot_is_an_error_not_a_panic() {
        assert!(decode_snapshot(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_snapshot(&[]).is_err());
    }
}
