//! The engine contract: the small key/record store every backend implements.
//!
//! Everything dref offers (refs, field handles, change streams, locks, leader
//! election) is built on the [`Backend`] trait below and nothing else, so a
//! backend that honours this contract gets every feature. The contract is
//! modelled on etcd's.
//!
//! # Data model
//! - A store holds [`Record`]s under [`Key`]s. A record is a list of named,
//!   encoded [`Field`]s plus a `version` (per key: 1 on creation, +1 on every
//!   write), a `create_revision` and a `mod_revision`.
//! - The store keeps one **revision** counter. Every committed write (and
//!   every lease expiry, one per deleted record) takes the next revision, so
//!   revisions are strictly increasing in commit order. Each field remembers
//!   the revision of the last write that changed its bytes.
//!
//! # Operations
//! - [`Backend::read`] is linearizable: it reflects every write committed
//!   before it started.
//! - [`Backend::list`] is a linearizable read of every record whose key
//!   starts with a prefix, in key order, with the revision it reflects
//!   (etcd's range read). Its cost grows with the store, on every backend:
//!   it is for operators' tools and occasional scans, not for hot paths.
//! - [`Backend::write`] is atomic: the [`Condition`] is checked and the [`Op`]
//!   applied as one step. A write whose condition fails changes nothing and
//!   returns [`WriteOutcome::Rejected`] with the current record. `Patch` and
//!   `Delete` on an absent record are rejected too. A `Put` compares bytes
//!   field by field: unchanged fields keep their `mod_revision` and are left
//!   out of the event. A write with
//!   [`max_record_bytes`](Write#structfield.max_record_bytes) fails with
//!   [`Error::ValueTooLarge`](crate::Error::ValueTooLarge), changing
//!   nothing, when the record it would produce holds more bytes of field
//!   values than that (checked after the condition, in the same step).
//! - [`Backend::watch`] yields every committed [`Event`] for the key in
//!   revision order, each carrying only the changed fields. When a backend
//!   cannot deliver every event (a slow watcher overflowed its buffer, a
//!   connection was re-established, history was compacted), it yields a
//!   [`WatchItem::Resync`] with the current record instead: never a silent
//!   gap. With `since = Some(r)`, the stream covers everything after revision
//!   `r`: either the missed events or a leading `Resync` (a backend may send a
//!   `Resync` that turns out to be unnecessary; consumers treat it as "this is
//!   the state now").
//! - [`Backend::watch_prefix`] is the watch of every key under a prefix:
//!   every committed event of those keys in commit order, each with its
//!   key, and when events were missed a [`PrefixItem::Resync`] with the
//!   listing of the prefix instead, as for one key. With `since = Some(r)`
//!   it covers everything after revision `r`; a backend that cannot tell
//!   whether a key under the prefix was deleted after `r` starts with a
//!   resync. `list` then `watch_prefix` from the listing's revision is the
//!   way to follow a prefix without a gap.
//! - **Leases**: [`Backend::grant_lease`] creates a lease with a TTL,
//!   [`Backend::keep_alive`] restarts its TTL (or fails with
//!   [`Error::LeaseExpired`](crate::Error::LeaseExpired) when it is gone),
//!   [`Backend::revoke_lease`] ends it at once. When a lease ends, every
//!   record attached to it is deleted, each with an [`EventKind::Expired`]
//!   event. A write that names an unknown lease fails with `LeaseExpired`.
//!
//! # Lease safety
//! The invariant every backend keeps, on which locks and elections rest:
//! **at any instant at most one body of a lock runs** (and at most one
//! campaign winner believes it leads). It follows from two rules:
//!
//! - A lease ends no earlier than `TTL` after the last keep-alive the
//!   store accepted, as the store measures time. A keep-alive counts as
//!   accepted only when the store can prove it is still the authority:
//!   Redis by its own clock and data; the Raft backend only through a
//!   leader that a majority confirmed, in a heartbeat round begun after the
//!   keep-alive arrived, to be still leading (a leader cut off from its
//!   majority vouches for nothing), with every new leader starting every
//!   lease's TTL afresh.
//! - A holder trusts its lock only until `sent + TTL - margin`, where
//!   `sent` is when it sent its last confirmed keep-alive and the margin is
//!   a quarter of the TTL (room for clocks whose rates differ by up to about
//!   12%). It reads that deadline from its clock whenever asked, so a
//!   process that was paused past it knows on resuming; its lock body is
//!   cancelled at the deadline, and a body that finished after it is
//!   reported as [`Error::LockLost`](crate::Error::LockLost).
//!
//! Since `sent` comes before the store accepted the keep-alive, the holder
//! stops trusting the lease strictly before anyone else may consider it
//! expired. Cancelling any call at any await point keeps both rules (see
//! the lock module's notes on in-flight acquisitions). Fencing tokens
//! remain the protection of last resort: a holder paused in the middle of
//! a write cannot be stopped by anything, but its token can be rejected.
//!
//! # Answering at once
//! [`Backend::try_read`] and [`Backend::try_write`] are the synchronous
//! forms of `read` and `write`, as tokio's bounded channel pairs
//! `send().await` with `try_send`: a backend that can complete an operation
//! without waiting (the in-memory store, under its lock) answers there, with
//! exactly what the async method would have answered; any other backend
//! keeps the defaults, which decline, and callers then make the async call.
//! Refs try the synchronous form first, so a backend gets the fast path by
//! implementing it and nothing else in dref knows which backend it is.
//! `try_write` borrows its write: a backend takes only the field values it
//! keeps, so a caller that writes one key again and again (a ref's updates)
//! builds the write once and refills its values, paying for neither the
//! key nor the field names at each write.
//!
//! # Errors
//! Backends report unreachable servers as
//! [`Error::Unavailable`](crate::Error::Unavailable) and malformed answers as
//! [`Error::Protocol`](crate::Error::Protocol); they never panic on bad input.
//!
//! # Writing a backend
//! Implement [`Backend`] and run the conformance suite of the `dref-tests`
//! crate against it (`dref_tests::conformance_suite!`): it checks every rule
//! above through the public API. The points that are easy to get wrong:
//!
//! 1. **One atomic step per write.** Condition check, field update, version
//!    and revision increment, lease bookkeeping and the event must commit
//!    together; a watcher must never see an event for a write that a reader
//!    cannot see yet, nor miss one that a reader has seen.
//! 2. **Per-field revisions.** A `Put` compares each field's bytes with the
//!    stored ones; only changed fields take the new revision and appear in
//!    the event. `FieldModRevision` conditions depend on this.
//! 3. **Rejections return the record** (`None` when absent), so that
//!    optimistic updates retry without another read.
//! 4. **No silent gaps in watches.** Keep per-key order; when you drop
//!    events (slow consumer, reconnect, compaction), send `Resync` with the
//!    current record and then only events above it. Honour `since`.
//! 5. **Leases end with events.** Every record deleted because its lease
//!    expired or was revoked gets an `Expired` event at a revision above
//!    its last change. The records of one lease may share one revision
//!    (the Raft backend derives each change's revision from the log entry
//!    that made it, as an etcd transaction gives its writes one revision).
//!    Expiry may be detected late, but never early: a lease is alive for at
//!    least its TTL after the last successful keep-alive.
//! 6. **Typed errors, no panics.** Bytes from the store or the network are
//!    untrusted.

