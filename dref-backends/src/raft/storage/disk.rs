//! The durable Raft log: entries, vote, committed index and purge point in
//! a `raft-log` write-ahead log.
//!
//! The log sits behind one lock, and every call does its work on the
//! caller's thread: appends, votes, truncations, purges and the commit
//! index go into the library's buffer (memory only), reads come from its
//! entry cache. Nothing waits for another thread except durability itself,
//! because Raft's core runs its log calls one after another: on a write's
//! path the leader reads each entry back to replicate it and to apply it,
//! and a hop to a log thread and back for each call cost more than the disk
//! sync (a reader that misses the cache reads the chunk file under the lock;
//! openraft only reads entries that old to catch a lagging member up).
//!
//! Syncs (write + `fdatasync`) run on the library's flush thread, one at a
//! time. An append starts one at once when none is under way; while one is,
//! appends wait for the next, which starts when it ends and covers all of
//! them, so concurrent and consecutive appends share a sync (group commit)
//! without any added delay: the first waiter pays one sync, the others at
//! most two. The end of a sync tells its waiters on the flush thread.
//!
//! What waits for the sync: `append` (its `LogFlushed` callback) and
//! `save_vote` (its return). What does not: `save_committed`, `truncate`
//! and `purge` return once buffered and are synced with the next append or
//! vote (the log is ordered, so any later acknowledged write makes them
//! durable too), or on their own after 50 ms without one: a commit after
//! every write must not cost a second sync per write. Losing them in a
//! crash is safe: an unsaved commit index is learnt again from the leader,
//! an unsaved truncation or purge leaves entries that Raft truncates or
//! purges again. A thread of the log's own starts those lazy syncs, the
//! sync that follows one that ended with writes waiting, and the last sync
//! at close.
//!
//! A leader's own entries are the exception (`lead_as`): their `LogFlushed`
//! is told as soon as they are buffered and their sync has started, so that
//! openraft, which replicates nothing until the leader's append is
//! flushed, sends them to the followers while the disk syncs. The
//! [`Durability`] mark says when they are really on disk, and nothing they
//! imply is seen before (see `durability.rs`). Which entries are the
//! leader's own: those of the term in which the saved vote is this node's
//! own, committed (it won that election), and none that changes the
//! membership (openraft acts on a membership's commit itself, so a
//! membership entry's commit must be a real one). A follower's appends are
//! never told early: its acknowledgement is what the leader counts.
//!
//! After a failed sync the log refuses everything: retrying an `fsync` that
//! failed can report success for data the kernel already dropped.

use std::fmt;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogReader,
    StorageError, Vote,
};
use parking_lot::Mutex;
use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::{Callback, RaftLog, Types};
use tokio::sync::oneshot;

use super::codec::{payload_size, StoredLogId, StoredPayload, StoredVote};
use super::dir::{io_error, sync_dir, DirLock};
use super::durability::Durability;
use super::StorageOptions;
use crate::raft::types::TypeConfig;

/// How long a record that nobody waits for (a commit index, a truncation,
/// a purge) may stay unsynced when no other write comes to share a sync.
const LAZY_SYNC: Duration = Duration::from_millis(50);

/// The `raft-log` type configuration of our log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct LogTypes;

impl Types for LogTypes {
    type LogId = StoredLogId;
    type LogPayload = StoredPayload;
    type Vote = StoredVote;
    type Callback = SyncDone;
    type UserData = ();

    fn log_index(log_id: &StoredLogId) -> u64 {
        log_id.0.index
    }

    fn payload_size(payload: &StoredPayload) -> u64 {
        payload_size(&payload.0)
    }
}

/// Told when a write is durable (or failed to become so).
type Waiter = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Reports the end of a sync (the library calls it on its flush thread).
pub(super) struct SyncDone(Arc<Shared>);

impl Callback for SyncDone {
    fn send(self, res: io::Result<()>) {
        self.0.synced(res);
    }
}

/// What the log holds, as `get_log_state`, `read_vote` and
/// `read_committed` report it.
#[derive(Clone, Copy, Debug)]
struct State {
    purged: Option<LogId<u64>>,
    last: Option<LogId<u64>>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
}

