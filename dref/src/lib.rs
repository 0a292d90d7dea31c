//! # dref: typed state shared across a cluster
//!
//! dref lets services share typed state as if it were a local `Ref`: read
//! it, set it, update it atomically, subscribe to its changes, and take
//! cluster-wide locks and leadership. One API runs on an in-memory store
//! (this crate), on Redis and on an embedded Raft cluster (`dref-backends`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> dref::Result<()> {
//! use dref::{Context, ManualId};
//!
//! let ctx = Context::local();
//! let users = ctx.make(ManualId::<i64>::new("active-users"), 0).await?;
//! users.update(|n| n + 1).await?;               // atomic across the cluster
//! assert_eq!(users.get().await?, 1);
//!
//! let report = ctx.lock("daily-report", async { "done" }).await?;
//! assert_eq!(report, "done");
//! # Ok(()) }
//! ```
//!
//! The semantics every backend provides are fixed by the
//! [engine contract](engine).

// Feature badges on docs.rs, which builds the docs with nightly and
// `--cfg docsrs` (see `[package.metadata.docs.rs]`).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod ambient;
pub mod codec;
mod context;
mod detach;
pub mod engine;
mod error;
mod follow;
mod id;
pub mod layout;
mod leader;
mod lock;
pub mod memory;
pub mod metrics;
mod random;
mod reference;
mod session;

pub use codec::Codec;
pub use context::{
    Context, ContextBuilder, DEFAULT_CHANGE_BUFFER, DEFAULT_MAX_VALUE_BYTES, DEFAULT_SESSION_TTL,
};
pub use error::{Error, Result};
pub use id::{AutoId, ManualId, RefId};
pub use leader::{Leader, Leadership, Observe};
pub use lock::{current_fencing_token, FencingToken, LockGuard};
pub use memory::MemoryBackend;
pub use reference::{
    Change, ChangeKind, Changes, DRef, FieldChanges, FieldRef, FieldValue, NoFields, RefCore,
    Subscription, Value, Values,
};

/// Makes a struct with named fields a distributed value stored field by
/// field.
///
/// For
///
/// ```
/// # use dref::distributed;
/// #[distributed]                  // or #[distributed(id = "flags")]
/// #[derive(Clone, Debug, PartialEq)]
/// struct Flags {
///     beta_feature: bool,
///     rollout: u8,
/// }
/// ```
///
/// it generates (with the struct's visibility and generics):
/// - an implementation of [`Value`] with one stored field per struct field,
///   so that a write that changes one field sends, stores and reports that
///   field only, and a type fingerprint made of the struct's name and its
///   stored fields' names and types;
/// - `Flags::id(name) -> ManualId<Flags>` and, with `id = "..."`,
///   `Flags::default_id()`;
/// - `enum FlagsChange { BetaFeature(bool), Rollout(u8) }`, the items of
///   [`DRef::changes`] (`Change { revision, kind: ChangeKind::Updated(..) }`,
///   one per changed field); it implements `Clone`, `PartialEq`, `Eq` and
///   `Debug` when the field types do;
/// - `struct FlagsFields`, to which `DRef<Flags>` dereferences: its methods
///   `flags.beta_feature()` and `flags.rollout()` return [`FieldRef`]
///   handles (`get`, `peek`, `set`, `update`, `changes`, ...), whose writes
///   are conditional on that field only.
///
/// Stored field types must implement [`FieldValue`] (`Serialize +
/// DeserializeOwned + Clone + PartialEq + Send + Sync + 'static`);
/// collections, options and nested serde structs are fine. The struct
/// itself must be `Clone + Send + Sync + 'static` and must **not** derive
/// `Serialize`/`Deserialize` (that would make it a plain one-field value).
///
/// Arguments: `id = "name"` (default id), `change = "Name"` (name of the
/// change enum), `fields = "Name"` (name of the handles struct). Field
/// attributes: `#[dref(rename = "stored")]` (the stored name, so that a
/// Rust rename does not break a running cluster) and `#[dref(skip)]` (a
/// local-only field, not stored, restored with `Default`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dref::Result<()> {
/// use dref::{distributed, ChangeKind, Context};
/// use futures_util::StreamExt;
///
/// #[distributed(id = "limits", change = "LimitEvent")]
/// #[derive(Clone, Debug, PartialEq)]
/// struct Limits<T> {
///     #[dref(rename = "max")]
///     maximum: T,
///     allowed: Vec<String>,
///     #[dref(skip)]
///     local_hits: u64,
/// }
///
/// let ctx = Context::local();
/// let limits = ctx
///     .make(Limits::default_id(), Limits { maximum: 10u32, allowed: vec![], local_hits: 0 })
///     .await?;
/// let mut events = limits.changes();
/// limits.maximum().update(|m| m * 2).await?;
/// let event = events.next().await.unwrap()?;
/// assert!(matches!(event.kind, ChangeKind::Updated(LimitEvent::Maximum(20))));
/// # Ok(()) }
/// ```
pub use dref_macros::distributed;

