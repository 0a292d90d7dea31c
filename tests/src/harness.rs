//! What a backend provides to the conformance suite.

use std::sync::Arc;
use std::time::Duration;

use dref::engine::Backend;
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

    /// When `Some`, nodes' contexts are built on this in-memory store
    /// itself, which refs call directly (the memory backend's fast path),
    /// instead of on the fault-injecting wrapper: cases that inject faults
    /// cannot run on such a harness.
    fn direct_memory(&self) -> Option<MemoryBackend> {
        None
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
        let builder = match harness.direct_memory() {
            Some(store) => Context::builder().backend(store),
            None => Context::builder().backend(faults.clone()),
        };
        let ctx = builder
            .codec(codec)
            .session_ttl(harness.session_ttl())
            .build();
        Node { ctx, faults }
    }
}

/// The in-memory backend: every node shares one [`MemoryBackend`].
pub struct MemoryHarness {
    store: MemoryBackend,
    direct: bool,
}

impl MemoryHarness {
    /// A harness on a fresh store, reached through the `Backend` trait
    /// (and the fault-injecting wrapper).
    pub fn new() -> Self {
        MemoryHarness {
            store: MemoryBackend::new(),
            direct: false,
        }
    }

    /// A harness whose contexts call the store directly, as
    /// `Context::local()` does (see [`Harness::direct_memory`]).
    pub fn direct() -> Self {
        MemoryHarness {
            store: MemoryBackend::new(),
            direct: true,
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
        let backend: Arc<dyn Backend> = Arc::new(self.store.clone());
        Box::pin(async move { backend })
    }

    fn direct_memory(&self) -> Option<MemoryBackend> {
        self.direct.then(|| self.store.clone())
    }
}
