//! A deterministic, in-process implementation of the contract's data model:
//! records, revisions, leases and per-key watchers, without clocks or I/O.
//!
//! Backends that keep the store in their own process build on it: the
//! memory backend adds lease deadlines around one [`Store`]; the Raft
//! backend applies its replicated log to one [`Store`] per node (every node
//! applies the same commands in the same order, so every node holds the same
//! records at the same revisions). Lease *deadlines* are deliberately not
//! part of the store: a lease here has a TTL and a set of records, and ends
//! only when [`Store::revoke`] is called.

mod prefix;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;

use super::{
    Condition, Event, EventKind, Field, FieldName, Key, KeyHashBuilder, LeaseId, Listing, Op,
    PrefixItem, PrefixStream, Record, WatchItem, WatchStream, Write, WriteOutcome,
};
use crate::{Error, Result};
use prefix::{Polled, PrefixFeeds};

/// What a key's watchers receive.
#[derive(Clone, Debug)]
enum Notice {
    Event(Event),
    /// A `Put` event, kept in a form that needs no allocation when at most
    /// one field changed (the common case); watchers turn it into an
    /// [`Event`].
    Put {
        revision: u64,
        version: u64,
        create_revision: u64,
        changed: Changed,
        removed: Vec<FieldName>,
        lease: Option<LeaseId>,
    },
    /// A `Put` that changed one field, at `position` in the record, whose
    /// bytes are still those the record holds: a reader copies them from
    /// the record. Only the newest notice of a key's feed (never a prefix
    /// feed's) is of this kind. Before anything changes the record, it
    /// becomes a [`Notice::Put`] with a copy of the bytes
    /// ([`settle_newest`]), and when the next write overwrites that field,
    /// the bytes it replaces move into the notice instead of being
    /// dropped. So a change that nobody reads before the next one costs
    /// no copy of its bytes, and the record holds the only handle on the
    /// bytes that are current.
    PutCurrent {
        revision: u64,
        version: u64,
        create_revision: u64,
        position: usize,
        lease: Option<LeaseId>,
    },
    /// The whole store was replaced ([`Store::restore`]): watchers resync.
    Reset,
}

impl Notice {
    /// The event a watcher receives, given the key's record (`None` for a
    /// reset, and for a notice that reads its bytes from a record that
    /// has none: its reader resyncs).
    fn into_event(self, record: Option<&Record>) -> Option<Event> {
        match self {
            Notice::Event(event) => Some(event),
            Notice::Put {
                revision,
                version,
                create_revision,
                changed,
                removed,
                lease,
            } => Some(Event {
                revision,
                kind: EventKind::Put {
                    version,
                    create_revision,
                    changed: changed.into_vec(),
                    removed,
                    lease,
                },
            }),
            Notice::PutCurrent { position, .. } => {
                let field = record?.fields.get(position)?;
                let (name, value) = (field.name.clone(), field.value.clone());
                self.settled(name, value).into_event(None)
            }
            Notice::Reset => None,
        }
    }

    /// The position of the record field whose bytes this notice reads
    /// from the record (see [`Notice::PutCurrent`]).
    fn current(&self) -> Option<usize> {
        match self {
            Notice::PutCurrent { position, .. } => Some(*position),
            _ => None,
        }
    }

    /// A [`Notice::PutCurrent`] as the [`Notice::Put`] that carries the
    /// field's `name` and `value`.
    fn settled(self, name: FieldName, value: Bytes) -> Notice {
        match self {
            Notice::PutCurrent {
                revision,
                version,
                create_revision,
                lease,
                ..
            } => Notice::Put {
                revision,
                version,
                create_revision,
                changed: Changed::One(name, value),
                removed: Vec::new(),
                lease,
            },
            other => other,
        }
    }

    /// Gives a notice that reads its bytes from `record` (see
    /// [`Notice::PutCurrent`]) a copy of them, before the record changes.
    /// Should the record lack them, the notice becomes a reset: its
    /// readers resync rather than miss the change.
    fn settle(&mut self, record: Option<&Record>) {
        let Some(position) = self.current() else {
            return;
        };
        match record.and_then(|r| r.fields.get(position)) {
            Some(field) => self.settle_with(field.name.clone(), field.value.clone()),
            None => *self = Notice::Reset,
        }
    }

    /// Gives a notice that reads its bytes from the record (see
    /// [`Notice::PutCurrent`]) the field's name and bytes, moved out of
    /// a record that is about to drop them.
    fn settle_with(&mut self, name: FieldName, value: Bytes) {
        let notice = std::mem::replace(self, Notice::Reset);
        *self = notice.settled(name, value);
    }
}

/// Before the record of a key changes: the newest notice of its feed
/// takes the bytes it still reads from the record (see
/// [`Notice::PutCurrent`]).
fn settle_newest(feed: &mut Option<Feed>, record: Option<&Record>) {
    if let Some(notice) = feed.as_mut().and_then(|f| f.notices.back_mut()) {
        notice.settle(record);
    }
}

/// The changed fields of a `Put` event: the bytes are shared with the
/// record, and one field is held without a `Vec`.
#[derive(Clone, Debug, Default)]
enum Changed {
    #[default]
    None,
    One(FieldName, Bytes),
    Many(Vec<(FieldName, Bytes)>),
}

impl Changed {
    fn push(&mut self, name: FieldName, value: Bytes) {
        match self {
            Changed::None => *self = Changed::One(name, value),
            Changed::One(..) => {
                if let Changed::One(n, v) = std::mem::take(self) {
                    *self = Changed::Many(vec![(n, v), (name, value)]);
                }
            }
            Changed::Many(all) => all.push((name, value)),
        }
    }

    fn into_vec(self) -> Vec<(FieldName, Bytes)> {
        match self {
            Changed::None => Vec::new(),
            Changed::One(name, value) => vec![(name, value)],
            Changed::Many(all) => all,
        }
    }
}

/// The positions in a record of the fields a write changed; one needs no
/// `Vec`.
#[derive(Default)]
enum Positions {
    #[default]
    None,
    One(usize),
    Many(Vec<usize>),
}

impl Positions {
    fn push(&mut self, position: usize) {
        match self {
            Positions::None => *self = Positions::One(position),
            Positions::One(first) => *self = Positions::Many(vec![*first, position]),
            Positions::Many(all) => all.push(position),
        }
    }

    fn as_slice(&self) -> &[usize] {
        match self {
            Positions::None => &[],
            Positions::One(position) => std::slice::from_ref(position),
            Positions::Many(all) => all,
        }
    }

    /// The changed fields of `record` at these positions, with copies of
    /// their bytes.
    fn changed(&self, record: &Record) -> Changed {
        let mut changed = Changed::None;
        for field in self.as_slice().iter().filter_map(|p| record.fields.get(*p)) {
            changed.push(field.name.clone(), field.value.clone());
        }
        changed
    }
}

impl Notice {
    /// The revision of an event (`None` for a reset).
    fn revision(&self) -> Option<u64> {
        match self {
            Notice::Event(event) => Some(event.revision),
            Notice::Put { revision, .. } | Notice::PutCurrent { revision, .. } => Some(*revision),
            Notice::Reset => None,
        }
    }
}

