//! The durable Raft log: entries, vote, committed index and purge point in
//! a `raft-log` write-ahead log, driven by one thread of its own.
//!
//! Every call is a message to that thread, which owns the log: appends,
//! votes, truncations and purges go into the log's buffer in the order they
//! were made (no file is touched on the async workers), and the thread asks
//! the library to write and `fdatasync` whatever has accumulated. While one
//! sync is under way, everything that arrives waits for the next one, so
//! concurrent and consecutive appends share a sync (group commit) without
//! any added delay: the first waiter pays one sync, the others at most two.
//!
//! What waits for the sync: `append` (its `LogFlushed` callback) and
//! `save_vote` (its return). What does not: `save_committed`, `truncate`
//! and `purge` return once buffered and are synced with the next append or
//! vote (the log is ordered, so any later acknowledged write makes them
//! durable too), or on their own after 50 ms without one: a commit after
//! every write must not cost a second sync per write. Losing them in a crash is safe: an unsaved commit index is learnt
//! again from the leader, an unsaved truncation or purge leaves entries
//! that Raft truncates or purges again.
//!
//! After a failed sync the log refuses everything: retrying an `fsync` that
//! failed can report success for data the kernel already dropped.

use std::fmt;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogReader, StorageError,
    Vote,
};
use parking_lot::Mutex;
use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::{Callback, RaftLog, Types};
use tokio::sync::oneshot;

use super::codec::{payload_size, StoredLogId, StoredPayload, StoredVote};
use super::dir::{io_error, DirLock};
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

/// Reports the end of a sync to the log thread (the library calls it on
/// its flush thread).
pub(super) struct SyncDone(Sender<Request>);

impl Callback for SyncDone {
    fn send(self, res: io::Result<()>) {
        if self.0.send(Request::Synced(res)).is_err() {
            // Only possible once the log thread has exited, and it waits
            // for every sync it started before exiting.
            tracing::error!("a raft log sync finished after its log closed");
        }
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

type Reply<T> = oneshot::Sender<io::Result<T>>;

enum Request {
    Append {
        entries: Vec<Entry<TypeConfig>>,
        done: Waiter,
    },
    SaveVote {
        vote: Vote<u64>,
        done: Waiter,
    },
    SaveCommitted {
        committed: LogId<u64>,
        reply: Reply<()>,
    },
    Truncate {
        since: LogId<u64>,
        reply: Reply<()>,
    },
    Purge {
        upto: LogId<u64>,
        reply: Reply<()>,
    },
    Read {
        from: u64,
        to: u64,
        reply: Reply<Vec<Entry<TypeConfig>>>,
    },
    State {
        reply: Reply<State>,
    },
    /// Sent by the library's flush thread when a sync ends.
    Synced(io::Result<()>),
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
            .field("dir", &self.handle.dir)
            .finish_non_exhaustive()
    }
}

struct Handle {
    tx: Sender<Request>,
    dir: PathBuf,
    /// Where the log started when it was opened.
    purged_at_open: Option<LogId<u64>>,
    stats: Arc<LogStats>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The thread syncs what is buffered and releases the directory
        // when it exits; waiting for it makes "dropped" mean "closed", so
        // the directory can be reopened at once (the wait is one sync, at
        // shutdown only).
        if self.tx.send(Request::Close).is_err() {
            tracing::error!(dir = %self.dir.display(), "the raft log thread stopped early");
        }
        if let Some(thread) = self.thread.lock().take() {
            if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
                tracing::error!(dir = %self.dir.display(), "the raft log thread panicked");
            }
        }
    }
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

        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(LogStats::default());
        let mut worker = Worker {
            log,
            rx,
            tx: tx.clone(),
            stats: stats.clone(),
            dir: dir.to_owned(),
            waiting: Vec::new(),
            in_flight: None,
            dirty: false,
            failed: None,
            _lock: lock,
        };
        let thread = std::thread::Builder::new()
            .name("dref-raft-log".into())
            .spawn(move || worker.run())
            .map_err(|e| open_error("start the log thread for", &e))?;
        Ok(DiskLog {
            handle: Arc::new(Handle {
                tx,
                dir: dir.to_owned(),
                purged_at_open,
                stats,
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
        &self.handle.stats
    }

    fn stopped(&self, subject: ErrorSubject<u64>, verb: ErrorVerb) -> StorageError<u64> {
        io_error(
            subject,
            verb,
            "use the log in",
            &self.handle.dir,
            &io::Error::other("the raft log thread has stopped"),
        )
    }

    fn send(
        &self,
        request: Request,
        subject: ErrorSubject<u64>,
        verb: ErrorVerb,
    ) -> Result<(), StorageError<u64>> {
        self.handle
            .tx
            .send(request)
            .map_err(|_| self.stopped(subject, verb))
    }

    /// Sends a request and waits for its answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Request,
        subject: ErrorSubject<u64>,
        verb: ErrorVerb,
        doing: &str,
    ) -> Result<T, StorageError<u64>> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply), subject.clone(), verb)?;
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(io_error(subject, verb, doing, &self.handle.dir, &e)),
            Err(_) => Err(self.stopped(subject, verb)),
        }
    }

    /// Queues entries for appending; `done` is called once they are
    /// durable (or could not be made so). Returns at once.
    pub(super) fn submit(
        &self,
        entries: Vec<Entry<TypeConfig>>,
        done: impl FnOnce(io::Result<()>) + Send + 'static,
    ) -> Result<(), StorageError<u64>> {
        self.send(
            Request::Append {
                entries,
                done: Box::new(done),
            },
            ErrorSubject::Logs,
            ErrorVerb::Write,
        )
    }

    async fn state(&self) -> Result<State, StorageError<u64>> {
        self.ask(
            |reply| Request::State { reply },
            ErrorSubject::Logs,
            ErrorVerb::Read,
            "read the state of the log in",
        )
        .await
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
        self.ask(
            |reply| Request::Read { from, to, reply },
            ErrorSubject::Logs,
            ErrorVerb::Read,
            "read entries of the log in",
        )
        .await
    }
}

