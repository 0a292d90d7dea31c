//! The session lease every context keeps alive in the background.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::engine::{Backend, LeaseId};
use crate::{Error, Result};

/// Whether a session's lease can still be proven alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SessionState {
    Alive,
    /// The lease ended or could not be proven alive; the reason.
    Lost(String),
}

/// One granted session lease and its keep-alive task.
pub(crate) struct Session {
    lease: LeaseId,
    state: watch::Receiver<SessionState>,
    keep_alive: AbortHandle,
}

impl Session {
    pub(crate) fn lease(&self) -> LeaseId {
        self.lease
    }

    pub(crate) fn is_alive(&self) -> bool {
        *self.state.borrow() == SessionState::Alive
    }

    /// Resolves with the reason once the session is lost.
    pub(crate) async fn lost(&self) -> String {
        let mut rx = self.state.clone();
        let result = rx
            .wait_for(|s| matches!(s, SessionState::Lost(_)))
            .await
            .map(|s| s.clone());
        match result {
            Ok(SessionState::Lost(reason)) => reason,
            _ => "the session keep-alive task stopped".to_owned(),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keep_alive.abort();
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
    /// one was lost.
    pub(crate) async fn current(&self, backend: &Arc<dyn Backend>) -> Result<Arc<Session>> {
        let mut slot = self.current.lock().await;
        if let Some(session) = slot.as_ref().filter(|s| s.is_alive()) {
            return Ok(session.clone());
        }
        if let Some(old) = slot.take() {
            // Best effort: a lost session's records should not linger until
            // the server notices.
            let _ = backend.revoke_lease(old.lease).await;
        }
        let granted_at = Instant::now();
        let lease = backend.grant_lease(self.ttl).await?;
        let (tx, rx) = watch::channel(SessionState::Alive);
        let task = tokio::spawn(keep_alive(backend.clone(), lease, self.ttl, granted_at, tx));
        let session = Arc::new(Session {
            lease,
            state: rx,
            keep_alive: task.abort_handle(),
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
/// a quarter of the TTL, so that a lock is given up before the store can
/// hand it to someone else.
pub(crate) fn safety_margin(ttl: Duration) -> Duration {
    ttl / 4
}

async fn keep_alive(
    backend: Arc<dyn Backend>,
    lease: LeaseId,
    ttl: Duration,
    granted_at: Instant,
    state: watch::Sender<SessionState>,
) {
    let interval = ttl / 3;
    let margin = safety_margin(ttl);
    // The lease is certainly alive until `proven_until`: the server restarted
    // its TTL no earlier than when we sent the request.
    let mut proven_until = granted_at + ttl;
    let mut next_send = granted_at + interval;
    loop {
        let trusted_until = proven_until - margin;
        let now = Instant::now();
        if now >= trusted_until {
            let _ = state.send(SessionState::Lost(format!(
                "the session lease could not be renewed for {:?} (TTL {ttl:?})",
                ttl - margin
            )));
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
                proven_until = sent + ttl;
                next_send = sent + interval;
            }
            Ok(Err(Error::LeaseExpired { .. })) => {
                let _ = state.send(SessionState::Lost("the session lease expired".to_owned()));
                return;
            }
            // Unreachable or slow backend: retry soon, until the lease can
            // no longer be trusted.
            Ok(Err(_)) | Err(_) => next_send = Instant::now() + interval / 4,
        }
    }
}
