//! Cluster-wide locks with fencing tokens.
//!
//! A lock is a record created with condition `Absent` under the context's
//! session lease. Its fencing token is the revision that created it, strictly
//! increasing across holders. Waiters watch the record and retry when it is
//! deleted or expires; nobody polls.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::context::Context;
use crate::engine::{
    Backend, Condition, EventKind, FieldName, Key, Op, Record, WatchItem, Write, WriteOutcome,
};
use crate::session::Session;
use crate::{Error, Result};

/// Stored field naming the node that holds a lock.
pub(crate) const HOLDER_FIELD: &str = "holder";
/// Stored field telling one acquisition from another.
const CLAIM_FIELD: &str = "claim";

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
    backend: Arc<dyn Backend>,
    name: String,
    key: Key,
    token: FencingToken,
    _session: Arc<Session>,
    lost: watch::Receiver<Option<String>>,
    monitor: AbortHandle,
    released: bool,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("token", &self.token)
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl LockGuard {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token of this holding.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// Whether the lock is known to be lost.
    pub fn is_lost(&self) -> bool {
        self.lost.borrow().is_some()
    }

    /// Resolves with [`Error::LockLost`] once the lock is lost: its record
    /// was changed or deleted by someone else, or the session lease could
    /// not be proven alive. Never resolves while the lock is held.
    pub async fn lost(&self) -> Error {
        let mut rx = self.lost.clone();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the lock monitor stopped".to_owned(),
        };
        Error::lock_lost(&self.name, reason)
    }

    /// Releases the lock (only if the record is still ours: another
    /// holder's lock is never deleted). Fails with [`Error::LockLost`] if
    /// the lock had been lost meanwhile.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        self.monitor.abort();
        let lost = self.lost.borrow().clone();
        release(&*self.backend, &self.key, self.token).await?;
        match lost {
            Some(reason) => Err(Error::lock_lost(&self.name, reason)),
            None => Ok(()),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.monitor.abort();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (backend, key, token) = (self.backend.clone(), self.key.clone(), self.token);
            handle.spawn(async move {
                let _ = release(&*backend, &key, token).await;
            });
        }
    }
}

async fn release(backend: &dyn Backend, key: &Key, token: FencingToken) -> Result<()> {
    let write = Write::new(key.clone(), Op::Delete).when(Condition::ModRevision(token.0));
    backend.write(write).await.map(|_| ())
}

fn holder_fields(node_id: &str, claim: &Bytes) -> Vec<(FieldName, Bytes)> {
    vec![
        (
            FieldName::from(HOLDER_FIELD),
            Bytes::copy_from_slice(node_id.as_bytes()),
        ),
        (FieldName::from(CLAIM_FIELD), claim.clone()),
    ]
}

/// Deletes a lock record created by an acquisition whose caller went away
/// while the write was in flight, identified by its unique claim.
struct InFlight {
    backend: Arc<dyn Backend>,
    key: Key,
    claim: Bytes,
    armed: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (backend, key, claim) = (self.backend.clone(), self.key.clone(), self.claim.clone());
        handle.spawn(async move {
            if let Ok(Some(record)) = backend.read(key.clone()).await {
                if record.field(CLAIM_FIELD).is_some_and(|f| f.value == claim) {
                    let _ = release(&*backend, &key, FencingToken(record.mod_revision)).await;
                }
            }
        });
    }
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
    /// (dropped at its next await point) and [`Error::LockLost`] returned.
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
    Key::from(format!("lock/{name}"))
}

/// Runs `body` under `guard`, cancelling it if the lock is lost.
pub(crate) async fn run_locked<F: Future>(guard: LockGuard, body: F) -> Result<F::Output> {
    let token = guard.token();
    let outcome = tokio::select! {
        biased;
        lost = guard.lost() => Err(lost),
        output = CURRENT_TOKEN.scope(token, body) => Ok(output),
    };
    match outcome {
        Ok(output) => guard.release().await.map(|()| output),
        Err(lost) => {
            drop(guard);
            Err(lost)
        }
    }
}

static CLAIMS: AtomicU64 = AtomicU64::new(1);