mod record;
pub mod store;
mod watch;

use std::time::Duration;

use futures_util::future::BoxFuture;

pub(crate) use record::KeyHashBuilder;
pub use record::{
    Condition, Field, FieldName, Key, LeaseId, Listing, Op, Record, Write, WriteOutcome,
};
pub use watch::{apply_event, Event, EventKind, PrefixItem, PrefixStream, WatchItem, WatchStream};

use crate::Result;

/// A store implementing the engine contract (see the [module docs](self)).
///
/// Methods return boxed futures so that a context can hold any backend as
/// `Arc<dyn Backend>`.
pub trait Backend: Send + Sync + 'static {
    /// A short name for error messages, such as `"memory"` or `"redis"`.
    fn name(&self) -> &'static str;

    /// Linearizable read of one key.
    fn read(&self, key: Key) -> BoxFuture<'_, Result<Option<Record>>>;

    /// Linearizable read of every record whose key starts with `prefix`
    /// (all of them for `""`), in key order, with the store revision it
    /// reflects.
    fn list(&self, prefix: String) -> BoxFuture<'_, Result<Listing>>;

    /// Atomic conditional write to one key.
    fn write(&self, write: Write) -> BoxFuture<'_, Result<WriteOutcome>>;

    /// [`read`](Backend::read) without waiting, for a backend that can
    /// answer at once (see [Answering at once](self#answering-at-once));
    /// `None` declines, and the caller calls `read`. The default declines.
    fn try_read(&self, _key: &Key) -> Option<Result<Option<Record>>> {
        None
    }

    /// [`write`](Backend::write) without waiting, for a backend that can
    /// commit at once (see [Answering at once](self#answering-at-once)).
    /// `None` declines and leaves `write` as it was, and the caller passes
    /// it to `write`; a backend must not decline after it committed. The
    /// write is lent, not given: a backend that answers takes from it only
    /// what it keeps, the field values of a committed `Put` or `Patch`
    /// (each left empty), and leaves the key, the condition and the field
    /// names, so that a caller may refill the values and use the write
    /// again. The default declines.
    fn try_write(&self, _write: &mut Write) -> Option<Result<WriteOutcome>> {
        None
    }

    /// Watches one key. With `since`, the stream covers every commit after
    /// that revision (replayed, or summarised by a leading `Resync`).
    fn watch(&self, key: Key, since: Option<u64>) -> BoxFuture<'_, Result<WatchStream>>;

    /// Watches every key under `prefix` (all keys for `""`). With `since`,
    /// the stream covers every commit after that revision (replayed, or
    /// summarised by a leading `Resync`).
    fn watch_prefix(
        &self,
        prefix: String,
        since: Option<u64>,
    ) -> BoxFuture<'_, Result<PrefixStream>>;

    /// Grants a lease that ends `ttl` after its last keep-alive.
    fn grant_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId>>;

    /// Restarts a lease's TTL. Fails with `LeaseExpired` if it has ended.
    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>>;

    /// Ends a lease now, deleting its records. Revoking an unknown lease is
    /// not an error.
    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>>;
}
