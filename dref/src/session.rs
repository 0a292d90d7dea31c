//! The session lease every context keeps alive in the background, and how
//! long this node may trust it.
//!
//! # Lease safety
//! The store ends a lease no earlier than `TTL` after the last keep-alive
//! it accepted, as measured by the store. A keep-alive that succeeds was
//! accepted no earlier than when this node sent it, so the lease is alive
//! until at least `sent + TTL`. This node trusts it only until
//! `sent + TTL - margin` ([`safety_margin`]: a quarter of the TTL), which leaves room
//! for clocks that run at slightly different rates (up to about 12% over
//! one TTL). The trust deadline is read from the clock whenever it is
//! asked for, so a process that was paused past it (SIGSTOP, a stall) knows
//! on resuming, before the keep-alive task has had a chance to run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::detach::detach;
use crate::engine::{Backend, LeaseId};
use crate::{Error, Result};

/// What the keep-alive task last established about a session's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SessionState {
    /// Proven alive; trusted until this instant.
    Alive { trusted_until: Instant },
    /// The lease ended or could not be proven alive; the reason.
    Lost(String),
}

/// One granted session lease and its keep-alive task.
pub(crate) struct Session {
    lease: LeaseId,
    ttl: Duration,
    backend: Arc<dyn Backend>,
    state: watch::Receiver<SessionState>,
    keep_alive: AbortHandle,
    /// Set when a write under this lease may still land unseen (an
    /// acquisition whose outcome is unknown): no new work uses the session,
    /// and the lease is revoked once the last holder lets go of it, which
    /// removes whatever that write made.
    retired: AtomicBool,
}

impl Session {
    pub(crate) fn lease(&self) -> LeaseId {
        self.lease
    }

    /// Why the session can no longer be trusted now, if it cannot.
    pub(crate) fn distrust(&self) -> Option<String> {
        distrust(&self.state.borrow(), self.ttl)
    }

    /// Resolves with the reason once the session can no longer be trusted:
    /// at its trust deadline, unless a keep-alive extends it first, or when
    /// the keep-alive task reports the lease gone.
    pub(crate) async fn lost(&self) -> String {
        let mut rx = self.state.clone();
        loop {
            let deadline = match &*rx.borrow_and_update() {
                SessionState::Lost(reason) => return reason.clone(),
                SessionState::Alive { trusted_until } => *trusted_until,
            };
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return "the session keep-alive task stopped".to_owned();
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    if let Some(reason) = self.distrust() {
                        return reason;
                    }
                }
            }
        }
    }

    /// Takes the session out of use (see the `retired` field).
    pub(crate) fn retire(&self) {
        if !self.retired.swap(true, Ordering::AcqRel) {
            tracing::info!(
                lease = %self.lease,
                "session retired: a write under it has an unknown outcome; \
                 it is revoked once its current holders are done"
            );
        }
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }
}

fn distrust(state: &SessionState, ttl: Duration) -> Option<String> {
    match state {
        SessionState::Lost(reason) => Some(reason.clone()),
        SessionState::Alive { trusted_until } if Instant::now() >= *trusted_until => Some(format!(
            "the session lease could not be proven alive: no keep-alive confirmed \
             within {:?} (TTL {ttl:?} minus the safety margin)",
            ttl - safety_margin(ttl)
        )),
        SessionState::Alive { .. } => None,
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keep_alive.abort();
        if self.is_retired() {
            let (backend, lease) = (self.backend.clone(), self.lease);
            detach("revoking a retired session lease", async move {
                backend.revoke_lease(lease).await
            });
        }
    }
}

/// Grants session leases on demand and keeps the current one alive.
pub(crate) struct Sessions {
    ttl: Duration,
    current: tokio::sync::Mutex<Option<Arc<Session>>>,
}