/// Everything the store keeps for one key.
#[derive(Default)]
struct Slot {
    record: Option<Record>,
    feed: Option<Feed>,
}

impl Slot {
    fn is_unused(&self) -> bool {
        self.record.is_none() && self.feed.is_none()
    }
}

/// The latest notices of a watched key, which its watch streams read under
/// the store's lock (so that a notice and the commit it describes are seen
/// together).
struct Feed {
    /// Sequence number of the first notice in `notices`.
    first: u64,
    /// At most `capacity` notices; older ones are dropped, and a stream that
    /// had not read them resyncs.
    notices: VecDeque<Notice>,
    capacity: usize,
    /// The streams of the key (those dropped are forgotten from time to
    /// time): where each reads next, and the wakers of those waiting.
    readers: Vec<Reader>,
    /// Held by every stream of the key: when only the feed holds it, nobody
    /// listens and the feed is dropped.
    streams: Arc<()>,
}

/// One stream of a key, as its feed knows it.
struct Reader {
    /// The stream's [`Cursor::alive`]: gone once the stream is dropped.
    alive: Weak<()>,
    /// The sequence number the stream reads next, as of its last poll
    /// (streams move only when polled, under the store's lock).
    next: u64,
    /// Set while the stream waits for the next notice.
    waker: Option<Waker>,
}

impl Feed {
    /// The sequence number of the next notice.
    fn end(&self) -> u64 {
        self.first + self.notices.len() as u64
    }

    /// Whether some stream will read the notices in the feed and the
    /// next one. A stream that lagged behind `first` resyncs instead, so
    /// while every stream has, notices are not worth building.
    fn read(&self) -> bool {
        self.readers
            .iter()
            .any(|r| r.next >= self.first && r.alive.strong_count() > 0)
    }

    /// Adds a notice: after the others, the oldest dropped when full; or,
    /// while nobody will read it ([`read`](Self::read)), none at all,
    /// only its sequence number taken (which resyncs the streams).
    fn push(&mut self, notice: impl FnOnce() -> Notice) {
        if self.read() {
            if self.notices.len() >= self.capacity {
                self.notices.pop_front();
                self.first += 1;
            }
            self.notices.push_back(notice());
        } else {
            self.first = self.end() + 1;
            if !self.notices.is_empty() {
                self.notices.clear();
            }
        }
        self.wake();
    }

    /// Wakes the streams waiting for the next notice.
    fn wake(&mut self) {
        for reader in &mut self.readers {
            if let Some(waker) = reader.waker.take() {
                waker.wake();
            }
        }
    }

    /// Notes where the stream at `cursor` reads next and, when it waits
    /// for a notice, its waker.
    fn note(&mut self, cursor: &Cursor, waker: Option<&Waker>) {
        let me = Arc::as_ptr(&cursor.alive);
        let reader = match self.readers.iter_mut().position(|r| r.alive.as_ptr() == me) {
            Some(at) => &mut self.readers[at],
            None => {
                // Forget the streams dropped since, once they could be as
                // many as the live ones.
                if self.readers.len() >= Arc::strong_count(&self.streams) {
                    self.readers.retain(|r| r.alive.strong_count() > 0);
                }
                self.readers.push(Reader {
                    alive: Arc::downgrade(&cursor.alive),
                    next: cursor.next,
                    waker: None,
                });
                let last = self.readers.len() - 1;
                &mut self.readers[last]
            }
        };
        reader.next = cursor.next;
        match (waker, &mut reader.waker) {
            (Some(waker), Some(held)) => held.clone_from(waker),
            (waker, held) => *held = waker.cloned(),
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        // When the store goes, its waiting streams wake up to end.
        self.wake();
    }
}

struct Lease {
    ttl: Duration,
    keys: BTreeSet<Key>,
}

/// The key of a commit and the prefix feeds, when a prefix watch covers
/// the key.
type Prefixed<'a> = Option<(&'a Key, &'a mut PrefixFeeds)>;

/// Sends to a key's watchers (forgetting the feed once nobody listens) and
/// to the watchers of its prefixes.
fn publish(feed: &mut Option<Feed>, prefixed: Prefixed<'_>, notice: impl FnOnce() -> Notice) {
    if feed
        .as_ref()
        .is_some_and(|f| Arc::strong_count(&f.streams) == 1)
    {
        *feed = None;
    }
    if feed.is_none() && prefixed.is_none() {
        return;
    }
    match (feed, prefixed) {
        (Some(f), None) => f.push(notice),
        (feed, Some((key, prefixes))) => {
            let notice = notice();
            prefixes.publish(key, &notice);
            if let Some(f) = feed {
                f.push(|| notice);
            }
        }
        (None, None) => {}
    }
}

/// Whether someone will read the key's next notice (so that events are
/// worth building, see [`Feed::read`]).
fn watched(feed: &Option<Feed>) -> bool {
    feed.as_ref().is_some_and(Feed::read)
}

/// Takes the next revision: one above `revision`, or the pinned one.
fn advance(revision: &mut u64, pinned: Option<u64>) -> u64 {
    *revision = pinned.unwrap_or(*revision + 1);
    *revision
}

/// Bytes of field values in the record `op` makes of `current`.
fn record_size_after(current: Option<&Record>, op: &Op) -> usize {
    let values = |fields: &[(FieldName, Bytes)]| fields.iter().map(|(_, v)| v.len()).sum::<usize>();
    match op {
        Op::Put(fields) => values(fields),
        Op::Patch(fields) => {
            let kept: usize = current.map_or(0, |record| {
                record
                    .fields
                    .iter()
                    .filter(|f| !fields.iter().any(|(name, _)| *name == f.name))
                    .map(|f| f.value.len())
                    .sum()
            });
            kept + values(fields)
        }
        Op::Delete => 0,
    }
}

/// Whether `record` has exactly the fields `names`, in this order.
fn same_fields<'a>(record: &Record, names: impl IntoIterator<Item = &'a FieldName>) -> bool {
    let mut names = names.into_iter();
    record.fields.iter().all(|f| {
        names
            .next()
            .is_some_and(|n| Arc::ptr_eq(&f.name, n) || f.name == *n)
    }) && names.next().is_none()
}

/// A `Put` of `fields` into `slot`, which `prefixed` covers; returns the
/// record's new version. Takes the values it keeps.
fn put(
    slot: &mut Slot,
    fields: &mut [(FieldName, Bytes)],
    prefixed: Prefixed<'_>,
    revision: u64,
    lease: Option<LeaseId>,
) -> u64 {
    match &mut slot.record {
        // The common case: the same fields in the same order, updated in
        // place.
        Some(record) if same_fields(record, fields.iter().map(|(n, _)| n)) => {
            adopt_names(record, fields);
            let values = fields.iter_mut().map(|(_, v)| v);
            overwrite(record, &mut slot.feed, prefixed, values, revision, lease)
        }
        _ => replace(slot, prefixed, fields, revision, lease),
    }
}