impl RaftLogStorage<TypeConfig> for DiskLog {
    type LogReader = DiskLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let state = self.state().await?;
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
        let done: Waiter = Box::new(move |res| {
            // The caller may have given up waiting; the vote is durable
            // (or failed) all the same.
            let _unheard = reply.send(res);
        });
        self.send(
            Request::SaveVote { vote: *vote, done },
            ErrorSubject::Vote,
            ErrorVerb::Write,
        )?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_error(
                ErrorSubject::Vote,
                ErrorVerb::Write,
                "save the vote in the log in",
                &self.handle.dir,
                &e,
            )),
            Err(_) => Err(self.stopped(ErrorSubject::Vote, ErrorVerb::Write)),
        }
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.state().await?.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        // openraft never moves the commit index back to nothing.
        let Some(committed) = committed else {
            return Ok(());
        };
        self.ask(
            |reply| Request::SaveCommitted { committed, reply },
            ErrorSubject::Store,
            ErrorVerb::Write,
            "save the commit index in the log in",
        )
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.state().await?.committed)
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
        })
    }

    async fn truncate(&mut self, since: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.ask(
            |reply| Request::Truncate { since, reply },
            ErrorSubject::Log(since),
            ErrorVerb::Delete,
            "truncate the log in",
        )
        .await
    }

    async fn purge(&mut self, upto: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.ask(
            |reply| Request::Purge { upto, reply },
            ErrorSubject::Log(upto),
            ErrorVerb::Delete,
            "purge the log in",
        )
        .await
    }
}

/// The log thread: owns the log and the group-commit state.
struct Worker {
    log: RaftLog<LogTypes>,
    rx: Receiver<Request>,
    /// Given to the library with each sync, to report its end.
    tx: Sender<Request>,
    stats: Arc<LogStats>,
    dir: PathBuf,
    /// Written, waiting for the next sync.
    waiting: Vec<Waiter>,
    /// Waiting for the sync under way, if one is.
    in_flight: Option<Vec<Waiter>>,
    /// Buffered records that no sync covers yet.
    dirty: bool,
    /// Why the log refuses further work.
    failed: Option<String>,
    /// Keeps the data directory locked while the log is open.
    _lock: Arc<DirLock>,
}