impl Sessions {
    pub(crate) fn new(ttl: Duration) -> Self {
        Sessions {
            ttl,
            current: tokio::sync::Mutex::new(None),
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The live session, granting a new lease if there is none or the last
    /// one was lost or retired.
    pub(crate) async fn current(&self, backend: &Arc<dyn Backend>) -> Result<Arc<Session>> {
        let mut slot = self.current.lock().await;
        if let Some(session) = slot
            .as_ref()
            .filter(|s| !s.is_retired() && s.distrust().is_none())
        {
            return Ok(session.clone());
        }
        if let Some(old) = slot.take() {
            if !old.is_retired() {
                // A lost session's records should not linger until the
                // store notices. (A retired one is revoked by its last
                // holder.)
                let (backend, lease) = (backend.clone(), old.lease);
                detach("revoking a lost session lease", async move {
                    backend.revoke_lease(lease).await
                });
            }
        }
        let sent = Instant::now();
        let lease = backend.grant_lease(self.ttl).await?;
        let trusted_until = sent + self.ttl - safety_margin(self.ttl);
        let (tx, rx) = watch::channel(SessionState::Alive { trusted_until });
        let task = tokio::spawn(keep_alive(backend.clone(), lease, self.ttl, sent, tx));
        tracing::debug!(%lease, ttl = ?self.ttl, backend = backend.name(), "session granted");
        let session = Arc::new(Session {
            lease,
            ttl: self.ttl,
            backend: backend.clone(),
            state: rx,
            keep_alive: task.abort_handle(),
            retired: AtomicBool::new(false),
        });
        *slot = Some(session.clone());
        Ok(session)
    }

    /// The current session without granting one.
    pub(crate) fn existing(&self) -> Option<Arc<Session>> {
        self.current.try_lock().ok().and_then(|s| s.clone())
    }

    /// Forgets `session` if it is the current one (the store reported its
    /// lease gone before the keep-alive task noticed).
    pub(crate) async fn invalidate(&self, session: &Arc<Session>) {
        let mut slot = self.current.lock().await;
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)) {
            *slot = None;
        }
    }

    /// Takes the current session out, for revocation at shutdown.
    pub(crate) async fn take(&self) -> Option<Arc<Session>> {
        self.current.lock().await.take()
    }
}

/// How long before the lease could end that a holder stops trusting it:
/// a quarter of the TTL (see the [module docs](self)).
pub(crate) fn safety_margin(ttl: Duration) -> Duration {
    ttl / 4
}

/// Renews the lease every third of its TTL (sooner after a failure) and
/// publishes how long it can be trusted, until it is lost.
async fn keep_alive(
    backend: Arc<dyn Backend>,
    lease: LeaseId,
    ttl: Duration,
    granted: Instant,
    state: watch::Sender<SessionState>,
) {
    let _alive = crate::metrics::SessionAlive::new(backend.name());
    let interval = ttl / 3;
    let margin = safety_margin(ttl);
    // The lease is certainly alive until `proven_until`: the store restarted
    // its TTL no earlier than when we sent the request.
    let mut proven_until = granted + ttl;
    let mut next_send = granted + interval;
    loop {
        let trusted_until = proven_until - margin;
        let now = Instant::now();
        if now >= trusted_until {
            let reason = format!(
                "the session lease could not be renewed for {:?} (TTL {ttl:?})",
                ttl - margin
            );
            tracing::warn!(%lease, backend = backend.name(), "session lost: {reason}");
            state.send_replace(SessionState::Lost(reason));
            return;
        }
        if now < next_send {
            tokio::time::sleep_until(next_send.min(trusted_until)).await;
            continue;
        }
        let sent = Instant::now();
        let attempt = tokio::time::timeout_at(trusted_until, backend.keep_alive(lease)).await;
        match attempt {
            Ok(Ok(())) => {
                if sent > next_send + interval {
                    crate::metrics::session_renewed_late(backend.name());
                    tracing::info!(
                        %lease,
                        late = ?(sent - next_send),
                        "session lease renewed late"
                    );
                }
                proven_until = sent + ttl;
                next_send = sent + interval;
                state.send_replace(SessionState::Alive {
                    trusted_until: proven_until - margin,
                });
            }
            Ok(Err(Error::LeaseExpired { .. })) => {
                tracing::warn!(%lease, backend = backend.name(), "session lost: the lease expired");
                state.send_replace(SessionState::Lost("the session lease expired".to_owned()));
                return;
            }
            Ok(Err(error)) => {
                // Unreachable or slow store: retry soon, until the lease can
                // no longer be trusted.
                tracing::debug!(%lease, %error, "session keep-alive failed; retrying");
                next_send = Instant::now() + interval / 4;
            }
            Err(_) => {} // the trust deadline passed: the next round says so
        }
    }
}
