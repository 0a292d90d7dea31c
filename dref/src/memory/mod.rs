//! The in-memory backend: the reference implementation of the engine
//! contract, and the embedded default.
//!
//! One [`MemoryBackend`] is one store. Clone it (it is a handle) to give
//! several contexts the same store, which is how tests simulate several
//! nodes in one process.

mod state;

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::{self, BoxFuture};
use futures_util::FutureExt;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::engine::store::{self, Store, StoreAccess};
use crate::engine::{
    Backend, Key, LeaseId, Listing, PrefixStream, Record, WatchStream, Write, WriteOutcome,
};
use crate::{Error, Result};
use state::State;

/// Default limit on the encoded size of one write (all fields together).
pub const DEFAULT_MAX_WRITE_BYTES: usize = 1 << 20;

const DEFAULT_WATCH_BUFFER: usize = 256;

/// An in-memory store (see the [module docs](self)).
#[derive(Clone)]
pub struct MemoryBackend {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the lease reaper when a lease with an earlier deadline appears.
    reaper_wake: Arc<Notify>,
    max_write_bytes: usize,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("revision", &self.shared.state.lock().store.revision())
            .finish_non_exhaustive()
    }
}

impl MemoryBackend {
    /// A new, empty store with default limits.
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_WRITE_BYTES, DEFAULT_WATCH_BUFFER)
    }

    /// A new store rejecting writes over `max_write_bytes` and buffering up
    /// to `watch_buffer` events per watched key before a slow watcher gets a
    /// resync.
    pub fn with_limits(max_write_bytes: usize, watch_buffer: usize) -> Self {
        MemoryBackend {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new(watch_buffer)),
                reaper_wake: Arc::new(Notify::new()),
                max_write_bytes,
            }),
        }
    }

    /// The store's current revision.
    pub fn revision(&self) -> u64 {
        self.shared.state.lock().store.revision()
    }

    fn read_now(&self, key: &Key) -> Option<Record> {
        self.shared.with_store(|store| store.get(key).cloned())
    }

    fn write_now(&self, write: &mut Write) -> Result<WriteOutcome> {
        write.check_size(self.shared.max_write_bytes)?;
        self.shared.state.lock().write(write)
    }

    fn watch_now(&self, key: Key, since: Option<u64>) -> WatchStream {
        store::watch(&self.shared, key, since)
    }

    fn ensure_reaper(&self) {
        let mut st = self.shared.state.lock();
        if st.reaper_running {
            return;
        }
        // Without a runtime there is nothing to run the reaper on; expiry
        // still happens lazily at every operation.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        st.reaper_running = true;
        drop(st);
        // The guard goes with the task's future: also a task dropped
        // before it ever ran (its runtime shut down first) hands expiry
        // back.
        handle.spawn(reap(ReaperGone(Arc::downgrade(&self.shared))));
    }
}

/// Expires leases when their deadlines pass, so that `Expired` events reach
/// watchers without anyone touching the store.
async fn reap(gone: ReaperGone) {
    let shared = &gone.0;
    loop {
        let Some(s) = shared.upgrade() else { return };
        let next = {
            let mut st = s.state.lock();
            st.expire_due();
            st.next_deadline()
        };
        let notify = s.reaper_wake.clone();
        let wake = notify.notified();
        // Hold only a weak reference while sleeping, so dropping the
        // backend ends the reaper.
        drop(s);
        match next {
            Some(deadline) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = wake => {}
                }
            }
            None => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = wake => {}
                }
            }
        }
    }
}

/// Marks the reaper gone when its task ends, or is dropped with its
/// runtime: operations then expire leases themselves again, and the next
/// grant starts another reaper.
struct ReaperGone(Weak<Shared>);

impl Drop for ReaperGone {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.state.lock().reaper_running = false;
        }
    }
}

