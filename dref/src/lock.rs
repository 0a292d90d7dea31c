//! Cluster-wide locks with fencing tokens.
//!
//! A lock is a record created with condition `Absent` under the context's
//! session lease. Its fencing token is the revision that created it, strictly
//! increasing across holders. Waiters watch the record and retry when it is
//! deleted or expires; nobody polls.
//!
//! Every record an acquisition writes carries the node's id and a random
//! claim of 128 bits, new for each acquisition, so that a clean-up never
//! matches another holder's record (not in another process, nor in this
//! one before a restart). The write of an acquisition runs in a task of its
//! own: when the caller goes away while it is in flight (a `select!`, a
//! timeout), the task finishes it and removes what it made.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tracing::Instrument;

use crate::context::Context;
use crate::detach::detach;
use crate::engine::{
    Backend, Condition, EventKind, FieldName, Key, Op, Record, Write, WriteOutcome,
};
use crate::follow::{follow, Followed};
use crate::layout::{CLAIM_FIELD, HOLDER_FIELD, LOCK_PREFIX, SINCE_FIELD};
use crate::session::Session;
use crate::{Error, Result};

/// A fencing token: the store revision that created a lock record. Tokens
/// of successive holders of a lock strictly increase, so a resource that
/// remembers the highest token it has seen can reject stale holders.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

tokio::task_local! {
    static CURRENT_TOKEN: FencingToken;
}

/// The fencing token of the innermost lock whose body is running on this
/// task (through [`Context::lock`] or `#[dref::lock]`), if any.
pub fn current_fencing_token() -> Option<FencingToken> {
    CURRENT_TOKEN.try_with(|t| *t).ok()
}

/// How long an acquisition may wait for a held lock.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    Forever,
    No,
    Until(Instant, Duration),
}

/// A held lock. Release it with [`release`](LockGuard::release); dropping
/// the guard releases it in the background.
pub struct LockGuard {
    held: Held,
    lost: watch::Receiver<Option<String>>,
    monitor: AbortHandle,
    released: bool,
}

/// What releasing a lock needs.
#[derive(Clone)]
struct Held {
    backend: Arc<dyn Backend>,
    name: String,
    key: Key,
    token: FencingToken,
    session: Arc<Session>,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.held.name)
            .field("token", &self.held.token)
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl LockGuard {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.held.name
    }

    /// The fencing token of this holding.
    pub fn token(&self) -> FencingToken {
        self.held.token
    }

    /// Whether the lock is known to be lost, or can no longer be trusted:
    /// the session lease was not confirmed alive recently enough (read from
    /// the clock, so this is already true the moment a process paused past
    /// the deadline resumes).
    pub fn is_lost(&self) -> bool {
        self.lost_reason().is_some()
    }

    fn lost_reason(&self) -> Option<String> {
        self.lost
            .borrow()
            .clone()
            .or_else(|| self.held.session.distrust())
    }

    /// Resolves with [`Error::LockLost`] once the lock is lost: its record
    /// was changed or deleted by someone else, or the session lease could
    /// not be proven alive. Never resolves while the lock is held.
    pub async fn lost(&self) -> Error {
        let mut rx = self.lost.clone();
        let reason = tokio::select! {
            reason = rx.wait_for(Option::is_some) => match reason {
                Ok(reason) => reason.clone().unwrap_or_default(),
                Err(_) => "the lock monitor stopped".to_owned(),
            },
            reason = self.held.session.lost() => reason,
        };
        Error::lock_lost(&self.held.name, reason)
    }

    /// Releases the lock: deletes its record if the record is still ours
    /// (another holder's lock is never deleted). Fails with
    /// [`Error::LockLost`] if the lock was lost while held, including when
    /// the record turns out, at release, to be no longer ours; then anything
    /// done under the lock may have overlapped with another holder, and
    /// only the fencing token protects the resources involved.
    ///
    /// When the store cannot be reached, the release goes on in the
    /// background (until it succeeds or the session ends, which frees the
    /// lock too) and this returns the error.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        self.monitor.abort();
        let lost = self.lost_reason();
        let held = self.held.clone();
        // In a task of its own, so that a caller that goes away mid-release
        // (a `select!`, a timeout) does not leave the lock held: the task
        // finishes the delete, and retries it while the store is out of
        // reach.
        let (answer, answered) = tokio::sync::oneshot::channel();
        let deleting = held.clone();
        tokio::spawn(async move {
            let first = deleting.delete().await;
            let retry = matches!(&first, Err(e) if e.is_transient());
            // The caller may be gone: then nobody needs the answer.
            answer.send(first).ok();
            if retry {
                if let Err(error) = deleting.delete_until_done().await {
                    tracing::warn!(lock = %deleting.name, %error, "releasing the lock failed");
                }
            }
        });
        let deleted = answered.await.unwrap_or(Err(Error::Closed));
        match deleted {
            Ok(WriteOutcome::Committed { .. }) => match lost {
                Some(reason) => Err(held.lost(reason)),
                None => {
                    tracing::debug!(lock = %held.name, token = %held.token, "lock released");
                    Ok(())
                }
            },
            Ok(WriteOutcome::Rejected { current }) => {
                let reason = lost.unwrap_or_else(|| match current {
                    Some(record) => format!(
                        "at release the lock record was another holder's (created at revision {})",
                        record.create_revision
                    ),
                    None => "at release the lock record was already gone".to_owned(),
                });
                Err(held.lost(reason))
            }
            Err(error) => {
                tracing::warn!(
                    lock = %held.name, token = %held.token, %error,
                    "releasing the lock failed; retrying in the background"
                );
                match lost {
                    Some(reason) => Err(held.lost(reason)),
                    None => Err(error),
                }
            }
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.monitor.abort();
        let held = self.held.clone();
        detach("releasing a dropped lock guard", async move {
            held.delete_until_done().await
        });
    }
}