/// Makes the field names of `record` the very names of `fields` (equal
/// names, see [`same_fields`]), so that the next write made with the same
/// names (a ref reuses its own) finds them equal by pointer instead of
/// comparing their bytes.
fn adopt_names(record: &mut Record, fields: &[(FieldName, Bytes)]) {
    for (field, (name, _)) in record.fields.iter_mut().zip(fields) {
        if !Arc::ptr_eq(&field.name, name) {
            field.name = name.clone();
        }
    }
}

/// Writes `values` over the fields of `record` (which has as many, see
/// [`same_fields`]): fields whose bytes change take the written value
/// (leaving it empty) and `revision`. `newest` is the newest notice of the
/// key's feed, which takes the bytes it reads from the record first (see
/// [`Notice::PutCurrent`]). Returns the positions of the changed fields when
/// the key is `watched`.
fn overwrite_fields<'a>(
    record: &mut Record,
    mut newest: Option<&mut Notice>,
    values: impl Iterator<Item = &'a mut Bytes>,
    revision: u64,
    watched: bool,
) -> Positions {
    let mut positions = Positions::None;
    for (position, (field, value)) in record.fields.iter_mut().zip(values).enumerate() {
        // (The same bytes, such as a fingerprint both hold, need no
        // comparison.)
        let same_bytes = field.value.as_ptr() == value.as_ptr() && field.value.len() == value.len();
        if same_bytes || field.value == *value {
            continue;
        }
        let old = std::mem::replace(&mut field.value, std::mem::take(value));
        field.mod_revision = revision;
        if let Some(notice) = newest.take_if(|n| n.current() == Some(position)) {
            notice.settle_with(field.name.clone(), old);
        }
        if watched {
            positions.push(position);
        }
    }
    // A field the notice reads and this write left as it was.
    if let Some(notice) = newest {
        notice.settle(Some(record));
    }
    positions
}

/// A `Put` onto `record`, which has exactly the written fields in this
/// order: the bytes are overwritten in place, and watchers get the
/// changed ones. Returns the new version.
fn overwrite<'a>(
    record: &mut Record,
    feed: &mut Option<Feed>,
    prefixed: Prefixed<'_>,
    values: impl Iterator<Item = &'a mut Bytes>,
    revision: u64,
    lease: Option<LeaseId>,
) -> u64 {
    let read = watched(feed);
    let watched = read || prefixed.is_some();
    // (Notices nobody reads are dropped when the next one comes.)
    let newest = feed
        .as_mut()
        .filter(|_| read)
        .and_then(|f| f.notices.back_mut());
    let positions = overwrite_fields(record, newest, values, revision, watched);
    record.version += 1;
    record.mod_revision = revision;
    record.lease = lease;
    let (version, create_revision) = (record.version, record.create_revision);
    // Made only for someone who reads it (mostly nobody does: a watcher
    // that fell behind resyncs instead).
    let only_key = prefixed.is_none();
    let notice = || match positions {
        // Only the key's feed may read the bytes from the record: a
        // prefix feed's notices carry their own.
        Positions::One(position) if only_key => Notice::PutCurrent {
            revision,
            version,
            create_revision,
            position,
            lease,
        },
        positions => Notice::Put {
            revision,
            version,
            create_revision,
            changed: positions.changed(record),
            removed: Vec::new(),
            lease,
        },
    };
    publish(feed, prefixed, notice);
    version
}

/// A `Put` that creates the slot's record or changes its set of fields:
/// unchanged fields keep their revisions, missing ones are announced as
/// removed. Takes the written values. Returns the new version.
fn replace(
    slot: &mut Slot,
    prefixed: Prefixed<'_>,
    fields: &mut [(FieldName, Bytes)],
    revision: u64,
    lease: Option<LeaseId>,
) -> u64 {
    settle_newest(&mut slot.feed, slot.record.as_ref());
    let old = slot.record.take();
    let mut changed = Changed::None;
    let mut new_fields = Vec::with_capacity(fields.len());
    for (name, value) in fields.iter_mut() {
        let (name, value) = (name.clone(), std::mem::take(value));
        let previous = old.as_ref().and_then(|r| r.field(&name));
        let mod_revision = match previous {
            Some(p) if p.value == value => p.mod_revision,
            _ => {
                changed.push(name.clone(), value.clone());
                revision
            }
        };
        new_fields.push(Field {
            name,
            value,
            mod_revision,
        });
    }
    let removed = old.as_ref().map_or_else(Vec::new, |old| {
        old.fields
            .iter()
            .filter(|f| !new_fields.iter().any(|n| n.name == f.name))
            .map(|f| f.name.clone())
            .collect()
    });
    let (version, create_revision) = match &old {
        Some(r) => (r.version + 1, r.create_revision),
        None => (1, revision),
    };
    slot.record = Some(Record {
        fields: new_fields,
        version,
        create_revision,
        mod_revision: revision,
        lease,
    });
    publish(&mut slot.feed, prefixed, || Notice::Put {
        revision,
        version,
        create_revision,
        changed,
        removed,
        lease,
    });
    version
}

/// The whole content of a [`Store`] as plain data, for snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreImage {
    /// The store's revision.
    pub revision: u64,
    /// The last lease id handed out.
    pub last_lease: u64,
    /// Every record with its key.
    pub records: Vec<(Key, Record)>,
    /// Every live lease with its TTL.
    pub leases: Vec<(LeaseId, Duration)>,
}

/// Records, revisions, leases and watchers (see the [module docs](self)).
pub struct Store {
    revision: u64,
    /// Set by [`Store::commit_at`]: the revision every change shares.
    pinned: Option<u64>,
    slots: HashMap<Key, Slot, KeyHashBuilder>,
    prefixes: PrefixFeeds,
    leases: BTreeMap<LeaseId, Lease>,
    last_lease: u64,
    watch_buffer: usize,
}

impl Store {
    /// An empty store buffering up to `watch_buffer` events per watched key
    /// before a slow watcher gets a resync.
    pub fn new(watch_buffer: usize) -> Self {
        Store {
            revision: 0,
            pinned: None,
            slots: HashMap::default(),
            prefixes: PrefixFeeds::default(),
            leases: BTreeMap::new(),
            last_lease: 0,
            watch_buffer: watch_buffer.max(1),
        }
    }

    /// The revision of the last commit.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Makes every change from now on carry `revision`, until the next
    /// call: a replicated log applies each entry at its log index, so that
    /// every change of one entry (a lease expiry may delete several
    /// records) shares that index, as the writes of one etcd transaction
    /// share a revision. `revision` must exceed every earlier one; a
    /// smaller value is raised to the next free revision, so revisions
    /// never go back.
    pub fn commit_at(&mut self, revision: u64) {
        self.pinned = Some(revision.max(self.revision + 1));
    }

    fn next_revision(&mut self) -> u64 {
        advance(&mut self.revision, self.pinned)
    }

    /// The record under `key`.
    pub fn get(&self, key: &Key) -> Option<&Record> {
        self.slots.get(key).and_then(|s| s.record.as_ref())
    }