/// Wakes the log thread.
enum Wake {
    /// A sync ended with writes waiting for the next one (or at close).
    SyncEnded,
    /// The last handle is gone: sync what is left, then stop.
    Close,
}

/// Counters of the durable log.
#[derive(Debug, Default)]
pub struct LogStats {
    appended: AtomicU64,
    syncs: AtomicU64,
}

impl LogStats {
    /// Entries appended since the log was opened.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    /// Syncs (`fdatasync`) completed since the log was opened: with group
    /// commit, far fewer than appends under concurrency.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

/// The durable log (clones share it; a clone is the log reader).
#[derive(Clone)]
pub struct DiskLog {
    handle: Arc<Handle>,
}

impl fmt::Debug for DiskLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskLog")
            .field("dir", &self.handle.shared.dir)
            .finish_non_exhaustive()
    }
}

/// Owned by the log's handles: closes the log when the last one goes.
struct Handle {
    shared: Arc<Shared>,
    /// Where the log started when it was opened.
    purged_at_open: Option<LogId<u64>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The thread syncs what is buffered and releases the directory
        // when it exits; waiting for it makes "dropped" mean "closed", so
        // the directory can be reopened at once (the wait is one sync, at
        // shutdown only).
        if self.shared.wake.send(Wake::Close).is_err() {
            tracing::error!(dir = %self.shared.dir.display(), "the raft log thread stopped early");
        }
        if let Some(thread) = self.thread.lock().take() {
            if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
                tracing::error!(dir = %self.shared.dir.display(), "the raft log thread panicked");
            }
        }
    }
}

/// Holds a log's syncs back, to test what waits for the disk (feature
/// `test-util`). Does not keep the log open.
#[cfg(any(test, feature = "test-util"))]
#[derive(Clone)]
pub struct SyncStall(Arc<Shared>);

#[cfg(any(test, feature = "test-util"))]
impl SyncStall {
    /// Holds syncs back (`true`) or lets them go on (`false`).
    pub fn set(&self, stalled: bool) {
        let shared = &self.0;
        shared.stalled.store(stalled, Ordering::SeqCst);
        let mut inner = shared.inner.lock();
        if !stalled && inner.log.is_some() {
            shared.start_sync(&mut inner, true);
        }
    }
}

/// Shared by the handles, the log thread and the sync under way.
struct Shared {
    inner: Mutex<Inner>,
    /// To the log thread.
    wake: Sender<Wake>,
    dir: PathBuf,
    stats: Arc<LogStats>,
    /// How far the log is on disk.
    durability: Durability,
    /// This node's id, once it may lead: its own entries are then told
    /// flushed before their sync ends.
    leader_id: OnceLock<u64>,
    /// Syncs are held back (tests of what waits for the disk).
    #[cfg(any(test, feature = "test-util"))]
    stalled: std::sync::atomic::AtomicBool,
}

/// A sync under way.
struct InFlight {
    /// Told when it ends.
    waiters: Vec<Waiter>,
    /// The last entry it makes durable (moved back by a truncation).
    covers: Option<LogId<u64>>,
}

/// The log and its group-commit state, behind the lock.
struct Inner {
    /// `None` once closed.
    log: Option<RaftLog<LogTypes>>,
    /// Written, waiting for the next sync.
    waiting: Vec<Waiter>,
    /// The sync under way, if one is.
    in_flight: Option<InFlight>,
    /// Buffered records that no sync covers yet.
    dirty: bool,
    /// Buffered entries a leader told flushed early: the next sync is
    /// wanted as soon as possible, though nobody waits on it.
    wanted: bool,
    /// The log thread is closing the log: tell it when a sync ends.
    closing: bool,
    /// Why the log refuses further work.
    failed: Option<String>,
}