impl Held {
    fn new(
        backend: &Arc<dyn Backend>,
        name: &str,
        key: &Key,
        token: u64,
        session: &Arc<Session>,
    ) -> Held {
        Held {
            backend: backend.clone(),
            name: name.to_owned(),
            key: key.clone(),
            token: FencingToken(token),
            session: session.clone(),
        }
    }

    fn lost(&self, reason: String) -> Error {
        tracing::warn!(lock = %self.name, token = %self.token, %reason, "lock lost");
        crate::metrics::lock_lost(self.backend.name());
        Error::lock_lost(&self.name, reason)
    }

    /// Deletes the lock record if it is still the one we created.
    async fn delete(&self) -> Result<WriteOutcome> {
        let write =
            Write::new(self.key.clone(), Op::Delete).when(Condition::ModRevision(self.token.0));
        self.backend.write(write).await
    }

    /// [`delete`](Self::delete), retried while the store is unreachable
    /// and the session can still hold the record (once it cannot, the
    /// lease's expiry deletes it).
    async fn delete_until_done(&self) -> Result<()> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.delete().await {
                Ok(_) => return Ok(()),
                Err(error) if error.is_transient() && self.session.distrust().is_none() => {
                    tracing::debug!(lock = %self.name, %error, "lock release failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// The identity written into the record of one acquisition.
#[derive(Clone)]
struct Claim {
    fields: Vec<(FieldName, Bytes)>,
}

impl Claim {
    fn new(node_id: &str) -> Self {
        let claim = format!("{:032x}", crate::random::random_u128());
        Claim {
            fields: vec![
                (
                    FieldName::from(HOLDER_FIELD),
                    Bytes::copy_from_slice(node_id.as_bytes()),
                ),
                (FieldName::from(CLAIM_FIELD), Bytes::from(claim)),
                (
                    FieldName::from(SINCE_FIELD),
                    Bytes::from(crate::layout::since_now()),
                ),
            ],
        }
    }

    fn is_in(&self, record: &Record) -> bool {
        let ours = &self.fields[1].1;
        record.field(CLAIM_FIELD).is_some_and(|f| f.value == *ours)
    }
}

/// The write of one acquisition, run in its own task so that it outlives
/// a caller that goes away; dropped before its outcome was taken, it
/// cleans up after itself (see [`clean_up`]).
struct InFlight {
    write: Option<JoinHandle<Result<WriteOutcome>>>,
    backend: Arc<dyn Backend>,
    name: String,
    key: Key,
    claim: Claim,
    session: Arc<Session>,
}

impl InFlight {
    fn send(
        backend: &Arc<dyn Backend>,
        name: &str,
        key: &Key,
        claim: &Claim,
        session: &Arc<Session>,
    ) -> Self {
        let write = Write::new(key.clone(), Op::Put(claim.fields.clone()))
            .when(Condition::Absent)
            .with_lease(Some(session.lease()));
        let sender = backend.clone();
        InFlight {
            write: Some(tokio::spawn(async move { sender.write(write).await })),
            backend: backend.clone(),
            name: name.to_owned(),
            key: key.clone(),
            claim: claim.clone(),
            session: session.clone(),
        }
    }

    async fn outcome(mut self) -> Result<WriteOutcome> {
        let Some(write) = self.write.as_mut() else {
            return Err(Error::Closed);
        };
        let outcome = write.await.unwrap_or_else(|e| Err(task_failed(e)));
        self.write = None;
        outcome
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(write) = self.write.take() else {
            return;
        };
        let (backend, name, key, claim, session) = (
            self.backend.clone(),
            self.name.clone(),
            self.key.clone(),
            self.claim.clone(),
            self.session.clone(),
        );
        detach("cleaning up a cancelled lock acquisition", async move {
            let outcome = write.await.unwrap_or_else(|e| Err(task_failed(e)));
            clean_up(&backend, &name, &key, &claim, &session, outcome).await
        });
    }
}

fn task_failed(e: tokio::task::JoinError) -> Error {
    Error::Unavailable {
        backend: "lock",
        message: format!("the task writing the lock record failed: {e}"),
    }
}

/// Removes what an acquisition nobody waits for anymore made. A committed
/// record is deleted (if still ours). When the outcome is unknown, the
/// record is looked for by its claim; since the write may still land
/// later, the session is also retired, so that its lease, and anything
/// written under it, goes once its other holders are done.
async fn clean_up(
    backend: &Arc<dyn Backend>,
    name: &str,
    key: &Key,
    claim: &Claim,
    session: &Arc<Session>,
    outcome: Result<WriteOutcome>,
) -> Result<()> {
    let revision = match outcome {
        Ok(WriteOutcome::Committed { revision, .. }) => revision,
        Ok(WriteOutcome::Rejected { .. }) | Err(Error::LeaseExpired { .. }) => return Ok(()),
        Err(_) => {
            session.retire();
            match backend.read(key.clone()).await? {
                Some(record) if claim.is_in(&record) => record.mod_revision,
                _ => return Ok(()),
            }
        }
    };
    Held::new(backend, name, key, revision, session)
        .delete_until_done()
        .await
}

impl Context {
    /// Acquires the lock `name`, waiting as long as it takes.
    pub async fn acquire(&self, name: &str) -> Result<LockGuard> {
        acquire(self, lock_key(name), name, Wait::Forever).await
    }

    /// Acquires the lock `name` if it is free; fails with
    /// [`Error::LockBusy`] at once otherwise.
    pub async fn try_acquire(&self, name: &str) -> Result<LockGuard> {
        acquire(self, lock_key(name), name, Wait::No).await
    }

    /// Acquires the lock `name`, failing with [`Error::Timeout`] if it is
    /// still held after `timeout`.
    pub async fn acquire_timeout(&self, name: &str, timeout: Duration) -> Result<LockGuard> {
        let wait = Wait::Until(Instant::now() + timeout, timeout);
        acquire(self, lock_key(name), name, wait).await
    }

    /// Runs `body` while holding the cluster-wide lock `name`, then releases
    /// it. If the lock is lost while the body runs, the body is cancelled
    /// (dropped at its next await point) and [`Error::LockLost`] returned;
    /// also when the body finished but the lock can no longer be proven to
    /// have been held throughout (the session could not be confirmed alive
    /// at the end, or the record was no longer ours at release).
    /// Inside the body, [`current_fencing_token`] gives the lock's token.
    ///
    /// Locks are not reentrant: taking a lock already held through the same
    /// context waits for it like any other holder.
    pub async fn lock<F: Future>(&self, name: &str, body: F) -> Result<F::Output> {
        run_locked(self.acquire(name).await?, body).await
    }

    /// [`lock`](Context::lock) that fails with [`Error::LockBusy`] at once if
    /// the lock is held.
    pub async fn try_lock<F: Future>(&self, name: &str, body: F) -> Result<F::Output> {
        run_locked(self.try_acquire(name).await?, body).await
    }

    /// [`lock`](Context::lock) that fails with [`Error::Timeout`] if the lock
    /// cannot be had within `timeout` (the body itself is not timed).
    pub async fn lock_timeout<F: Future>(
        &self,
        name: &str,
        timeout: Duration,
        body: F,
    ) -> Result<F::Output> {
        run_locked(self.acquire_timeout(name, timeout).await?, body).await
    }
}

pub(crate) fn lock_key(name: &str) -> Key {
    Key::from(format!("{LOCK_PREFIX}{name}"))
}

/// Runs `body` under `guard`, cancelling it if the lock is lost.
pub(crate) async fn run_locked<F: Future>(guard: LockGuard, body: F) -> Result<F::Output> {
    let token = guard.token();
    // Not a single step of the body without the lock: the guard may have
    // been lost between its grant and now (a pause, a slow scheduler).
    if let Some(reason) = guard.lost_reason() {
        let lost = guard.held.lost(reason);
        drop(guard);
        return Err(lost);
    }
    let outcome = tokio::select! {
        biased;
        lost = guard.lost() => Err(lost),
        output = CURRENT_TOKEN.scope(token, body) => Ok(output),
    };
    match outcome {
        Ok(output) => match guard.release().await {
            Ok(()) => Ok(output),
            // The body finished while the lock was trusted; only the
            // release is late, and it goes on in the background.
            Err(error) if error.is_transient() => Ok(output),
            Err(error) => Err(error),
        },
        Err(lost) => {
            tracing::warn!(%lost, %token, "lock body cancelled");
            drop(guard);
            Err(lost)
        }
    }
}

pub(crate) async fn acquire(ctx: &Context, key: Key, name: &str, wait: Wait) -> Result<LockGuard> {
    let asked = Instant::now();
    let span = tracing::debug_span!(
        "dref",
        op = "acquire",
        lock = name,
        backend = ctx.inner.backend.name(),
        node = ctx.node_id()
    );
    let acquired = acquire_loop(ctx, key, name, wait).instrument(span).await;
    if acquired.is_ok() {
        crate::metrics::lock_acquired(ctx.inner.backend.name(), asked.elapsed());
    }
    acquired
}

async fn acquire_loop(ctx: &Context, key: Key, name: &str, wait: Wait) -> Result<LockGuard> {
    let backend = ctx.inner.backend.clone();
    let claim = Claim::new(&ctx.inner.node_id);
    loop {
        let session = ctx.session().await?;
        let outcome = InFlight::send(&backend, name, &key, &claim, &session)
            .outcome()
            .await;
        let current = match outcome {
            Ok(WriteOutcome::Committed { revision, .. }) => {
                match too_late(&backend, name, &key, revision, &session) {
                    true => continue,
                    false => return Ok(LockGuard::start(backend, name, key, revision, session)),
                }
            }
            Ok(WriteOutcome::Rejected { current: None }) => continue,
            Ok(WriteOutcome::Rejected {
                current: Some(current),
            }) => current,
            // Our session lease ended between granting and writing: the
            // next round grants a new one.
            Err(Error::LeaseExpired { .. }) => {
                ctx.inner.sessions.invalidate(&session).await;
                continue;
            }
            Err(error) => {
                // The outcome is unknown: the record may exist, or appear
                // later. Look for it; if it is not there, the write may
                // still land, so clean up as for a cancelled acquisition.
                return match backend.read(key.clone()).await {
                    Ok(Some(record)) if claim.is_in(&record) => {
                        let token = record.create_revision;
                        match too_late(&backend, name, &key, token, &session) {
                            true => Err(error),
                            false => Ok(LockGuard::start(backend, name, key, token, session)),
                        }
                    }
                    _ => {
                        let (claim, failed, name) = (claim.clone(), error.clone(), name.to_owned());
                        detach("cleaning up a failed lock acquisition", async move {
                            clean_up(&backend, &name, &key, &claim, &session, Err(failed)).await
                        });
                        Err(error)
                    }
                };
            }
        };
        match wait {
            Wait::No => return Err(Error::LockBusy { name: name.into() }),
            Wait::Forever => wait_released(&*backend, &key, &current).await?,
            Wait::Until(deadline, after) => {
                tokio::time::timeout_at(deadline, wait_released(&*backend, &key, &current))
                    .await
                    .map_err(|_| Error::Timeout {
                        operation: format!("acquiring lock `{name}`"),
                        after,
                    })??;
            }
        }
    }
}

/// Whether a grant came back too late to be trusted: the session could no
/// longer be proven alive when it arrived (this process was paused, or the
/// answer was slow), so the store may already have expired the record and
/// given the lock to someone else. Such a grant is given back (if the
/// record is still ours, it is deleted) and must not be used.
fn too_late(
    backend: &Arc<dyn Backend>,
    name: &str,
    key: &Key,
    token: u64,
    session: &Arc<Session>,
) -> bool {
    let Some(reason) = session.distrust() else {
        return false;
    };
    tracing::info!(lock = %name, token, %reason, "lock granted too late to be trusted; trying again");
    let held = Held::new(backend, name, key, token, session);
    detach("giving back a lock granted too late", async move {
        held.delete_until_done().await
    });
    true
}

/// Waits until the lock record `current` is gone: deleted, expired, or
/// replaced by another holder's (then the caller tries again, and waits
/// for that one). Only a watch that cannot be trusted (malformed events)
/// ends the wait with an error; unreachable stores are waited out.
async fn wait_released(backend: &dyn Backend, key: &Key, current: &Record) -> Result<()> {
    let created = current.create_revision;
    follow(backend, key, current.mod_revision, |seen| match seen {
        Followed::Event(event) => match &event.kind {
            EventKind::Deleted | EventKind::Expired => Some(Ok(())),
            EventKind::Put {
                create_revision, ..
            } => (*create_revision != created).then_some(Ok(())),
        },
        Followed::Resync(None) => Some(Ok(())),
        Followed::Resync(Some(record)) => (record.create_revision != created).then_some(Ok(())),
        Followed::Error(error) if error.is_transient() => None,
        Followed::Error(error) => Some(Err(error.clone())),
    })
    .await
}

impl LockGuard {
    fn start(
        backend: Arc<dyn Backend>,
        name: &str,
        key: Key,
        token: u64,
        session: Arc<Session>,
    ) -> LockGuard {
        let token = FencingToken(token);
        tracing::debug!(lock = %name, %token, "lock acquired");
        let (tx, rx) = watch::channel(None);
        let monitor = tokio::spawn(monitor(backend.clone(), key.clone(), token, tx));
        LockGuard {
            held: Held {
                backend,
                name: name.to_owned(),
                key,
                token,
                session,
            },
            lost: rx,
            monitor: monitor.abort_handle(),
            released: false,
        }
    }
}

/// Watches a held lock's record and reports when it is no longer ours.
/// (The session's own loss is read from the session by the guard.)
async fn monitor(
    backend: Arc<dyn Backend>,
    key: Key,
    token: FencingToken,
    lost: watch::Sender<Option<String>>,
) {
    let still_ours = |r: &Record| r.create_revision == token.0 && r.mod_revision == token.0;
    let reason = follow(&*backend, &key, token.0, |seen| match seen {
        Followed::Event(event) => Some(match event.kind {
            EventKind::Expired => "the session lease expired".to_owned(),
            EventKind::Deleted => {
                format!("the lock record was deleted at revision {}", event.revision)
            }
            EventKind::Put { .. } => format!(
                "the lock record was overwritten at revision {}",
                event.revision
            ),
        }),
        Followed::Resync(Some(record)) if still_ours(record) => None,
        Followed::Resync(Some(record)) => Some(format!(
            "the lock record was overwritten at revision {}",
            record.mod_revision
        )),
        Followed::Resync(None) => Some("the lock record was deleted".to_owned()),
        // The session decides when an unreachable store means the lock is
        // lost; a watch that delivers garbage cannot vouch for the lock.
        Followed::Error(error) if error.is_transient() => None,
        Followed::Error(error) => Some(format!("the lock's watch failed: {error}")),
    })
    .await;
    lost.send_replace(Some(reason));
}