    /// Applies a conditional write (the rules of the [contract](super)).
    /// Fails with `LeaseExpired` when a `Put` names a lease the store does
    /// not hold.
    pub fn write(&mut self, mut write: Write) -> Result<WriteOutcome> {
        self.write_from(&mut write)
    }

    /// [`write`](Self::write) of a lent write, as
    /// [`Backend::try_write`](super::Backend::try_write) lends it: the
    /// same outcome, record and event, but the store takes from `write`
    /// only the field values it keeps (leaving each empty), and clones
    /// the key and the field names only where it has none of its own (a
    /// new record, a new field, a change of lease).
    pub fn write_from(&mut self, write: &mut Write) -> Result<WriteOutcome> {
        // One lookup of the key serves the check and a `Put`'s commit.
        let mut slot = self.slots.get_mut(&write.key);
        let current = slot.as_deref().and_then(|s| s.record.as_ref());
        let holds = match &write.condition {
            Condition::Any => true,
            Condition::Absent => current.is_none(),
            Condition::Exists => current.is_some(),
            Condition::Version(v) => current.is_some_and(|r| r.version == *v),
            Condition::ModRevision(rev) => current.is_some_and(|r| r.mod_revision == *rev),
            Condition::FieldModRevision { field, revision } => current
                .and_then(|r| r.field(field))
                .is_some_and(|f| f.mod_revision == *revision),
        };
        let applicable = match write.op {
            Op::Put(_) => true,
            Op::Patch(_) | Op::Delete => current.is_some(),
        };
        if !holds || !applicable {
            return Ok(WriteOutcome::Rejected {
                current: current.cloned(),
            });
        }
        if write.max_record_bytes.is_some() {
            write.check_record_size(record_size_after(current, &write.op))?;
        }
        let old_lease = current.and_then(|r| r.lease);
        let Write { key, op, lease, .. } = write;
        let lease = *lease;
        if let (Op::Put(_), Some(lease)) = (&op, lease) {
            if !self.leases.contains_key(&lease) {
                return Err(Error::LeaseExpired { lease });
            }
        }
        let revision = advance(&mut self.revision, self.pinned);
        match op {
            Op::Put(fields) => {
                let prefixed = self
                    .prefixes
                    .cover(key)
                    .then_some((&*key, &mut self.prefixes));
                let slot = match slot.take() {
                    Some(slot) => slot,
                    None => self.slots.entry(key.clone()).or_default(),
                };
                let version = put(slot, fields, prefixed, revision, lease);
                if old_lease != lease {
                    if let Some(l) = old_lease.and_then(|l| self.leases.get_mut(&l)) {
                        l.keys.remove(key);
                    }
                    if let Some(l) = lease.and_then(|l| self.leases.get_mut(&l)) {
                        l.keys.insert(key.clone());
                    }
                }
                Ok(WriteOutcome::Committed { revision, version })
            }
            Op::Patch(fields) => Ok(self.patch(key, fields, revision)),
            Op::Delete => Ok(self.delete(key, revision, EventKind::Deleted)),
        }
    }

    /// The outcome of `write` if it must fail whatever commits later: its
    /// condition names a record or field `mod_revision` that this store has
    /// moved past (the expected revision is at most the store's, and the
    /// record or field now has another one). Revisions only grow, so such a
    /// condition can never hold again. `None` when the write may succeed,
    /// or when this store cannot tell (it has not reached that revision).
    /// A replica may use this to answer without proposing, provided its
    /// state is current enough for the record it returns.
    pub fn doomed(&self, write: &Write) -> Option<WriteOutcome> {
        let current = self.get(&write.key);
        let (expected, now) = match &write.condition {
            Condition::ModRevision(revision) => (*revision, current.map(|r| r.mod_revision)),
            Condition::FieldModRevision { field, revision } => (
                *revision,
                current.and_then(|r| r.field(field)).map(|f| f.mod_revision),
            ),
            _ => return None,
        };
        (expected <= self.revision() && now != Some(expected)).then(|| WriteOutcome::Rejected {
            current: current.cloned(),
        })
    }

    /// A `Patch` of `fields` on the record under `key`. Takes the values
    /// it keeps.
    fn patch(
        &mut self,
        key: &Key,
        fields: &mut [(FieldName, Bytes)],
        revision: u64,
    ) -> WriteOutcome {
        let Some(slot) = self.slots.get_mut(key) else {
            // `write` checked existence before taking a revision.
            return WriteOutcome::Rejected { current: None };
        };
        settle_newest(&mut slot.feed, slot.record.as_ref());
        let Some(record) = slot.record.as_mut() else {
            return WriteOutcome::Rejected { current: None };
        };
        let mut changed = Vec::new();
        for (name, value) in fields.iter_mut() {
            match record.fields.iter_mut().find(|f| f.name == *name) {
                Some(f) if f.value == *value => {}
                Some(f) => {
                    let value = std::mem::take(value);
                    f.value = value.clone();
                    f.mod_revision = revision;
                    changed.push((name.clone(), value));
                }
                None => {
                    let value = std::mem::take(value);
                    record.fields.push(Field {
                        name: name.clone(),
                        value: value.clone(),
                        mod_revision: revision,
                    });
                    changed.push((name.clone(), value));
                }
            }
        }
        record.version += 1;
        record.mod_revision = revision;
        let (version, create_revision, lease) =
            (record.version, record.create_revision, record.lease);
        let prefixed = self
            .prefixes
            .cover(key)
            .then_some((key, &mut self.prefixes));
        if let Some(slot) = self.slots.get_mut(key) {
            publish(&mut slot.feed, prefixed, || {
                Notice::Event(Event {
                    revision,
                    kind: EventKind::Put {
                        version,
                        create_revision,
                        changed,
                        removed: Vec::new(),
                        lease,
                    },
                })
            });
        }
        WriteOutcome::Committed { revision, version }
    }

    fn delete(&mut self, key: &Key, revision: u64, kind: EventKind) -> WriteOutcome {
        let prefixed = self
            .prefixes
            .cover(key)
            .then_some((key, &mut self.prefixes));
        if let Some(slot) = self.slots.get_mut(key) {
            settle_newest(&mut slot.feed, slot.record.as_ref());
            if let Some(old) = slot.record.take() {
                if let Some(l) = old.lease.and_then(|l| self.leases.get_mut(&l)) {
                    l.keys.remove(key);
                }
            }
            publish(&mut slot.feed, prefixed, || {
                Notice::Event(Event { revision, kind })
            });
            if slot.is_unused() {
                self.slots.remove(key);
            }
        }
        WriteOutcome::Committed {
            revision,
            version: 0,
        }
    }

    /// Creates a lease with `ttl` and returns its id (ids count up from 1,
    /// so two stores applying the same grants hand out the same ids).
    pub fn grant(&mut self, ttl: Duration) -> LeaseId {
        self.last_lease += 1;
        let id = LeaseId(self.last_lease);
        self.leases.insert(
            id,
            Lease {
                ttl,
                keys: BTreeSet::new(),
            },
        );
        id
    }

