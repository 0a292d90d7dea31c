//! The metrics dref records, through the [`metrics`] facade crate: the
//! library records, the application installs the recorder it wants (a
//! Prometheus exporter, for example) and gets them. Without a recorder
//! each costs about one atomic load.
//!
//! Every name and label dref records (call [`describe`] after installing a
//! recorder to give them their descriptions and units):
//!
//! | name | kind | labels | what it counts |
//! |---|---|---|---|
//! | `dref_ref_writes_total` | counter | `backend`, `outcome` | writes of refs and fields: `outcome` is `committed`, `rejected` (a condition failed) or `failed` (an error) |
//! | `dref_update_retries_total` | counter | `backend` | update attempts rejected because the record had changed; each runs the closures again |
//! | `dref_update_rounds_total` | counter | `backend` | combined writes of queued updates (see [`DRef`](crate::DRef)) |
//! | `dref_update_round_size` | histogram | `backend` | updates carried by one combined write |
//! | `dref_watch_resyncs_total` | counter | `backend` | resyncs delivered to refs' watchers (the store could not replay every event) |
//! | `dref_watch_errors_total` | counter | `backend` | commits a ref's watcher could not decode, and failed watches |
//! | `dref_locks_acquired_total` | counter | `backend` | locks acquired, including campaigns won |
//! | `dref_lock_wait_seconds` | histogram | `backend` | time from asking for a lock to holding it |
//! | `dref_locks_lost_total` | counter | `backend` | locks (and leaderships) whose holder was told [`LockLost`](crate::Error::LockLost) by `lock`, `run_locked` or a release |
//! | `dref_sessions_alive` | gauge | `backend` | session leases this process keeps alive |
//! | `dref_session_renewals_late_total` | counter | `backend` | session keep-alives sent later than due (a paused or overloaded process) |
//!
//!
//! The Raft backend (`dref-backends`, `raft` feature) records, per node
//! (`node` is its Raft node id):
//!
//! | name | kind | labels | what it counts |
//! |---|---|---|---|
//! | `dref_raft_leader` | gauge | `node` | 1 while this node leads, else 0 |
//! | `dref_raft_term` | gauge | `node` | the current Raft term |
//! | `dref_raft_last_log_index` | gauge | `node` | the index of the last entry in this node's log |
//! | `dref_raft_applied_index` | gauge | `node` | the index of the last entry applied to its state |
//! | `dref_raft_apply_lag` | gauge | `node` | entries logged but not yet applied |
//! | `dref_raft_voters` | gauge | `node` | voters in the membership this node knows |
//! | `dref_raft_replication_lag` | gauge | `node`, `peer` | on the leader: entries a peer has not acknowledged |
//! | `dref_raft_leader_changes_total` | counter | `node` | changes of the leader this node knows (including to none) |
//! | `dref_raft_request_seconds` | histogram | `node`, `op` | latency of `read`, `list`, `write` and `keep_alive` requests through this node, failures included |
//! | `dref_raft_snapshot_bytes` | gauge | | size of the last snapshot this process built |
//! | `dref_raft_snapshot_seconds` | histogram | | time to encode and store a snapshot |
//!
//! `backend` is the backend's [`name`](crate::engine::Backend::name).
//! Install the recorder before building contexts: a context registers the
//! metrics of its refs' writes once, when it is built, so that recording
//! them costs no allocation on the write path.

use std::time::Duration;

use ::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, Counter, Histogram, Unit,
};

use crate::engine::WriteOutcome;
use crate::Error;

