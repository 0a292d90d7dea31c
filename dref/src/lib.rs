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

mod changes;
pub mod codec;
mod context;
pub mod engine;
mod error;
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
pub use id::{AutoId, ManualId, RefId};
pub use leader::{Leader, Leadership, Observe};
pub use lock::{current_fencing_token, FencingToken, LockGuard};
pub use memory::MemoryBackend;
pub use reference::DRef;
pub use value::Value;

/// Not public API: items used by code that dref's macros generate.
#[doc(hidden)]
pub mod __private {
    pub use crate::codec::{Codec, CodecError};
    pub use crate::value::Value;
    pub use std::borrow::Cow;
}
