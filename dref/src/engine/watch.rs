//! Watch events of the engine contract.

use std::pin::Pin;

use bytes::Bytes;
use futures_core::Stream;

use super::record::{Field, FieldName, Key, LeaseId, Listing, Record};
use crate::Result;

/// A committed change to one key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Event {
    /// Store revision of the commit.
    pub revision: u64,
    /// What happened.
    pub kind: EventKind,
}

/// What a committed change did to a key.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum EventKind {
    /// The record was created or written.
    Put {
        /// Version after the write.
        version: u64,
        /// Revision that created the record (equals the event revision when
        /// this write created it).
        create_revision: u64,
        /// Fields whose bytes changed (or were added); their new
        /// `mod_revision` is the event revision.
        changed: Vec<(FieldName, Bytes)>,
        /// Fields removed by a `Put` that no longer lists them.
        removed: Vec<FieldName>,
        /// Lease the record is now attached to.
        lease: Option<LeaseId>,
    },
    /// The record was deleted by a write.
    Deleted,
    /// The record was deleted because its lease expired or was revoked.
    Expired,
}

/// An item of a watch stream.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum WatchItem {
    /// A committed event, in revision order.
    Event(Event),
    /// The watcher could not be given every event (it fell behind, or the
    /// backend reconnected): here is the record as it is now. Events that
    /// follow have revisions above everything this snapshot reflects.
    Resync(Option<Record>),
}

/// A stream of watch items for one key. Ends only when the backend shuts
/// down; an `Err` item is followed by the end of the stream.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchItem>> + Send>>;

/// An item of a prefix watch stream.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum PrefixItem {
    /// A committed event of a key under the prefix. Events come in commit
    /// order over all the keys (the records one lease expiry deletes may
    /// share a revision).
    Event(Key, Event),
    /// The watcher could not be given every event: here are the records
    /// under the prefix as they are now (keys missing from it are absent).
    /// Events that follow have revisions above the listing's.
    Resync(Listing),
}

/// A stream of watch items for every key under a prefix. Ends only when the
/// backend shuts down; an `Err` item is followed by the end of the stream.
pub type PrefixStream = Pin<Box<dyn Stream<Item = Result<PrefixItem>> + Send>>;

/// Applies one event to a locally kept copy of a record (`None` = absent).
///
/// Watchers that keep their own copy (every `DRef` does) use this so that
/// all backends share one definition of how events change records.
pub fn apply_event(record: &mut Option<Record>, event: &Event) {
    match &event.kind {
        EventKind::Put {
            version,
            create_revision,
            changed,
            removed,
            lease,
        } => {
            let rec = record.get_or_insert_with(|| Record {
                fields: Vec::new(),
                version: 0,
                create_revision: *create_revision,
                mod_revision: 0,
                lease: None,
            });
            if rec.create_revision != *create_revision {
                rec.fields.clear();
            }
            rec.fields.retain(|f| !removed.contains(&f.name));
            for (name, value) in changed {
                match rec.fields.iter_mut().find(|f| f.name == *name) {
                    Some(field) => {
                        field.value = value.clone();
                        field.mod_revision = event.revision;
                    }
                    None => rec.fields.push(Field {
                        name: name.clone(),
                        value: value.clone(),
                        mod_revision: event.revision,
                    }),
                }
            }
            rec.version = *version;
            rec.create_revision = *create_revision;
            rec.mod_revision = event.revision;
            rec.lease = *lease;
        }
        EventKind::Deleted | EventKind::Expired => *record = None,
    }
}
