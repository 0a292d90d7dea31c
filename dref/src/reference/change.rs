//! What change streams carry: the public [`Change`] items, and what a
//! ref's watcher publishes to its local subscribers.

use std::fmt;

use super::value::Value;
use crate::Error;

/// One committed change seen by [`DRef::changes`](crate::DRef::changes).
pub struct Change<T: Value> {
    /// Store revision of the commit (for a resync: the revision the current
    /// value is known at).
    pub revision: u64,
    /// What changed.
    pub kind: ChangeKind<T>,
}

/// What a [`Change`] did.
#[non_exhaustive]
pub enum ChangeKind<T: Value> {
    /// A field was written: for `#[distributed]` structs one event per
    /// changed field (its `…Change` enum), otherwise the whole new value.
    Updated(T::Change),
    /// The record was deleted.
    Deleted,
    /// The record was deleted because its lease ended.
    Expired,
    /// This subscriber fell behind, or the backend reconnected: the
    /// intermediate changes are summarised by the current value.
    Resync(Option<T>),
}

impl<T: Value> Clone for ChangeKind<T> {
    fn clone(&self) -> Self {
        match self {
            ChangeKind::Updated(c) => ChangeKind::Updated(c.clone()),
            ChangeKind::Deleted => ChangeKind::Deleted,
            ChangeKind::Expired => ChangeKind::Expired,
            ChangeKind::Resync(v) => ChangeKind::Resync(v.clone()),
        }
    }
}

impl<T: Value> Clone for Change<T> {
    fn clone(&self) -> Self {
        Change {
            revision: self.revision,
            kind: self.kind.clone(),
        }
    }
}

impl<T: Value + fmt::Debug> fmt::Debug for ChangeKind<T>
where
    T::Change: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangeKind::Updated(c) => f.debug_tuple("Updated").field(c).finish(),
            ChangeKind::Deleted => f.write_str("Deleted"),
            ChangeKind::Expired => f.write_str("Expired"),
            ChangeKind::Resync(v) => f.debug_tuple("Resync").field(v).finish(),
        }
    }
}

impl<T: Value + fmt::Debug> fmt::Debug for Change<T>
where
    T::Change: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Change")
            .field("revision", &self.revision)
            .field("kind", &self.kind)
            .finish()
    }
}

impl<T: Value + PartialEq> PartialEq for ChangeKind<T>
where
    T::Change: PartialEq,
{
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ChangeKind::Updated(a), ChangeKind::Updated(b)) => a == b,
            (ChangeKind::Deleted, ChangeKind::Deleted) => true,
            (ChangeKind::Expired, ChangeKind::Expired) => true,
            (ChangeKind::Resync(a), ChangeKind::Resync(b)) => a == b,
            _ => false,
        }
    }
}

/// What a ref's watcher publishes to its local subscribers.
pub(crate) enum HubItem<T: Value> {
    Commit {
        revision: u64,
        changes: Vec<ChangeKind<T>>,
        value: Option<T>,
    },
    Resync {
        revision: u64,
        value: Option<T>,
    },
    Error(Error),
}
