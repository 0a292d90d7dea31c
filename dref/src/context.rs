//! The context: one node's connection to a store, its codec and session.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::Codec;
use crate::detach::detach;
use crate::engine::Backend;
use crate::memory::MemoryBackend;
use crate::metrics::RefMetrics;
use crate::session::{Session, Sessions};
use crate::Result;

/// Default TTL of a context's session lease.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(5);

/// Default limit on the encoded size of one value.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;

/// Default number of commits buffered per ref for slow change subscribers
/// before they are resynced.
pub const DEFAULT_CHANGE_BUFFER: usize = 128;

/// One node's handle on a store: the backend, the codec, the session lease
/// and the node's identity. Cheap to clone; clones share everything.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dref::Result<()> {
/// use dref::{Context, ManualId};
///
/// let ctx = Context::local();
/// let users = ctx.make(ManualId::<i64>::new("active-users"), 0).await?;
/// users.update(|n| n + 1).await?;
/// assert_eq!(users.get().await?, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Context {
    pub(crate) inner: Arc<ContextInner>,
}

pub(crate) struct ContextInner {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) codec: Codec,
    pub(crate) node_id: String,
    pub(crate) max_value_bytes: usize,
    pub(crate) change_buffer: usize,
    /// Whether concurrent updates of one target share writes.
    pub(crate) combine_updates: bool,
    pub(crate) metrics: RefMetrics,
    pub(crate) sessions: Sessions,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("backend", &self.inner.backend.name())
            .field("codec", &self.inner.codec)
            .field("node_id", &self.inner.node_id)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context on a fresh in-memory store, with default settings: for
    /// tests and single-process programs.
    pub fn local() -> Context {
        Context::builder().build()
    }

    /// A builder for a context with custom settings.
    pub fn builder() -> ContextBuilder {
        ContextBuilder::default()
    }

    /// The backend this context talks to.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The codec values are encoded with.
    pub fn codec(&self) -> Codec {
        self.inner.codec
    }

    /// This node's identity, recorded in the locks and leadership it holds.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The TTL of the session lease.
    pub fn session_ttl(&self) -> Duration {
        self.inner.sessions.ttl()
    }

    pub(crate) async fn session(&self) -> Result<Arc<Session>> {
        self.inner.sessions.current(&self.inner.backend).await
    }

    /// Ends the session now: its lease is revoked, so every lock and
    /// leadership this context holds is released at once (their holders see
    /// [`Error::LockLost`](crate::Error::LockLost)). The context stays
    /// usable; a later lock grants a new session.
    pub async fn shutdown(&self) -> Result<()> {
        if let Some(session) = self.inner.sessions.take().await {
            self.inner.backend.revoke_lease(session.lease()).await?;
        }
        Ok(())
    }
}

impl Drop for ContextInner {
    fn drop(&mut self) {
        // Release locks and leadership promptly instead of waiting for the
        // TTL, when there is a runtime to do it on.
        let Some(session) = self.sessions.existing() else {
            return;
        };
        let backend = self.backend.clone();
        detach(
            "revoking the session lease of a dropped context",
            async move { backend.revoke_lease(session.lease()).await },
        );
    }
}

/// Builds a [`Context`]. Setters consume and return the builder.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dref::Result<()> {
/// use std::time::Duration;
/// use dref::{Context, MemoryBackend};
///
/// let store = MemoryBackend::new();
/// let node_a = Context::builder()
///     .backend(store.clone())
///     .node_id("a")
///     .session_ttl(Duration::from_secs(2))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct ContextBuilder {
    backend: Option<Arc<dyn Backend>>,
    codec: Codec,
    node_id: Option<String>,
    session_ttl: Option<Duration>,
    max_value_bytes: Option<usize>,
    change_buffer: Option<usize>,
    separate_updates: bool,
}

impl ContextBuilder {
    /// The store to use (default: a new in-memory store).
    pub fn backend(self, backend: impl Backend) -> Self {
        self.backend_arc(Arc::new(backend))
    }

    /// The store to use, already shared.
    pub fn backend_arc(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// The codec for values (default: postcard).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// This node's identity (default: a random one).
    pub fn node_id(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = Some(node_id.into());
        self
    }

    /// TTL of the session lease (default [`DEFAULT_SESSION_TTL`]). Locks of a
    /// node that dies are released, and leadership fails over, within it.
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = Some(ttl);
        self
    }

    /// Limit on one encoded value (default [`DEFAULT_MAX_VALUE_BYTES`]).
    pub fn max_value_bytes(mut self, limit: usize) -> Self {
        self.max_value_bytes = Some(limit);
        self
    }

    /// Commits buffered per ref for slow change subscribers before they are
    /// resynced (default [`DEFAULT_CHANGE_BUFFER`]).
    pub fn change_buffer(mut self, commits: usize) -> Self {
        self.change_buffer = Some(commits);
        self
    }

    /// Whether concurrent updates of one ref (or of one field) through
    /// this context are combined (default `true`): while one update's
    /// write is in flight, later ones queue, and the next write carries
    /// all their results (see [`DRef`](crate::DRef)). With `false`, every
    /// update is its own conditional write, retried on conflict, so under
    /// contention most writes are rejected and retried; the setting is
    /// there to compare the two. Results are linearizable either way.
    pub fn combine_updates(mut self, combine: bool) -> Self {
        self.separate_updates = !combine;
        self
    }

    /// Builds the context without contacting the store; the session lease
    /// is granted when first needed.
    pub fn build(self) -> Context {
        let backend = self
            .backend
            .unwrap_or_else(|| Arc::new(MemoryBackend::new()));
        let metrics = RefMetrics::new(backend.name());
        Context {
            inner: Arc::new(ContextInner {
                metrics,
                backend,
                codec: self.codec,
                node_id: self.node_id.unwrap_or_else(random_node_id),
                max_value_bytes: self.max_value_bytes.unwrap_or(DEFAULT_MAX_VALUE_BYTES),
                change_buffer: self.change_buffer.unwrap_or(DEFAULT_CHANGE_BUFFER).max(1),
                combine_updates: !self.separate_updates,
                sessions: Sessions::new(self.session_ttl.unwrap_or(DEFAULT_SESSION_TTL)),
            }),
        }
    }

    /// Builds the context and grants its session lease, proving that the
    /// store is reachable.
    pub async fn connect(self) -> Result<Context> {
        if self
            .session_ttl
            .is_some_and(|t| t < Duration::from_millis(10))
        {
            return Err(crate::Error::Config(
                "the session TTL must be at least 10ms".into(),
            ));
        }
        let ctx = self.build();
        ctx.session().await?;
        Ok(ctx)
    }
}

/// A node id that no other process (nor this one after a restart) draws.
fn random_node_id() -> String {
    format!("node-{:016x}", crate::random::random_u128() as u64)
}
