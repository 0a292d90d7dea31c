//! A backend wrapper that injects faults between one node and the store,
//! for any backend.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dref::engine::{Backend, Key, LeaseId, Record, WatchStream, Write, WriteOutcome};
use dref::{Error, Result};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

/// Wraps a backend handle; switches make its calls fail as if the store
/// were unreachable. Clones share the switches.
#[derive(Clone)]
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    switches: Arc<Switches>,
}

#[derive(Default)]
struct Switches {
    keep_alive_fails: AtomicBool,
    partitioned: AtomicBool,
    /// Keep-alives fail until this instant.
    keep_alives_fail_until: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// The next write is applied at once, but its answer comes this much
    /// later.
    next_answer_delay: std::sync::Mutex<Option<Duration>>,
    /// The next write reaches the store only this much later.
    next_send_delay: std::sync::Mutex<Option<Duration>>,
}

impl FaultyBackend {
    /// Wraps `inner` with every fault off.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        FaultyBackend {
            inner,
            switches: Arc::default(),
        }
    }

    /// Makes keep-alives fail (the node stops proving its session alive)
    /// while everything else works.
    pub fn fail_keep_alives(&self, on: bool) {
        self.switches.keep_alive_fails.store(on, Ordering::SeqCst);
    }

    /// Makes keep-alives fail for `length` from now.
    pub fn fail_keep_alives_for(&self, length: Duration) {
        *self
            .switches
            .keep_alives_fail_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(tokio::time::Instant::now() + length);
    }

    /// Delays the answer of the next write by `delay`: the store applies it
    /// at once, the caller hears back late (a slow network, or this node
    /// paused between sending and reading the answer).
    pub fn delay_next_answer(&self, delay: Duration) {
        *self
            .switches
            .next_answer_delay
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(delay);
    }

    /// Delays the next write by `delay` before it reaches the store (a
    /// slow network): a caller dropped meanwhile may keep it from being
    /// sent at all.
    pub fn delay_next_send(&self, delay: Duration) {
        *self
            .switches
            .next_send_delay
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(delay);
    }

    fn keep_alives_failing(&self) -> bool {
        let until = *self
            .switches
            .keep_alives_fail_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.switches.keep_alive_fails.load(Ordering::SeqCst)
            || until.is_some_and(|u| tokio::time::Instant::now() < u)
    }

    /// Cuts the node off the store: every call fails as unavailable.
    pub fn partition(&self, on: bool) {
        self.switches.partitioned.store(on, Ordering::SeqCst);
    }

    fn cut(&self) -> Option<Error> {
        self.switches
            .partitioned
            .load(Ordering::SeqCst)
            .then(|| Error::Unavailable {
                backend: "faulty",
                message: "partitioned by the test".into(),
            })
    }

    fn fail<T: Send + 'static>(e: Error) -> BoxFuture<'static, Result<T>> {
        async move {
            // An unreachable store answers late, not at once.
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err(e)
        }
        .boxed()
    }
}

impl Backend for FaultyBackend {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn read(&self, key: Key) -> BoxFuture<'_, Result<Option<Record>>> {
        match self.cut() {
            Some(e) => Self::fail(e),
            None => self.inner.read(key),
        }
    }

    fn list(&self, prefix: String) -> BoxFuture<'_, Result<dref::engine::Listing>> {
        match self.cut() {
            Some(e) => Self::fail(e),
            None => self.inner.list(prefix),
        }
    }

    fn write(&self, write: Write) -> BoxFuture<'_, Result<WriteOutcome>> {
        if let Some(e) = self.cut() {
            return Self::fail(e);
        }
        let take = |slot: &std::sync::Mutex<Option<Duration>>| {
            slot.lock().unwrap_or_else(|e| e.into_inner()).take()
        };
        let before = take(&self.switches.next_send_delay);
        let after = take(&self.switches.next_answer_delay);
        if before.is_none() && after.is_none() {
            return self.inner.write(write);
        }
        let inner = self.inner.clone();
        async move {
            if let Some(delay) = before {
                tokio::time::sleep(delay).await;
            }
            let outcome = inner.write(write).await;
            if let Some(delay) = after {
                tokio::time::sleep(delay).await;
            }
            outcome
        }
        .boxed()
    }

    // A fault in force goes through the async forms above, which inject it.
    fn try_read(&self, key: &Key) -> Option<Result<Option<Record>>> {
        match self.cut() {
            Some(e) => Some(Err(e)),
            None => self.inner.try_read(key),
        }
    }

    fn try_write(&self, write: &mut Write) -> Option<Result<WriteOutcome>> {
        if let Some(e) = self.cut() {
            return Some(Err(e));
        }
        let armed = |slot: &std::sync::Mutex<Option<Duration>>| {
            slot.lock().unwrap_or_else(|e| e.into_inner()).is_some()
        };
        if armed(&self.switches.next_send_delay) || armed(&self.switches.next_answer_delay) {
            return None;
        }
        self.inner.try_write(write)
    }

    fn watch(&self, key: Key, since: Option<u64>) -> BoxFuture<'_, Result<WatchStream>> {
        match self.cut() {
            Some(e) => Self::fail(e),
            None => self.inner.watch(key, since),
        }
    }

    fn watch_prefix(
        &self,
        prefix: String,
        since: Option<u64>,
    ) -> BoxFuture<'_, Result<dref::engine::PrefixStream>> {
        match self.cut() {
            Some(e) => Self::fail(e),
            None => self.inner.watch_prefix(prefix, since),
        }
    }

    fn grant_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId>> {
        match self.cut() {
            Some(e) => Self::fail(e),
            None => self.inner.grant_lease(ttl),
        }
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>> {
        if self.keep_alives_failing() {
            return Self::fail(Error::Unavailable {
                backend: "faulty",
                message: "keep-alives dropped by the test".into(),
            });
        }
        match self.cut() {
            Some(e) => Self::fail(e),
            None => self.inner.keep_alive(lease),
        }
    }

    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>> {
        match self.cut() {
            Some(e) => Self::fail(e),
            None => self.inner.revoke_lease(lease),
        }
    }
}