    /// The TTL of a live lease.
    pub fn lease_ttl(&self, lease: LeaseId) -> Option<Duration> {
        self.leases.get(&lease).map(|l| l.ttl)
    }

    /// Every live lease with its TTL, in id order.
    pub fn leases(&self) -> impl Iterator<Item = (LeaseId, Duration)> + '_ {
        self.leases.iter().map(|(id, l)| (*id, l.ttl))
    }

    /// Ends a lease: each of its records is deleted with an `Expired`
    /// event, each at its own revision (or all at the pinned one, see
    /// [`commit_at`](Self::commit_at)). Returns whether the lease existed.
    pub fn revoke(&mut self, lease: LeaseId) -> bool {
        let Some(l) = self.leases.remove(&lease) else {
            return false;
        };
        for key in l.keys {
            let revision = self.next_revision();
            self.delete(&key, revision, EventKind::Expired);
        }
        true
    }

    /// Every record whose key starts with `prefix`, in key order, at the
    /// current revision. (A scan of every key: the store is a hash map, so
    /// that reads and writes of one key stay a single lookup.)
    pub fn list(&self, prefix: &str) -> Listing {
        let mut records: Vec<(Key, Record)> = self
            .slots
            .iter()
            .filter(|(key, _)| key.as_str().starts_with(prefix))
            .filter_map(|(key, slot)| Some((key.clone(), slot.record.clone()?)))
            .collect();
        records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Listing {
            revision: self.revision,
            records,
        }
    }

    /// The whole content as plain data.
    pub fn export(&self) -> StoreImage {
        let mut records: Vec<(Key, Record)> = self
            .slots
            .iter()
            .filter_map(|(k, s)| s.record.clone().map(|r| (k.clone(), r)))
            .collect();
        records.sort_by(|a, b| a.0.cmp(&b.0));
        StoreImage {
            revision: self.revision,
            last_lease: self.last_lease,
            records,
            leases: self.leases().collect(),
        }
    }

    /// Replaces the whole content with `image`. Watchers stay subscribed and
    /// receive a resync with their key's new record.
    pub fn restore(&mut self, image: StoreImage) {
        self.revision = image.revision;
        self.pinned = None;
        self.last_lease = image.last_lease;
        self.leases = image
            .leases
            .into_iter()
            .map(|(id, ttl)| {
                let lease = Lease {
                    ttl,
                    keys: BTreeSet::new(),
                };
                (id, lease)
            })
            .collect();
        for slot in self.slots.values_mut() {
            settle_newest(&mut slot.feed, slot.record.as_ref());
            slot.record = None;
        }
        for (key, record) in image.records {
            if let Some(l) = record.lease.and_then(|l| self.leases.get_mut(&l)) {
                l.keys.insert(key.clone());
            }
            self.slots.entry(key).or_default().record = Some(record);
        }
        for slot in self.slots.values_mut() {
            publish(&mut slot.feed, None, || Notice::Reset);
        }
        self.prefixes.reset();
        self.slots.retain(|_, s| !s.is_unused());
    }

    /// Opens a stream on the key's feed: its id, its hold on the feed, and
    /// the sequence number of the next notice.
    fn subscribe(&mut self, key: &Key) -> Cursor {
        let capacity = self.watch_buffer;
        let slot = self.slots.entry(key.clone()).or_default();
        let feed = slot.feed.get_or_insert_with(|| Feed {
            first: 0,
            notices: VecDeque::new(),
            capacity,
            readers: Vec::new(),
            streams: Arc::new(()),
        });
        let cursor = Cursor {
            alive: Arc::new(()),
            hold: feed.streams.clone(),
            next: feed.end(),
            floor: 0,
        };
        feed.note(&cursor, None);
        cursor
    }

    /// The next item for the stream at `cursor`, or `Pending` with its
    /// waker registered.
    fn poll_feed(
        &mut self,
        key: &Key,
        cursor: &mut Cursor,
        cx: &mut TaskContext<'_>,
    ) -> Poll<WatchItem> {
        let revision = self.revision;
        let Some(Slot {
            record,
            feed: Some(feed),
        }) = self.slots.get_mut(key).filter(|s| {
            s.feed
                .as_ref()
                .is_some_and(|f| Arc::ptr_eq(&f.streams, &cursor.hold))
        })
        else {
            // Not reachable while the stream holds its feed; should it
            // happen, a resync is always correct.
            *cursor = Cursor {
                floor: revision,
                ..self.subscribe(key)
            };
            return Poll::Ready(WatchItem::Resync(self.get(key).cloned()));
        };
        // Events in order until a reset, or until the notices the stream
        // has not read were dropped (it lagged): then it resyncs. `None`
        // when there is nothing new.
        let item = 'read: {
            while let Some(offset) = cursor.next.checked_sub(feed.first) {
                let Some(notice) = usize::try_from(offset)
                    .ok()
                    .and_then(|i| feed.notices.get(i))
                else {
                    break 'read None;
                };
                cursor.next += 1;
                match notice.revision() {
                    Some(r) if r <= cursor.floor => {}
                    Some(r) => {
                        cursor.floor = r;
                        match notice.clone().into_event(record.as_ref()) {
                            Some(event) => break 'read Some(WatchItem::Event(event)),
                            None => break,
                        }
                    }
                    None => break,
                }
            }
            cursor.next = feed.end();
            cursor.floor = revision;
            Some(WatchItem::Resync(record.clone()))
        };
        feed.note(cursor, item.is_none().then(|| cx.waker()));
        match item {
            Some(item) => Poll::Ready(item),
            None => Poll::Pending,
        }
    }
}

/// A watch stream's position in its key's feed.
struct Cursor {
    /// Owned by the stream alone: the feed forgets the waker of a stream
    /// that was dropped.
    alive: Arc<()>,
    /// Keeps the feed alive.
    hold: Arc<()>,
    /// Sequence number of the next notice to read.
    next: u64,
    /// Events at or below this revision are already reflected by what the
    /// stream delivered (the `since` revision, or the last resync).
    floor: u64,
}

/// Something that holds a [`Store`] behind a lock, through which watch
/// streams read their key's notices (and resync). Streams take the lock
/// when polled, so it must not be held while a stream is polled.
pub trait StoreAccess: Send + Sync + 'static {
    /// Runs `f` with the store locked.
    fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R;
}

/// Watches `key` on the store behind `access`, with the contract's `since`
/// semantics. The stream holds only a weak reference: it ends when the
/// store is dropped.
pub fn watch<A: StoreAccess>(access: &Arc<A>, key: Key, since: Option<u64>) -> WatchStream {
    let (cursor, initial) = access.with_store(|store| {
        let mut cursor = store.subscribe(&key);
        let current = store.get(&key);
        let initial = match since {
            Some(since) if current.is_none_or(|r| r.mod_revision > since) => {
                cursor.floor = store.revision();
                Some(WatchItem::Resync(current.cloned()))
            }
            Some(since) => {
                cursor.floor = since;
                None
            }
            None => None,
        };
        (cursor, initial)
    });
    StoreWatch::stream(access, cursor, initial, key)
}

