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

mod ambient;
mod changes;
pub mod codec;
mod context;
pub mod engine;
mod error;
mod field;
mod id;
mod leader;
mod lock;
pub mod memory;
mod reference;
mod session;
mod value;

pub use changes::{Change, ChangeKind, Changes, Subscription, Values};
pub use codec::Codec;
pub use context::{
    Context, ContextBuilder, DEFAULT_CHANGE_BUFFER, DEFAULT_MAX_VALUE_BYTES, DEFAULT_SESSION_TTL,
};
pub use error::{Error, Result};
pub use field::{FieldChanges, FieldRef, FieldValue, NoFields, RefCore};
pub use id::{AutoId, ManualId, RefId};
pub use leader::{Leader, Leadership, Observe};
pub use lock::{current_fencing_token, FencingToken, LockGuard};
pub use memory::MemoryBackend;
pub use reference::DRef;
pub use value::Value;

/// Makes a struct with named fields a distributed value stored field by
/// field: field-level writes and change events, a typed id constructor, a
/// change enum and per-field handles. See [`FieldRef`] and the crate's
/// README for the generated items and the attribute's options.
pub use dref_macros::distributed;

/// Runs the body of an `async fn` returning `Result<T, E>` (with
/// `E: From<dref::Error>`) under the cluster-wide lock of the given name,
/// like [`Context::lock`]. Options: `ctx = expr`, `timeout = "5s"`, `try`.
/// Without `ctx =`, a `&Context` parameter or else the ambient context
/// ([`Context::current`]) is used.
pub use dref_macros::lock;

/// Not public API: items used by code that dref's macros generate.
#[doc(hidden)]
pub mod __private {
    pub use crate::codec::{Codec, CodecError};
    pub use crate::value::Value;
    pub use std::borrow::Cow;

    pub use crate::ambient::{context_of, locked, ContextSource, LockMode};
    pub use crate::context::Context;
    pub use crate::error::{Error, Result};
    pub use crate::field::{
        assert_distributed, assert_field_value, decode_field, field_ref, no_such_field, FieldRef,
        FieldValue, RefCore,
    };
    pub use crate::id::ManualId;
}