fn clone_error(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

impl Worker {
    fn run(&mut self) {
        let mut closing = false;
        loop {
            // Records nobody waits for (a commit index, a purge) ride on the
            // next sync that someone does wait for; when none comes soon,
            // they get one of their own.
            let idle = self.dirty && self.waiting.is_empty() && self.in_flight.is_none();
            let first = if idle {
                match self.rx.recv_timeout(LAZY_SYNC) {
                    Ok(request) => request,
                    Err(RecvTimeoutError::Timeout) => {
                        self.sync(true);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match self.rx.recv() {
                    Ok(request) => request,
                    // Unreachable while `self.tx` lives; stop all the same.
                    Err(_) => break,
                }
            };
            closing |= self.handle(first);
            // Take everything already queued before deciding on a sync:
            // that is what lets concurrent writers share one.
            while let Ok(next) = self.rx.try_recv() {
                closing |= self.handle(next);
            }
            self.sync(closing);
            if closing && self.in_flight.is_none() && self.waiting.is_empty() && !self.dirty {
                break;
            }
        }
        tracing::debug!(dir = %self.dir.display(), "closed the raft log");
    }

    fn failure(&self) -> Option<io::Error> {
        self.failed.as_ref().map(|why| {
            io::Error::other(format!("the log failed earlier and refuses writes: {why}"))
        })
    }

    /// Handles one request; true for `Close`.
    fn handle(&mut self, request: Request) -> bool {
        match request {
            Request::Append { entries, done } => {
                if let Some(e) = self.failure() {
                    return finish(done, Err(e));
                }
                // An entry at or below the purge point is already covered
                // by the snapshot it was purged for, so it is not stored
                // (the library refuses to go back). openraft appends none
                // such in operation; its storage suite does, after
                // `get_initial_state` purges past an empty log.
                let purged = self.log.log_state().purged().map(|l| l.0.index);
                let entries: Vec<_> = entries
                    .into_iter()
                    .filter(|e| purged.is_none_or(|p| e.log_id.index > p))
                    .collect();
                let n = entries.len() as u64;
                let records = entries
                    .into_iter()
                    .map(|e| (StoredLogId(e.log_id), StoredPayload(e.payload)));
                match self.log.append(records) {
                    Ok(_) => {
                        self.stats.appended.fetch_add(n, Ordering::Relaxed);
                        self.dirty = true;
                        self.waiting.push(done);
                    }
                    Err(e) => done(Err(e)),
                }
            }
            Request::SaveVote { vote, done } => {
                if let Some(e) = self.failure() {
                    return finish(done, Err(e));
                }
                match self.log.save_vote(StoredVote(vote)) {
                    Ok(_) => {
                        self.dirty = true;
                        self.waiting.push(done);
                    }
                    Err(e) => done(Err(e)),
                }
            }
            Request::SaveCommitted { committed, reply } => {
                let res = self.write(|log| log.commit(StoredLogId(committed)).map(drop));
                answer(reply, res);
            }
            Request::Truncate { since, reply } => {
                // Nothing at or after `since`: nothing to remove (the
                // library wants the entry before the cut to exist).
                let last = self.log.log_state().last().map(|l| l.0.index);
                let res = if last.is_some_and(|last| since.index <= last) {
                    self.write(|log| log.truncate(since.index).map(drop))
                } else {
                    Ok(())
                };
                answer(reply, res);
            }
            Request::Purge { upto, reply } => {
                let res = self.write(|log| log.purge(StoredLogId(upto)).map(drop));
                answer(reply, res);
            }
            Request::Read { from, to, reply } => {
                let res = self
                    .log
                    .read(from, to)
                    .map(|r| {
                        r.map(|(id, payload)| Entry {
                            log_id: id.0,
                            payload: payload.0,
                        })
                    })
                    .collect();
                answer(reply, res);
            }
            Request::State { reply } => {
                let s = self.log.log_state();
                answer(
                    reply,
                    Ok(State {
                        purged: s.purged().map(|l| l.0),
                        last: s.last().map(|l| l.0),
                        vote: s.vote().map(|v| v.0),
                        committed: s.committed().map(|l| l.0),
                    }),
                );
            }
            Request::Synced(res) => {
                self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = &res {
                    tracing::error!(dir = %self.dir.display(), error = %e, "syncing the raft log failed; the log refuses further writes");
                    self.failed = Some(e.to_string());
                }
                for waiter in self.in_flight.take().unwrap_or_default() {
                    waiter(res.as_ref().map(|_| ()).map_err(clone_error));
                }
            }
            Request::Close => return true,
        }
        false
    }

    /// Buffers a record that need not be waited for.
    fn write(
        &mut self,
        op: impl FnOnce(&mut RaftLog<LogTypes>) -> io::Result<()>,
    ) -> io::Result<()> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        op(&mut self.log)?;
        self.dirty = true;
        Ok(())
    }

    /// Starts a sync of everything buffered if someone waits for it (or
    /// `unwaited` is set and something is buffered), unless one is under
    /// way: the next one starts when it ends.
    fn sync(&mut self, unwaited: bool) {
        if self.in_flight.is_some() || (self.waiting.is_empty() && !(unwaited && self.dirty)) {
            return;
        }
        let waiters = std::mem::take(&mut self.waiting);
        self.dirty = false;
        if let Some(e) = self.failure() {
            for waiter in waiters {
                waiter(Err(clone_error(&e)));
            }
            return;
        }
        match self.log.flush(true, Some(SyncDone(self.tx.clone()))) {
            Ok(()) => self.in_flight = Some(waiters),
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot hand the raft log to its writer; the log refuses further writes");
                self.failed = Some(e.to_string());
                for waiter in waiters {
                    waiter(Err(clone_error(&e)));
                }
            }
        }
    }
}

fn finish(done: Waiter, res: io::Result<()>) -> bool {
    done(res);
    false
}

fn answer<T>(reply: Reply<T>, res: io::Result<T>) {
    // The asker may have been cancelled; the work is done regardless.
    let _unheard = reply.send(res);
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