/// What a store watch follows: one key's feed, or a prefix's.
trait Followed: Send + 'static {
    type Item: Send;

    /// The next item for the stream at `cursor`, or its waker noted.
    fn poll(
        &self,
        store: &mut Store,
        cursor: &mut Cursor,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Self::Item>;
}

impl Followed for Key {
    type Item = WatchItem;

    fn poll(
        &self,
        store: &mut Store,
        cursor: &mut Cursor,
        cx: &mut TaskContext<'_>,
    ) -> Poll<WatchItem> {
        store.poll_feed(self, cursor, cx)
    }
}

/// A prefix watch's prefix.
struct Prefix(String);

impl Followed for Prefix {
    type Item = PrefixItem;

    fn poll(
        &self,
        store: &mut Store,
        cursor: &mut Cursor,
        cx: &mut TaskContext<'_>,
    ) -> Poll<PrefixItem> {
        Poll::Ready(match store.prefixes.poll(cursor, cx) {
            Polled::Pending => return Poll::Pending,
            Polled::Event(key, event) => PrefixItem::Event(key, event),
            Polled::Resync => {
                // Anew at the feed's end (the feed itself is made anew
                // should it have gone).
                *cursor = store.prefixes.subscribe(&self.0, store.watch_buffer);
                cursor.floor = store.revision();
                PrefixItem::Resync(store.list(&self.0))
            }
        })
    }
}

/// A watch stream on the store behind `access`: the initial item, then
/// what it follows, until the store is dropped.
struct StoreWatch<A, F: Followed> {
    cursor: Cursor,
    initial: Option<F::Item>,
    access: Weak<A>,
    followed: F,
}

impl<A: StoreAccess, F: Followed> StoreWatch<A, F> {
    fn stream(
        access: &Arc<A>,
        cursor: Cursor,
        initial: Option<F::Item>,
        followed: F,
    ) -> std::pin::Pin<Box<dyn futures_core::Stream<Item = Result<F::Item>> + Send>> {
        let watch = StoreWatch {
            cursor,
            initial,
            access: Arc::downgrade(access),
            followed,
        };
        Box::pin(futures_util::stream::unfold(watch, StoreWatch::next))
    }

    async fn next(mut self) -> Option<(Result<F::Item>, Self)> {
        if let Some(item) = self.initial.take() {
            return Some((Ok(item), self));
        }
        let item = std::future::poll_fn(|cx| {
            let Some(access) = self.access.upgrade() else {
                return Poll::Ready(None);
            };
            let StoreWatch {
                cursor, followed, ..
            } = &mut self;
            access
                .with_store(|store| followed.poll(store, cursor, cx))
                .map(Some)
        })
        .await?;
        Some((Ok(item), self))
    }
}