/// Runs the body of an `async fn` under a cluster-wide lock, like
/// [`Context::lock`].
///
/// The function must return `Result<T, E>` with `E: From<dref::Error>`:
/// a busy lock (`try`), a timeout, a missing context and a lost lock
/// ([`Error::LockLost`], after which the body is cancelled) are returned as
/// `Err(E::from(error))`. The signature is kept as written; the body sees
/// the lock's [`current_fencing_token`]. Works on free functions, methods
/// (`&self`, `self`) and `async fn` in traits and their impls.
///
/// `#[dref::lock("name", options...)]`, where the options are:
/// - `ctx = expr`: the [`Context`] to lock through (a `Context`, a
///   reference, or an `Arc`/`Box` of one). Without it, a parameter of type
///   `&Context` is used, else the ambient context ([`Context::current`]: a
///   [`Context::scope`] around the call, else [`Context::set_default`]).
/// - `timeout = "5s"` (units `ms`, `s`, `m`, `h`, combinable as `"1m30s"`),
///   or `timeout = <Duration expression>`: fail with [`Error::Timeout`] if
///   the lock is not had in time ([`Context::lock_timeout`]).
/// - `try`: fail with [`Error::LockBusy`] at once if the lock is held
///   ([`Context::try_lock`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dref::Result<()> {
/// use dref::{current_fencing_token, Context};
///
/// struct Reports {
///     ctx: Context,
/// }
///
/// impl Reports {
///     #[dref::lock("daily-report", ctx = self.ctx, timeout = "5s")]
///     async fn daily(&self) -> dref::Result<u64> {
///         let token = current_fencing_token().expect("inside the lock");
///         Ok(token.0) // hand the token to the resources the report writes
///     }
/// }
///
/// #[dref::lock("cleanup", try)]
/// async fn cleanup(ctx: &Context) -> dref::Result<()> {
///     Ok(())
/// }
///
/// let reports = Reports { ctx: Context::local() };
/// assert!(reports.daily().await? > 0);
/// cleanup(&reports.ctx).await?;
/// # Ok(()) }
/// ```
pub use dref_macros::lock;

/// Not public API: items used by code that dref's macros generate.
#[doc(hidden)]
pub mod __private {
    pub use crate::codec::{Codec, CodecError};
    pub use crate::reference::Value;
    pub use std::borrow::Cow;

    pub use crate::ambient::{context_of, locked, ContextSource, LockMode};
    pub use crate::context::Context;
    pub use crate::error::{Error, Result};
    pub use crate::id::ManualId;
    pub use crate::reference::generated::{
        assert_distributed, assert_field_value, decode_field, field_ref, no_such_field,
    };
    pub use crate::reference::{FieldRef, FieldValue, RefCore};
}
