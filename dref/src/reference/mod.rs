//! The ref layer: typed values over the engine contract.
//!
//! The files, in the direction their dependencies run:
//!
//! - `value.rs`: how a Rust type maps onto the fields of a record
//!   ([`Value`], [`FieldValue`]).
//! - `handle.rs` and `field.rs`: the public handles, [`DRef`] and
//!   [`FieldRef`]. They encode and decode through the shared state and send
//!   every update through the update loop.
//! - `update.rs`: the one optimistic update loop of refs and fields, where
//!   concurrent updates of one target are combined into one write.
//! - `shared.rs`: the state the clones of one ref share (its cache of the
//!   latest value, the encoding of its writes, the hub of its subscribers)
//!   and the only calls into the [`Backend`](crate::engine::Backend).
//! - `watcher.rs`: the task that follows the ref's watch and feeds the
//!   cache and the hub.
//! - `changes.rs`: the subscribers' streams, reading from the hub.
//!
//! Writes flow handle → update loop → shared state → backend; events flow
//! backend → watcher → shared state → subscribers. The one knot is in the
//! types: [`Value::fields`] is handed a [`RefCore`], an opaque handle on the
//! shared state, so that generated code can build field handles.

mod changes;
mod field;
mod handle;
mod shared;
mod update;
mod value;
mod watcher;

pub use changes::{Change, ChangeKind, Changes, Subscription, Values};
pub use field::{FieldChanges, FieldRef};
pub use handle::DRef;
pub use value::{FieldValue, NoFields, RefCore, Value};

/// Helpers for the code `#[distributed]` generates.
pub(crate) mod generated {
    pub use super::field::{
        assert_distributed, assert_field_value, decode_field, field_ref, no_such_field,
    };
}