/// Watches every key under `prefix` on the store behind `access`, with the
/// contract's `since` semantics: the store keeps no record of deletions,
/// so a `since` below the store's revision starts with a resync (a listing
/// of the prefix). The stream holds only a weak reference: it ends when
/// the store is dropped.
pub fn watch_prefix<A: StoreAccess>(
    access: &Arc<A>,
    prefix: String,
    since: Option<u64>,
) -> PrefixStream {
    let (cursor, initial) = access.with_store(|store| {
        let mut cursor = store.prefixes.subscribe(&prefix, store.watch_buffer);
        let initial = match since {
            Some(since) if since < store.revision() => {
                cursor.floor = store.revision();
                Some(PrefixItem::Resync(store.list(&prefix)))
            }
            Some(since) => {
                cursor.floor = since;
                None
            }
            None => None,
        };
        (cursor, initial)
    });
    StoreWatch::stream(access, cursor, initial, Prefix(prefix))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use futures_util::{FutureExt, StreamExt};

    use super::*;
    use crate::engine::{Field, FieldName, Op};

    struct Locked(parking_lot::Mutex<Store>);

    impl StoreAccess for Locked {
        fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
            f(&mut self.0.lock())
        }
    }

    fn locked(watch_buffer: usize) -> Arc<Locked> {
        Arc::new(Locked(parking_lot::Mutex::new(Store::new(watch_buffer))))
    }

    fn typed(value: &'static [u8]) -> Vec<(FieldName, Bytes)> {
        vec![
            (FieldName::from("$type"), Bytes::from_static(b"u64")),
            (FieldName::from("value"), Bytes::from_static(value)),
        ]
    }

    fn record(store: &Arc<Locked>, key: &Key) -> Option<Record> {
        store.with_store(|s| s.get(key).cloned())
    }

    async fn next_item(watch: &mut WatchStream) -> WatchItem {
        watch.next().await.unwrap().unwrap()
    }

    #[test]
    fn only_conditions_on_revisions_passed_for_good_are_doomed() {
        let mut store = Store::new(16);
        let key = Key::new("k");
        let value = FieldName::from("value");
        let put = |value: &'static [u8]| Write::new(Key::new("k"), Op::Put(typed(value)));
        store.write(put(b"1")).unwrap();
        let first = store.get(&key).unwrap().clone();
        store.write(put(b"2")).unwrap();
        let second = store.get(&key).unwrap().clone();
        let field_rev = |r: &Record| r.field(&value).unwrap().mod_revision;

        let doomed = |store: &Store, condition| store.doomed(&put(b"3").when(condition));
        let rejected = Some(WriteOutcome::Rejected {
            current: Some(second.clone()),
        });
        // Passed revisions of the record and of a field: doomed, with the
        // current record, and the same outcome as writing would give.
        for condition in [
            Condition::ModRevision(first.mod_revision),
            Condition::FieldModRevision {
                field: value.clone(),
                revision: field_rev(&first),
            },
        ] {
            assert_eq!(doomed(&store, condition.clone()), rejected);
            let mut copy = Store::new(16);
            copy.restore(store.export());
            assert_eq!(copy.write(put(b"3").when(condition)).ok(), rejected);
        }
        // The current revisions may succeed; revisions this store has not
        // reached cannot be judged; other conditions are never doomed
        // (versions restart after a delete).
        for condition in [
            Condition::ModRevision(second.mod_revision),
            Condition::FieldModRevision {
                field: value.clone(),
                revision: field_rev(&second),
            },
            Condition::ModRevision(store.revision() + 1),
            Condition::Version(1),
            Condition::Absent,
            Condition::Any,
        ] {
            assert_eq!(doomed(&store, condition.clone()), None, "{condition:?}");
        }
        // A deleted record: every passed revision is doomed.
        store.write(Write::new(key.clone(), Op::Delete)).unwrap();
        assert_eq!(
            doomed(&store, Condition::ModRevision(second.mod_revision)),
            Some(WriteOutcome::Rejected { current: None })
        );
    }

    #[tokio::test]
    async fn a_stream_that_lags_resyncs_and_dropped_streams_are_forgotten() {
        let store = locked(2);
        let key = Key::new("k");
        let put = |value: &'static [u8]| {
            let write = Write::new(key.clone(), Op::Put(typed(value)));
            store.with_store(|s| s.write(write)).unwrap();
        };
        let mut lagging = watch(&store, key.clone(), None);
        for value in [b"1", b"2", b"3", b"4", b"5"] {
            put(value);
        }
        let WatchItem::Resync(Some(current)) = next_item(&mut lagging).await else {
            panic!("expected a resync");
        };
        assert_eq!(Some(current.clone()), record(&store, &key));
        put(b"6");
        let WatchItem::Event(event) = next_item(&mut lagging).await else {
            panic!("expected an event");
        };
        assert_eq!(event.revision, current.mod_revision + 1);

        // Streams dropped while waiting do not pile up.
        assert!(lagging.next().now_or_never().is_none());
        for _ in 0..10 {
            let mut waiting = watch(&store, key.clone(), None);
            assert!(waiting.next().now_or_never().is_none());
        }
        let waiting = |store: &Arc<Locked>| {
            store.with_store(|s| s.slots[&key].feed.as_ref().map(|f| f.readers.len()))
        };
        assert!(
            waiting(&store).is_some_and(|n| n <= 3),
            "{:?}",
            waiting(&store)
        );

        // Once nobody listens, the next commit drops the feed.
        drop(lagging);
        put(b"7");
        assert_eq!(waiting(&store), None);
    }

    async fn next_prefix_item(watch: &mut PrefixStream) -> PrefixItem {
        watch.next().await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn a_prefix_stream_that_lags_or_meets_a_restore_resyncs_with_a_listing() {
        let store = locked(2);
        let put = |key: &str, value: &'static [u8]| {
            let write = Write::new(Key::new(key), Op::Put(typed(value)));
            store.with_store(|s| s.write(write)).unwrap();
        };
        let mut lagging = watch_prefix(&store, "p/".into(), None);
        let mut other = watch_prefix(&store, "q/".into(), None);
        for (i, value) in [b"1", b"2", b"3", b"4"].into_iter().enumerate() {
            put(&format!("p/{i}"), value);
            put("q/0", value);
        }
        let PrefixItem::Resync(listing) = next_prefix_item(&mut lagging).await else {
            panic!("expected a resync");
        };
        assert_eq!(listing, store.with_store(|s| s.list("p/")));
        assert_eq!(listing.records.len(), 4);
        put("p/0", b"5");
        let PrefixItem::Event(key, event) = next_prefix_item(&mut lagging).await else {
            panic!("expected an event");
        };
        assert_eq!(
            (key.as_str(), event.revision),
            ("p/0", listing.revision + 1)
        );

        // A restore resyncs every prefix stream; the other prefix's stream
        // lagged too, and both see the restored state.
        let image = StoreImage {
            revision: 100,
            ..StoreImage::default()
        };
        store.with_store(|s| s.restore(image));
        let PrefixItem::Resync(listing) = next_prefix_item(&mut lagging).await else {
            panic!("expected a resync after the restore");
        };
        assert_eq!((listing.revision, listing.records.len()), (100, 0));
        let PrefixItem::Resync(listing) = next_prefix_item(&mut other).await else {
            panic!("expected a resync");
        };
        assert_eq!(listing.revision, 100);

        // Once nobody listens, the next commit forgets the feed.
        drop((lagging, other));
        put("p/9", b"1");
        assert_eq!(store.with_store(|s| s.prefixes.len()), 0);
    }

    #[tokio::test]
    async fn a_waiting_stream_ends_when_the_store_is_dropped() {
        let store = locked(16);
        let mut stream = watch(&store, Key::new("k"), None);
        let waiting = tokio::spawn(async move { stream.next().await.is_none() });
        tokio::task::yield_now().await;
        drop(store);
        let ended = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(matches!(ended, Ok(Ok(true))), "{ended:?}");
    }

    fn put_under(key: &str, lease: Option<LeaseId>) -> Write {
        let fields = vec![(FieldName::from("v"), Bytes::from_static(b"1"))];
        Write {
            lease,
            ..Write::new(Key::new(key), Op::Put(fields))
        }
    }

    /// The event the contract owes for a commit at `revision` that made
    /// `after` of `before`: every field whose bytes changed or that is
    /// new, the fields a `Put` no longer lists, or a delete.
    fn owed(before: Option<&Record>, after: Option<&Record>, revision: u64) -> Event {
        let Some(after) = after else {
            return Event {
                revision,
                kind: EventKind::Deleted,
            };
        };
        let before = before.filter(|b| b.create_revision == after.create_revision);
        let unchanged = |f: &Field| {
            before
                .and_then(|b| b.field(&f.name))
                .is_some_and(|old| old.value == f.value)
        };
        let changed = after
            .fields
            .iter()
            .filter(|f| !unchanged(f))
            .map(|f| (f.name.clone(), f.value.clone()))
            .collect();
        let removed = before.map_or_else(Vec::new, |b| {
            b.fields
                .iter()
                .filter(|f| after.field(&f.name).is_none())
                .map(|f| f.name.clone())
                .collect()
        });
        Event {
            revision,
            kind: EventKind::Put {
                version: after.version,
                create_revision: after.create_revision,
                changed,
                removed,
                lease: after.lease,
            },
        }
    }

    fn fields(pairs: &[(&str, &str)]) -> Vec<(FieldName, Bytes)> {
        pairs
            .iter()
            .map(|(n, v)| (FieldName::from(*n), Bytes::copy_from_slice(v.as_bytes())))
            .collect()
    }

    /// Every item a stream has ready now.
    fn drain<S: futures_core::Stream<Item = Result<T>> + Unpin, T>(stream: &mut S) -> Vec<T> {
        let mut items = Vec::new();
        while let Some(Some(item)) = stream.next().now_or_never() {
            items.push(item.unwrap());
        }
        items
    }

    /// The same writes, given to one store as owned writes and to another
    /// lent, through one write whose values are refilled as a ref does
    /// (so that the store takes the values and reads some notices' bytes
    /// from the record): the same outcomes and records, and every stream,
    /// prompt, lagging, prefix or fallen out of its feed, reads what the
    /// contract owes it, with the bytes of each commit.
    #[test]
    fn lent_writes_and_notices_read_from_the_record_give_every_stream_its_events() {
        let key = Key::new("k");
        // Granted first in each store.
        let lease = LeaseId(1);
        let put = |pairs: &[(&str, &str)]| Write::new(key.clone(), Op::Put(fields(pairs)));
        let patch = |pairs: &[(&str, &str)]| Write::new(key.clone(), Op::Patch(fields(pairs)));
        let mut steps = vec![
            put(&[("a", "1"), ("b", "1")]),
            put(&[("a", "2"), ("b", "1")]),
            put(&[("a", "2"), ("b", "2")]),
            put(&[("a", "3"), ("b", "2")]),
            put(&[("a", "3"), ("b", "2")]),
            put(&[("a", "4"), ("b", "4")]).when(Condition::Version(99)),
            put(&[("a", "4"), ("b", "4")]),
            put(&[("a", "4"), ("b", "5")]),
            patch(&[("a", "5")]),
            put(&[("a", "6"), ("b", "4")]),
            put(&[("a", "6"), ("b", "9")]),
            put(&[("a", "6"), ("c", "1")]),
            put(&[("a", "7"), ("c", "1")]),
            Write::new(key.clone(), Op::Delete),
            put(&[("a", "8"), ("b", "8")]),
            put(&[("a", "9"), ("b", "8")]).with_lease(Some(lease)),
            put(&[("a", "10"), ("b", "8")]),
        ];
        for n in 11..30 {
            steps.push(put(&[("a", &n.to_string()), ("b", "8")]));
        }

        let owned = locked(8);
        let lent = locked(8);
        for store in [&owned, &lent] {
            assert_eq!(
                store.with_store(|s| s.grant(Duration::from_secs(60))),
                lease
            );
        }
        let mut prompt = [&owned, &lent].map(|s| watch(s, key.clone(), None));
        // Read every 3 and every 5 commits: notices are read at every
        // distance from their commit (up to the feed's capacity).
        let periods = [3, 5];
        let mut lagging = periods.map(|_| [&owned, &lent].map(|s| watch(s, key.clone(), None)));
        let mut late = [&owned, &lent].map(|s| watch(s, key.clone(), None));
        let mut prefixed = None;
        let mut owed_lagging = periods.map(|_| [Vec::new(), Vec::new()]);
        let mut owed_prefixed = [Vec::new(), Vec::new()];
        let mut reused: Option<Write> = None;
        for (step, write) in steps.into_iter().enumerate() {
            // A prefix watch over part of the run: those commits' notices
            // carry their bytes.
            if step == 16 {
                prefixed = Some([&owned, &lent].map(|s| watch_prefix(s, "k".into(), None)));
            }
            if step == 22 {
                prefixed = None;
            }
            // The lent write: values refilled when the names stay.
            let lending = match (reused.take(), &write.op) {
                (Some(mut old), Op::Put(new)) => match &mut old.op {
                    Op::Put(held) if held.iter().map(|f| &f.0).eq(new.iter().map(|f| &f.0)) => {
                        for (held, new) in held.iter_mut().zip(new) {
                            held.1 = new.1.clone();
                        }
                        old.condition = write.condition.clone();
                        old.lease = write.lease;
                        old
                    }
                    _ => write.clone(),
                },
                _ => write.clone(),
            };
            let mut lending = lending;
            let before = record(&owned, &key);
            let outcome = owned.with_store(|s| s.write(write.clone())).unwrap();
            let lent_outcome = lent.with_store(|s| s.write_from(&mut lending)).unwrap();
            assert_eq!(outcome, lent_outcome, "step {step}");
            let after = record(&owned, &key);
            assert_eq!(after, record(&lent, &key), "step {step}");
            // The store took values at most: all else is as lent.
            assert_eq!(
                (&lending.key, &lending.condition),
                (&write.key, &write.condition)
            );
            if let (Op::Put(given) | Op::Patch(given), Op::Put(left) | Op::Patch(left)) =
                (&write.op, &lending.op)
            {
                for (given, left) in given.iter().zip(left) {
                    assert_eq!(given.0, left.0);
                    assert!(left.1.is_empty() || left.1 == given.1, "step {step}");
                }
            }
            reused = Some(lending);

            let owed_now = match outcome {
                WriteOutcome::Committed { revision, .. } => {
                    vec![owed(before.as_ref(), after.as_ref(), revision)]
                }
                WriteOutcome::Rejected { .. } => Vec::new(),
            };
            for side in 0..2 {
                let items = drain(&mut prompt[side]);
                let owed_items: Vec<_> = owed_now.iter().cloned().map(WatchItem::Event).collect();
                assert_eq!(items, owed_items, "prompt stream, step {step}");
                for (at, period) in periods.into_iter().enumerate() {
                    let owed_items = &mut owed_lagging[at][side];
                    owed_items.extend(owed_now.iter().cloned().map(WatchItem::Event));
                    if step % period == period - 1 {
                        let items = drain(&mut lagging[at][side]);
                        assert_eq!(items, std::mem::take(owed_items), "step {step}");
                    }
                }
                if let Some(streams) = &mut prefixed {
                    let event = owed_now.iter().cloned();
                    owed_prefixed[side].extend(event.map(|e| PrefixItem::Event(key.clone(), e)));
                    let items = drain(&mut streams[side]);
                    assert_eq!(
                        items,
                        std::mem::take(&mut owed_prefixed[side]),
                        "step {step}"
                    );
                }
            }
        }
        for (side, store) in [&owned, &lent].into_iter().enumerate() {
            for at in 0..periods.len() {
                let items = drain(&mut lagging[at][side]);
                assert_eq!(items, std::mem::take(&mut owed_lagging[at][side]));
            }
            // Fallen out of its feed: the record as it is now.
            let items = drain(&mut late[side]);
            assert_eq!(items, vec![WatchItem::Resync(record(store, &key))]);
        }
    }

    /// While every stream of a key has fallen out of its feed, commits
    /// leave no notices: the streams resync, and then read every event
    /// again, as does a stream opened meanwhile.
    #[test]
    fn a_feed_that_only_streams_fallen_behind_read_keeps_no_notices() {
        let store = locked(2);
        let key = Key::new("k");
        let put = |value: &'static [u8]| {
            let write = Write::new(key.clone(), Op::Put(typed(value)));
            store.with_store(|s| s.write(write)).unwrap()
        };
        let mut behind = watch(&store, key.clone(), None);
        for value in [b"1", b"2", b"3", b"4", b"5", b"6"] {
            put(value);
        }
        let notices = |store: &Arc<Locked>| {
            store.with_store(|s| s.slots[&key].feed.as_ref().map(|f| f.notices.len()))
        };
        assert_eq!(notices(&store), Some(0));
        let mut opened = watch(&store, key.clone(), None);
        assert_eq!(
            drain(&mut behind),
            vec![WatchItem::Resync(record(&store, &key))]
        );
        let before = record(&store, &key);
        let WriteOutcome::Committed { revision, .. } = put(b"7") else {
            panic!("an unconditional put was rejected");
        };
        let event = owed(before.as_ref(), record(&store, &key).as_ref(), revision);
        assert_eq!(drain(&mut behind), vec![WatchItem::Event(event.clone())]);
        assert_eq!(drain(&mut opened), vec![WatchItem::Event(event)]);
    }

    #[test]
    fn pinned_revisions_are_shared_by_one_step_and_never_go_back() {
        let mut store = Store::new(16);
        let lease = store.grant(Duration::from_secs(5));
        store.commit_at(3);
        store.write(put_under("a", Some(lease))).unwrap();
        store.commit_at(7);
        store.write(put_under("b", Some(lease))).unwrap();
        assert_eq!(store.get(&Key::new("a")).unwrap().mod_revision, 3);
        assert_eq!(store.get(&Key::new("b")).unwrap().mod_revision, 7);

        // One step that deletes two records: both at the step's revision.
        store.commit_at(9);
        assert!(store.revoke(lease));
        assert_eq!(store.revision(), 9);

        // A stale pin cannot move the revision backwards.
        store.commit_at(4);
        store.write(put_under("c", None)).unwrap();
        assert_eq!(store.get(&Key::new("c")).unwrap().mod_revision, 10);
    }
}