impl DiskLog {
    /// Opens (creating) the log in `dir`: replays it, truncating a torn
    /// last record (with a warning), refusing a damaged one. Blocking.
    pub(super) fn open(
        dir: &Path,
        options: &StorageOptions,
        lock: Arc<DirLock>,
    ) -> Result<DiskLog, StorageError<u64>> {
        let open_error = |doing: &str, e: &io::Error| {
            io_error(ErrorSubject::Logs, ErrorVerb::Read, doing, dir, e)
        };
        std::fs::create_dir_all(dir).map_err(|e| open_error("create the log directory", &e))?;
        let dir_str = dir.to_str().ok_or_else(|| {
            open_error("open the log", &io::Error::other("the path is not UTF-8"))
        })?;
        let mut config = raft_log::Config::new(dir_str);
        config.log_cache_capacity = Some(options.cache_bytes.max(1));
        config.log_cache_max_items = Some(options.chunk_entries.max(1) * 2);
        config.wal.chunk_max_records = Some(options.chunk_entries.max(1));
        config.wal.chunk_max_size = Some(options.chunk_bytes.max(1));
        config.wal.read_buffer_size = Some(4 << 20);
        // Only a torn *last* record is dropped; damage anywhere else fails
        // the open (see codec.rs for why damage cannot pass for a tear).
        config.wal.truncate_incomplete_record = Some(true);
        // Batching is done here, one sync in flight at a time: the
        // library must not add a wait of its own to each sync.
        config.wal.flush_batch_wait = Some(Duration::ZERO);

        let size_before = dir_size(dir);
        let log = RaftLog::<LogTypes>::open(Arc::new(config))
            .map_err(|e| open_error("open the log", &e))?;
        // What the log replayed counts as on disk from now on (a leader
        // marks it durable, openraft counts it flushed), but after a crash
        // of this process alone some of it may still be only in the page
        // cache, written before a sync that never ended: sync it now, so
        // that a power cut later cannot take it back.
        sync_files(dir).map_err(|e| open_error("sync what was replayed of the log", &e))?;
        let size_after = dir_size(dir);
        if size_after < size_before {
            tracing::warn!(
                dir = %dir.display(),
                dropped_bytes = size_before - size_after,
                "the raft log ended in a torn record (a crash during a write); it was truncated"
            );
        }
        let state = log.log_state();
        let purged_at_open = state.purged().map(|l| l.0);
        tracing::info!(
            dir = %dir.display(),
            purged = ?state.purged().map(|l| l.0),
            last = ?state.last().map(|l| l.0),
            committed = ?state.committed().map(|l| l.0),
            vote = ?state.vote().map(|v| v.0),
            "opened the raft log"
        );

        let durable = state.last().or(state.purged()).map(|l| l.0);
        let (wake, woken) = mpsc::channel();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                log: Some(log),
                waiting: Vec::new(),
                in_flight: None,
                dirty: false,
                wanted: false,
                closing: false,
                failed: None,
            }),
            wake,
            dir: dir.to_owned(),
            stats: Arc::new(LogStats::default()),
            durability: Durability::new(durable),
            leader_id: OnceLock::new(),
            #[cfg(any(test, feature = "test-util"))]
            stalled: std::sync::atomic::AtomicBool::new(false),
        });
        let worker = Worker {
            shared: shared.clone(),
            woken,
            _lock: lock,
        };
        let thread = std::thread::Builder::new()
            .name("dref-raft-log".into())
            .spawn(move || worker.run())
            .map_err(|e| open_error("start the log thread for", &e))?;
        Ok(DiskLog {
            handle: Arc::new(Handle {
                shared,
                purged_at_open,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// The last purged entry when the log was opened.
    pub(super) fn purged_at_open(&self) -> Option<LogId<u64>> {
        self.handle.purged_at_open
    }

    /// The log's counters.
    pub fn stats(&self) -> &Arc<LogStats> {
        &self.handle.shared.stats
    }

    /// How far the log is on disk.
    pub fn durability(&self) -> &Durability {
        &self.handle.shared.durability
    }

    /// From now on, the entries node `id` appends as leader are told
    /// flushed once buffered, before their sync ends (see the module
    /// documentation). Set once; later calls are ignored.
    pub fn lead_as(&self, id: u64) {
        let _already = self.handle.shared.leader_id.set(id);
    }

    /// Holds syncs back (`true`) or lets them go on (`false`), to test
    /// what waits for the disk.
    #[cfg(test)]
    pub fn stall_syncs(&self, stalled: bool) {
        self.sync_stall().set(stalled);
    }

    /// A switch that holds this log's syncs back, and that does not keep
    /// the log open (feature `test-util`).
    #[cfg(any(test, feature = "test-util"))]
    pub fn sync_stall(&self) -> SyncStall {
        SyncStall(self.handle.shared.clone())
    }

    fn error(
        &self,
        subject: ErrorSubject<u64>,
        verb: ErrorVerb,
        doing: &str,
        e: &io::Error,
    ) -> StorageError<u64> {
        io_error(subject, verb, doing, &self.handle.shared.dir, e)
    }

    /// Buffers a record that need not be waited for.
    fn write(
        &self,
        subject: ErrorSubject<u64>,
        verb: ErrorVerb,
        doing: &str,
        op: impl FnOnce(&mut RaftLog<LogTypes>) -> io::Result<()>,
    ) -> Result<(), StorageError<u64>> {
        let mut inner = self.handle.shared.inner.lock();
        inner
            .writable()
            .and_then(op)
            .map_err(|e| self.error(subject, verb, doing, &e))?;
        inner.dirty = true;
        Ok(())
    }

    /// Buffers a record and has `done` told once it is durable (or could
    /// not be made so), or as soon as it is buffered and its sync started
    /// if `op` answers `true` (a leader's own entries). Returns at once.
    fn write_durably(
        &self,
        op: impl FnOnce(&mut RaftLog<LogTypes>, Option<u64>) -> io::Result<bool>,
        done: Waiter,
    ) {
        let shared = &self.handle.shared;
        let mut inner = shared.inner.lock();
        let leader_id = shared.leader_id.get().copied();
        match inner.writable().and_then(|log| op(log, leader_id)) {
            Ok(early) => {
                inner.dirty = true;
                if early {
                    inner.wanted = true;
                    shared.start_sync(&mut inner, false);
                    drop(inner);
                    done(Ok(()));
                } else {
                    inner.waiting.push(done);
                    shared.start_sync(&mut inner, false);
                }
            }
            Err(e) => {
                drop(inner);
                done(Err(e));
            }
        }
    }

    /// Appends entries; `done` is called once they are durable (or could
    /// not be made so). Returns at once.
    pub(super) fn submit(
        &self,
        entries: Vec<Entry<TypeConfig>>,
        done: impl FnOnce(io::Result<()>) + Send + 'static,
    ) {
        let stats = &self.handle.shared.stats;
        self.write_durably(
            |log, leader_id| {
                let early = leader_id.is_some_and(|me| own_entries(log, me, &entries));
                // An entry at or below the purge point is already covered
                // by the snapshot it was purged for, so it is not stored
                // (the library refuses to go back). openraft appends none
                // such in operation; its storage suite does, after
                // `get_initial_state` purges past an empty log.
                let purged = log.log_state().purged().map(|l| l.0.index);
                let entries: Vec<_> = entries
                    .into_iter()
                    .filter(|e| purged.is_none_or(|p| e.log_id.index > p))
                    .collect();
                let n = entries.len() as u64;
                let records = entries
                    .into_iter()
                    .map(|e| (StoredLogId(e.log_id), StoredPayload(e.payload)));
                log.append(records)?;
                stats.appended.fetch_add(n, Ordering::Relaxed);
                Ok(early)
            },
            Box::new(done),
        );
    }

    fn state(&self) -> Result<State, StorageError<u64>> {
        let inner = self.handle.shared.inner.lock();
        let log = inner.readable().map_err(|e| {
            self.error(
                ErrorSubject::Logs,
                ErrorVerb::Read,
                "read the state of the log in",
                &e,
            )
        })?;
        let s = log.log_state();
        Ok(State {
            purged: s.purged().map(|l| l.0),
            last: s.last().map(|l| l.0),
            vote: s.vote().map(|v| v.0),
            committed: s.committed().map(|l| l.0),
        })
    }
}

impl Inner {
    fn readable(&self) -> io::Result<&RaftLog<LogTypes>> {
        self.log
            .as_ref()
            .ok_or_else(|| io::Error::other("the raft log is closed"))
    }

    fn writable(&mut self) -> io::Result<&mut RaftLog<LogTypes>> {
        if let Some(why) = &self.failed {
            return Err(io::Error::other(format!(
                "the log failed earlier and refuses writes: {why}"
            )));
        }
        self.log
            .as_mut()
            .ok_or_else(|| io::Error::other("the raft log is closed"))
    }
}

impl Shared {
    /// Starts a sync of everything buffered if someone waits for it (or
    /// `unwaited` is set and something is buffered), unless one is under
    /// way: the next one starts when it ends.
    fn start_sync(self: &Arc<Self>, inner: &mut Inner, unwaited: bool) {
        let wanted = !inner.waiting.is_empty() || inner.wanted || (unwaited && inner.dirty);
        if inner.in_flight.is_some() || !wanted {
            return;
        }
        #[cfg(any(test, feature = "test-util"))]
        if self.stalled.load(Ordering::SeqCst) {
            return;
        }
        let waiters = std::mem::take(&mut inner.waiting);
        inner.wanted = false;
        let res = inner.writable().and_then(|log| {
            let covers = log.log_state().last().map(|l| l.0);
            log.flush(true, Some(SyncDone(self.clone())))?;
            Ok(covers)
        });
        match res {
            Ok(covers) => {
                inner.dirty = false;
                inner.in_flight = Some(InFlight { waiters, covers });
            }
            Err(e) => {
                if inner.failed.is_none() {
                    tracing::error!(dir = %self.dir.display(), error = %e, "cannot hand the raft log to its writer; the log refuses further writes");
                    inner.failed = Some(e.to_string());
                }
                self.durability.fail();
                for waiter in waiters {
                    waiter(Err(clone_error(&e)));
                }
            }
        }
    }

    /// The end of a sync, on the library's flush thread: its waiters are
    /// told here, at once.
    fn synced(&self, res: io::Result<()>) {
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        let (waiters, wake) = {
            let mut inner = self.inner.lock();
            let done = inner.in_flight.take();
            match &res {
                Ok(()) => {
                    if let Some(done) = &done {
                        self.durability.set(done.covers);
                    }
                }
                Err(e) => {
                    tracing::error!(dir = %self.dir.display(), error = %e, "syncing the raft log failed; the log refuses further writes");
                    inner.failed = Some(e.to_string());
                    self.durability.fail();
                }
            }
            let wake = inner.closing || inner.wanted || !inner.waiting.is_empty();
            (done.map(|d| d.waiters).unwrap_or_default(), wake)
        };
        for waiter in waiters {
            waiter(res.as_ref().map(|_| ()).map_err(clone_error));
        }
        // The next sync starts on the log thread, not here: the flush
        // thread must not queue work for itself.
        if wake && self.wake.send(Wake::SyncEnded).is_err() {
            tracing::error!(dir = %self.dir.display(), "the raft log thread stopped before the log closed");
        }
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(i) => i.saturating_add(1),
        Bound::Excluded(i) => *i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl RaftLogReader<TypeConfig> for DiskLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let (from, to) = bounds(&range);
        if from >= to {
            return Ok(Vec::new());
        }
        let inner = self.handle.shared.inner.lock();
        inner
            .readable()
            .and_then(|log| {
                log.read(from, to)
                    .map(|r| {
                        r.map(|(id, payload)| Entry {
                            log_id: id.0,
                            payload: payload.0,
                        })
                    })
                    .collect()
            })
            .map_err(|e| {
                self.error(
                    ErrorSubject::Logs,
                    ErrorVerb::Read,
                    "read entries of the log in",
                    &e,
                )
            })
    }
}

impl RaftLogStorage<TypeConfig> for DiskLog {
    type LogReader = DiskLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let state = self.state()?;
        Ok(LogState {
            last_purged_log_id: state.purged,
            last_log_id: state.last.or(state.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let (reply, answer) = oneshot::channel();
        let vote = *vote;
        self.write_durably(
            |log, _| log.save_vote(StoredVote(vote)).map(|_| false),
            Box::new(move |res| {
                // The caller may have given up waiting; the vote is durable
                // (or failed) all the same.
                let _unheard = reply.send(res);
            }),
        );
        let failed = match answer.await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => io::Error::other("the raft log closed before the vote was synced"),
        };
        Err(self.error(
            ErrorSubject::Vote,
            ErrorVerb::Write,
            "save the vote in the log in",
            &failed,
        ))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.state()?.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        // openraft never moves the commit index back to nothing.
        let Some(committed) = committed else {
            return Ok(());
        };
        self.write(
            ErrorSubject::Store,
            ErrorVerb::Write,
            "save the commit index in the log in",
            |log| log.commit(StoredLogId(committed)).map(drop),
        )
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.state()?.committed)
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
        self.submit(entries.into_iter().collect(), move |res| {
            callback.log_io_completed(res)
        });
        Ok(())
    }

    async fn truncate(&mut self, since: LogId<u64>) -> Result<(), StorageError<u64>> {
        let shared = &self.handle.shared;
        let mut inner = shared.inner.lock();
        let cut = inner.writable().and_then(|log| {
            // Nothing at or after `since`: nothing to remove (the library
            // wants the entry before the cut to exist).
            let last = log.log_state().last().map(|l| l.0.index);
            if last.is_some_and(|last| since.index <= last) {
                log.truncate(since.index)?;
            }
            Ok(log.log_state().last().map(|l| l.0))
        });
        let kept = cut.map_err(|e| {
            self.error(
                ErrorSubject::Log(since),
                ErrorVerb::Delete,
                "truncate the log in",
                &e,
            )
        })?;
        inner.dirty = true;
        // Entries that the cut removed are no longer on disk as far as
        // anyone may rely: new ones will take their indexes.
        let removed = |mark: Option<LogId<u64>>| mark.is_some_and(|m| m.index >= since.index);
        if removed(shared.durability.durable()) {
            shared.durability.set(kept);
        }
        if let Some(in_flight) = &mut inner.in_flight {
            if removed(in_flight.covers) {
                in_flight.covers = kept;
            }
        }
        Ok(())
    }

    async fn purge(&mut self, upto: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.write(
            ErrorSubject::Log(upto),
            ErrorVerb::Delete,
            "purge the log in",
            |log| log.purge(StoredLogId(upto)).map(drop),
        )
    }
}

/// The log thread: lazy syncs, the sync after one that ended with writes
/// waiting, and the close.
struct Worker {
    shared: Arc<Shared>,
    woken: Receiver<Wake>,
    /// Keeps the data directory locked while the log is open.
    _lock: Arc<DirLock>,
}

impl Worker {
    fn run(self) {
        loop {
            // Records nobody waits for (a commit index, a purge) ride on the
            // next sync that someone does wait for; when none comes soon,
            // they get one of their own.
            let lazy = match self.woken.recv_timeout(LAZY_SYNC) {
                Ok(Wake::SyncEnded) => false,
                Err(RecvTimeoutError::Timeout) => true,
                Ok(Wake::Close) | Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut inner = self.shared.inner.lock();
            self.shared.start_sync(&mut inner, lazy);
        }
        self.close();
    }

    /// Syncs what is left, waits for the syncs under way, and closes the
    /// library's log (which joins its flush thread).
    fn close(self) {
        self.shared.inner.lock().closing = true;
        let log = loop {
            {
                let mut inner = self.shared.inner.lock();
                if inner.in_flight.is_none() {
                    self.shared.start_sync(&mut inner, true);
                }
                if inner.in_flight.is_none() {
                    break inner.log.take();
                }
            }
            // Told when the sync under way ends.
            if self.woken.recv().is_err() {
                break self.shared.inner.lock().log.take();
            }
        };
        drop(log);
        tracing::debug!(dir = %self.shared.dir.display(), "closed the raft log");
    }
}

/// Whether `entries` are node `me`'s own as leader, to be told flushed
/// before their sync (see the module documentation): of the term in which
/// the saved vote is `me`'s own and committed, and none a membership.
fn own_entries(log: &RaftLog<LogTypes>, me: u64, entries: &[Entry<TypeConfig>]) -> bool {
    let Some(vote) = log.log_state().vote().map(|v| v.0) else {
        return false;
    };
    vote.committed
        && vote.leader_id.node_id == me
        && entries.iter().all(|e| {
            e.log_id.leader_id.term == vote.leader_id.term
                && e.log_id.leader_id.node_id == me
                && !matches!(e.payload, EntryPayload::Membership(_))
        })
}

fn clone_error(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

/// Syncs every file in `dir` (not recursive), and `dir` itself.
fn sync_files(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// Bytes in the files of `dir` (not recursive), 0 if unreadable: only used
/// to tell whether opening truncated something.
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