impl StoreAccess for Shared {
    fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut st = self.state.lock();
        st.expire_unless_reaped();
        f(&mut st.store)
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn read(&self, key: Key) -> BoxFuture<'_, Result<Option<Record>>> {
        future::ready(Ok(self.read_now(&key))).boxed()
    }

    fn list(&self, prefix: String) -> BoxFuture<'_, Result<Listing>> {
        future::ready(Ok(self.shared.with_store(|store| store.list(&prefix)))).boxed()
    }

    fn write(&self, mut write: Write) -> BoxFuture<'_, Result<WriteOutcome>> {
        future::ready(self.write_now(&mut write)).boxed()
    }

    // Every operation completes under the store's lock: refs call these
    // directly, without the boxed futures.
    fn try_read(&self, key: &Key) -> Option<Result<Option<Record>>> {
        Some(Ok(self.read_now(key)))
    }

    fn try_write(&self, write: &mut Write) -> Option<Result<WriteOutcome>> {
        Some(self.write_now(write))
    }

    fn watch(&self, key: Key, since: Option<u64>) -> BoxFuture<'_, Result<WatchStream>> {
        future::ready(Ok(self.watch_now(key, since))).boxed()
    }

    fn watch_prefix(
        &self,
        prefix: String,
        since: Option<u64>,
    ) -> BoxFuture<'_, Result<PrefixStream>> {
        future::ready(Ok(store::watch_prefix(&self.shared, prefix, since))).boxed()
    }

    fn grant_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId>> {
        async move {
            if ttl.is_zero() {
                return Err(Error::Config("a lease TTL must be positive".into()));
            }
            self.ensure_reaper();
            let lease = self.shared.state.lock().grant(ttl, Instant::now());
            self.shared.reaper_wake.notify_one();
            Ok(lease)
        }
        .boxed()
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>> {
        let kept = self.shared.state.lock().keep_alive(lease, Instant::now());
        future::ready(kept).boxed()
    }

    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>> {
        let mut st = self.shared.state.lock();
        st.expire_due();
        st.revoke(lease);
        drop(st);
        future::ready(Ok(())).boxed()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures_util::StreamExt;

    use super::*;
    use crate::engine::{EventKind, FieldName, Op, WatchItem};

    fn put(key: &Key, v: u32) -> Write {
        let fields = vec![(FieldName::from("v"), Bytes::from(v.to_string()))];
        Write::new(key.clone(), Op::Put(fields))
    }

    #[tokio::test]
    async fn a_watcher_that_lags_gets_a_resync_then_live_events() {
        let store = MemoryBackend::with_limits(DEFAULT_MAX_WRITE_BYTES, 2);
        let key = Key::new("k");
        let mut watch = store.watch(key.clone(), None).await.unwrap();
        for v in 0..10 {
            store.write(put(&key, v)).await.unwrap();
        }
        let item = watch.next().await.unwrap().unwrap();
        let WatchItem::Resync(Some(record)) = item else {
            panic!("expected a resync, got {item:?}")
        };
        assert_eq!(record.field("v").unwrap().value, Bytes::from("9"));
        store.write(put(&key, 10)).await.unwrap();
        let item = watch.next().await.unwrap().unwrap();
        assert!(
            matches!(item, WatchItem::Event(ref e) if e.revision == record.mod_revision + 1),
            "{item:?} after {record:?}"
        );
    }

    #[tokio::test]
    async fn writes_over_the_limit_are_refused() {
        let store = MemoryBackend::with_limits(8, 16);
        let fields = vec![(FieldName::from("v"), Bytes::from(vec![0u8; 64]))];
        let err = store
            .write(Write::new(Key::new("k"), Op::Put(fields)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::ValueTooLarge { limit: 8, .. }),
            "{err}"
        );
        assert_eq!(store.revision(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn leases_expire_by_the_reaper_without_other_traffic() {
        let store = MemoryBackend::new();
        let lease = store.grant_lease(Duration::from_secs(10)).await.unwrap();
        let key = Key::new("leased");
        store
            .write(put(&key, 1).with_lease(Some(lease)))
            .await
            .unwrap();
        let mut watch = store.watch(key.clone(), None).await.unwrap();
        // Paused time: the reaper's sleep auto-advances the clock.
        let item = watch.next().await.unwrap().unwrap();
        assert!(
            matches!(item, WatchItem::Event(ref e) if e.kind == EventKind::Expired),
            "{item:?}"
        );
        assert!(store.read(key).await.unwrap().is_none());
    }

    /// A reaper dropped with its runtime leaves the backend expiring leases
    /// at each operation again, and the next grant starts another.
    #[test]
    fn leases_expire_after_the_reaper_s_runtime_is_gone() {
        let store = MemoryBackend::new();
        let key = Key::new("leased");
        // One thread: the reaper runs only when the test's future waits,
        // so no deadline passes between a grant and its write.
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("runtime")
        };
        runtime().block_on(async {
            let lease = store.grant_lease(Duration::from_millis(20)).await.unwrap();
            store
                .write(put(&key, 1).with_lease(Some(lease)))
                .await
                .unwrap();
        });
        // The runtime, and the reaper task with it, are gone. (Time is what
        // this test is about: the lease's deadline must pass.)
        std::thread::sleep(Duration::from_millis(50));
        assert!(store.try_read(&key).unwrap().unwrap().is_none());
        runtime().block_on(async {
            let mut watch = store.watch(key.clone(), None).await.unwrap();
            let lease = store.grant_lease(Duration::from_millis(20)).await.unwrap();
            store
                .write(put(&key, 2).with_lease(Some(lease)))
                .await
                .unwrap();
            let expired = async {
                loop {
                    match watch.next().await {
                        Some(Ok(WatchItem::Event(e))) if e.kind == EventKind::Expired => break,
                        Some(Ok(WatchItem::Event(_))) => {}
                        other => panic!("expected events, got {other:?}"),
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(30), expired)
                .await
                .expect("the new reaper expires the lease");
        });
    }
}