/// Registers the description and unit of every metric dref records with
/// the installed recorder.
pub fn describe() {
    describe_counter!(
        "dref_ref_writes_total",
        "Writes of refs and fields, by outcome (committed, rejected, failed)"
    );
    describe_counter!(
        "dref_update_retries_total",
        "Update attempts rejected because the record had changed"
    );
    describe_counter!(
        "dref_update_rounds_total",
        "Combined writes of queued updates"
    );
    describe_histogram!(
        "dref_update_round_size",
        Unit::Count,
        "Updates carried by one combined write"
    );
    describe_counter!(
        "dref_watch_resyncs_total",
        "Resyncs delivered to refs' watchers"
    );
    describe_counter!(
        "dref_watch_errors_total",
        "Undecodable commits and failed watches seen by refs' watchers"
    );
    describe_counter!(
        "dref_locks_acquired_total",
        "Locks acquired, including campaigns won"
    );
    describe_histogram!(
        "dref_lock_wait_seconds",
        Unit::Seconds,
        "Time from asking for a lock to holding it"
    );
    describe_counter!(
        "dref_locks_lost_total",
        "Locks and leaderships whose holder was told LockLost"
    );
    describe_gauge!(
        "dref_sessions_alive",
        "Session leases this process keeps alive"
    );
    describe_counter!(
        "dref_session_renewals_late_total",
        "Session keep-alives sent later than due"
    );
    describe_gauge!("dref_raft_leader", "1 while this Raft node leads, else 0");
    describe_gauge!("dref_raft_term", "The current Raft term");
    describe_gauge!(
        "dref_raft_last_log_index",
        "Index of the last entry in this node's log"
    );
    describe_gauge!(
        "dref_raft_applied_index",
        "Index of the last entry applied to this node's state"
    );
    describe_gauge!("dref_raft_apply_lag", "Entries logged but not yet applied");
    describe_gauge!(
        "dref_raft_voters",
        "Voters in the membership this node knows"
    );
    describe_gauge!(
        "dref_raft_replication_lag",
        "On the leader: entries a peer has not acknowledged"
    );
    describe_counter!(
        "dref_raft_leader_changes_total",
        "Changes of the Raft leader this node knows"
    );
    describe_histogram!(
        "dref_raft_request_seconds",
        Unit::Seconds,
        "Latency of read, list, write and keep-alive requests through this node"
    );
    describe_gauge!(
        "dref_raft_snapshot_bytes",
        Unit::Bytes,
        "Size of the last Raft snapshot this process built"
    );
    describe_histogram!(
        "dref_raft_snapshot_seconds",
        Unit::Seconds,
        "Time to encode and store a Raft snapshot"
    );
}

/// The metrics of a context's ref writes, registered once.
pub(crate) struct RefMetrics {
    committed: Counter,
    rejected: Counter,
    failed: Counter,
    retries: Counter,
    rounds: Counter,
    round_size: Histogram,
}

impl RefMetrics {
    pub(crate) fn new(backend: &'static str) -> Self {
        let writes = |outcome: &'static str| counter!("dref_ref_writes_total", "backend" => backend, "outcome" => outcome);
        RefMetrics {
            committed: writes("committed"),
            rejected: writes("rejected"),
            failed: writes("failed"),
            retries: counter!("dref_update_retries_total", "backend" => backend),
            rounds: counter!("dref_update_rounds_total", "backend" => backend),
            round_size: ::metrics::histogram!("dref_update_round_size", "backend" => backend),
        }
    }

    /// How a write of a ref ended.
    pub(crate) fn write(&self, outcome: Result<&WriteOutcome, &Error>) {
        match outcome {
            Ok(WriteOutcome::Committed { .. }) => self.committed.increment(1),
            Ok(WriteOutcome::Rejected { .. }) => self.rejected.increment(1),
            Err(_) => self.failed.increment(1),
        }
    }

    pub(crate) fn retry(&self) {
        self.retries.increment(1);
    }

    pub(crate) fn round(&self, size: usize) {
        self.rounds.increment(1);
        self.round_size.record(size as f64);
    }
}

pub(crate) fn watch_resync(backend: &'static str) {
    counter!("dref_watch_resyncs_total", "backend" => backend).increment(1);
}

pub(crate) fn watch_error(backend: &'static str) {
    counter!("dref_watch_errors_total", "backend" => backend).increment(1);
}

pub(crate) fn lock_acquired(backend: &'static str, waited: Duration) {
    counter!("dref_locks_acquired_total", "backend" => backend).increment(1);
    ::metrics::histogram!("dref_lock_wait_seconds", "backend" => backend)
        .record(waited.as_secs_f64());
}

pub(crate) fn lock_lost(backend: &'static str) {
    counter!("dref_locks_lost_total", "backend" => backend).increment(1);
}

pub(crate) fn session_renewed_late(backend: &'static str) {
    counter!("dref_session_renewals_late_total", "backend" => backend).increment(1);
}

/// Counts one session in `dref_sessions_alive` while it lives.
pub(crate) struct SessionAlive(&'static str);

impl SessionAlive {
    pub(crate) fn new(backend: &'static str) -> Self {
        gauge!("dref_sessions_alive", "backend" => backend).increment(1.0);
        SessionAlive(backend)
    }
}

impl Drop for SessionAlive {
    fn drop(&mut self) {
        gauge!("dref_sessions_alive", "backend" => self.0).decrement(1.0);
    }
}
