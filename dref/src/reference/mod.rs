//! The ref layer: typed values over the engine contract.
//!
//! The files, from the bottom up (each uses only those above it, but for
//! the one knot below):
//!
//! - `value.rs`: how a Rust type maps onto the fields of a record
//!   ([`Value`], [`FieldValue`]).
//! - `change.rs`: what change streams carry ([`Change`]), and what the
//!   watcher publishes to a ref's local subscribers.
//! - `combiner.rs`: the queue of one target's concurrent updates (the
//!   whole value, or one field).
//! - `shared.rs`: the state the clones of one ref share (its cache of the
//!   latest value, the encoding of its writes, the hub of its subscribers,
//!   its combiners) and the only calls into the
//!   [`Backend`](crate::engine::Backend).
//! - `update.rs`: the one optimistic update loop of refs and fields, which
//!   combines concurrent updates of one target into one write.
//! - `watcher.rs`: the task that follows the ref's watch and feeds the
//!   cache and the hub.
//! - `changes.rs`: the subscribers' streams, read from the hub.
//! - `handle.rs` and `field.rs`: the public handles, [`DRef`] and
//!   [`FieldRef`].
//!
//! Writes flow handle → update loop → shared state → backend; events flow
//! backend → watcher → shared state → subscribers. The one knot is in the
//! types: [`Value::fields`] is handed a [`RefCore`], an opaque handle on the
//! shared state, so that generated code can build field handles.

mod change;
mod changes;
mod combiner;
mod field;
mod handle;
mod shared;
mod update;
mod value;
mod watcher;

pub use change::{Change, ChangeKind};
pub use changes::{Changes, Subscription, Values};
pub use field::{FieldChanges, FieldRef};
pub use handle::DRef;
pub use value::{FieldValue, NoFields, RefCore, Value};

/// Helpers for the code `#[distributed]` generates.
pub(crate) mod generated {
    pub use super::field::{
        assert_distributed, assert_field_value, decode_field, field_ref, no_such_field,
    };
}
