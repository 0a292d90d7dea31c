//! What a backend provides to the conformance suite.

use std::sync::Arc;
use std::time::Duration;

use dref::engine::{Backend, Key, LeaseId, Record, WatchStream, Write, WriteOutcome};
use dref::{Codec, Context, MemoryBackend};
use futures_util::future::BoxFuture;

use crate::faults::FaultyBackend;

/// Hands out handles on one store, as seen from different nodes.
///
/// A harness is made fresh for every test case, so cases never see each
/// other's keys (a backend on a shared server uses a fresh namespace).
pub trait Harness: Send + Sync + 'static {
    /// A backend handle for a new node on this harness's store. Handles of
    /// a real cluster backend should be spread over its nodes.
    fn backend(&self) -> BoxFuture<'_, Arc<dyn Backend>>;

    /// Session TTL for contexts in tests: short enough that expiry tests are
    /// quick, long enough that a loaded machine does not expire live
    /// sessions.
    fn session_ttl(&self) -> Duration {
        Duration::from_millis(1500)
    }
}

/// A node of a test: its context and the fault switch wrapped around its
/// backend handle.
pub struct Node {
    /// The node's context.
    pub ctx: Context,
    /// Faults injected between this node and the store.
    pub faults: FaultyBackend,
}

impl Node {
    /// A new node on the harness's store with the default codec.
    pub async fn new(harness: &dyn Harness) -> Node {
        Node::with_codec(harness, Codec::Postcard).await
    }

    /// A new node using `codec`.
    pub async fn with_codec(harness: &dyn Harness, codec: Codec) -> Node {
        let faults = FaultyBackend::new(harness.backend().await);
        let ctx = Context::builder()
            .backend(faults.clone())
            .codec(codec)
            .session_ttl(harness.session_ttl())
            .build();
        Node { ctx, faults }
    }
}

/// The in-memory backend: every node shares one [`MemoryBackend`].
pub struct MemoryHarness {
    store: MemoryBackend,
    deferred: bool,
}

impl MemoryHarness {
    /// A harness on a fresh store, which answers at once as
    /// `Context::local()` does (refs use `try_read` and `try_write`).
    pub fn new() -> Self {
        MemoryHarness {
            store: MemoryBackend::new(),
            deferred: false,
        }
    }

    /// A harness on a fresh store reached only through the async forms of
    /// the contract, each write yielding once before it is applied, as a
    /// remote backend's would: concurrent updates of one ref then combine.
    pub fn deferred() -> Self {
        MemoryHarness {
            store: MemoryBackend::new(),
            deferred: true,
        }
    }
}

impl Default for MemoryHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness for MemoryHarness {
    fn backend(&self) -> BoxFuture<'_, Arc<dyn Backend>> {
        let backend: Arc<dyn Backend> = match self.deferred {
            true => Arc::new(Deferred(self.store.clone())),
            false => Arc::new(self.store.clone()),
        };
        Box::pin(async move { backend })
    }
}

/// An in-memory store that declines to answer at once and lets other tasks
/// run before each write.
struct Deferred(MemoryBackend);

impl Backend for Deferred {
    fn name(&self) -> &'static str {
        "memory (deferred)"
    }

    fn read(&self, key: Key) -> BoxFuture<'_, dref::Result<Option<Record>>> {
        self.0.read(key)
    }

    fn list(&self, prefix: String) -> BoxFuture<'_, dref::Result<dref::engine::Listing>> {
        self.0.list(prefix)
    }

    fn write(&self, write: Write) -> BoxFuture<'_, dref::Result<WriteOutcome>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            self.0.write(write).await
        })
    }

    fn watch(&self, key: Key, since: Option<u64>) -> BoxFuture<'_, dref::Result<WatchStream>> {
        self.0.watch(key, since)
    }

    fn watch_prefix(
        &self,
        prefix: String,
        since: Option<u64>,
    ) -> BoxFuture<'_, dref::Result<dref::engine::PrefixStream>> {
        self.0.watch_prefix(prefix, since)
    }

    fn grant_lease(&self, ttl: Duration) -> BoxFuture<'_, dref::Result<LeaseId>> {
        self.0.grant_lease(ttl)
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, dref::Result<()>> {
        self.0.keep_alive(lease)
    }

    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, dref::Result<()>> {
        self.0.revoke_lease(lease)
    }
}