pub(crate) async fn acquire(ctx: &Context, key: Key, name: &str, wait: Wait) -> Result<LockGuard> {
    let backend = ctx.inner.backend.clone();
    let claim = Bytes::from(CLAIMS.fetch_add(1, Ordering::Relaxed).to_string());
    let fields = holder_fields(&ctx.inner.node_id, &claim);
    let mut in_flight = InFlight {
        backend: backend.clone(),
        key: key.clone(),
        claim,
        armed: false,
    };
    loop {
        let session = ctx.session().await?;
        let write = Write::new(key.clone(), Op::Put(fields.clone()))
            .when(Condition::Absent)
            .with_lease(Some(session.lease()));
        in_flight.armed = true;
        let outcome = backend.write(write).await;
        in_flight.armed = false;
        match outcome {
            Ok(WriteOutcome::Committed { revision, .. }) => {
                return LockGuard::start(backend, name, key, FencingToken(revision), session).await;
            }
            Ok(WriteOutcome::Rejected { current }) => {
                let Some(current) = current else { continue };
                let waited = match wait {
                    Wait::No => return Err(Error::LockBusy { name: name.into() }),
                    Wait::Forever => wait_released(&*backend, &key, &current).await,
                    Wait::Until(deadline, after) => {
                        tokio::time::timeout_at(deadline, wait_released(&*backend, &key, &current))
                            .await
                            .unwrap_or_else(|_| {
                                Err(Error::Timeout {
                                    operation: format!("acquiring lock `{name}`"),
                                    after,
                                })
                            })
                    }
                };
                waited?;
            }
            // Our session lease ended between granting and writing: the
            // next round grants a new one.
            Err(Error::LeaseExpired { .. }) if !session.is_alive() => continue,
            Err(Error::LeaseExpired { .. }) => {
                ctx.inner.sessions.invalidate(&session).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Waits until the record `current` is deleted or expires. Transient watch
/// failures return `Ok` so that the caller simply tries again.
async fn wait_released(backend: &dyn Backend, key: &Key, current: &Record) -> Result<()> {
    let mut stream = match backend.watch(key.clone(), Some(current.mod_revision)).await {
        Ok(stream) => stream,
        Err(e) if e.is_transient() => {
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    while let Some(item) = stream.next().await {
        match item {
            Ok(WatchItem::Event(event)) => match event.kind {
                EventKind::Deleted | EventKind::Expired => return Ok(()),
                _ => {}
            },
            Ok(WatchItem::Resync(None)) => return Ok(()),
            Ok(WatchItem::Resync(Some(_))) => {}
            Err(e) if e.is_transient() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl LockGuard {
    async fn start(
        backend: Arc<dyn Backend>,
        name: &str,
        key: Key,
        token: FencingToken,
        session: Arc<Session>,
    ) -> Result<LockGuard> {
        let (tx, rx) = watch::channel(None);
        let monitor = tokio::spawn(monitor(
            backend.clone(),
            key.clone(),
            token,
            session.clone(),
            tx,
        ));
        Ok(LockGuard {
            backend,
            name: name.to_owned(),
            key,
            token,
            _session: session,
            lost: rx,
            monitor: monitor.abort_handle(),
            released: false,
        })
    }
}

/// Watches a held lock and reports why it was lost.
async fn monitor(
    backend: Arc<dyn Backend>,
    key: Key,
    token: FencingToken,
    session: Arc<Session>,
    lost: watch::Sender<Option<String>>,
) {
    let reason = tokio::select! {
        reason = session.lost() => reason,
        reason = watch_for_loss(&*backend, &key, token) => reason,
    };
    let _ = lost.send(Some(reason));
}

async fn watch_for_loss(backend: &dyn Backend, key: &Key, token: FencingToken) -> String {
    let still_ours = |r: &Record| r.create_revision == token.0 && r.mod_revision == token.0;
    loop {
        let mut stream = match backend.watch(key.clone(), Some(token.0)).await {
            Ok(stream) => stream,
            Err(_) => {
                // The session monitor decides when an unreachable store
                // means the lock is lost; keep trying to watch.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while let Some(item) = stream.next().await {
            match item {
                Ok(WatchItem::Event(event)) => {
                    return match event.kind {
                        EventKind::Expired => "the session lease expired".to_owned(),
                        EventKind::Deleted => {
                            format!("the lock record was deleted at revision {}", event.revision)
                        }
                        _ => format!(
                            "the lock record was overwritten at revision {}",
                            event.revision
                        ),
                    };
                }
                Ok(WatchItem::Resync(Some(record))) if still_ours(&record) => {}
                Ok(WatchItem::Resync(Some(record))) => {
                    return format!(
                        "the lock record was overwritten at revision {}",
                        record.mod_revision
                    );
                }
                Ok(WatchItem::Resync(None)) => return "the lock record was deleted".to_owned(),
                Err(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
