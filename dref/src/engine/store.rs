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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::broadcast;

use super::{
    Condition, Event, EventKind, Field, FieldName, Key, LeaseId, Op, Record, WatchItem,
    WatchStream, Write, WriteOutcome,
};
use crate::{Error, Result};

/// What a key's watchers receive.
#[derive(Clone, Debug)]
enum Notice {
    Event(Event),
    /// The whole store was replaced ([`Store::restore`]): watchers resync.
    Reset,
}

/// Everything the store keeps for one key.
#[derive(Default)]
struct Slot {
    record: Option<Record>,
    watchers: Option<broadcast::Sender<Notice>>,
}

impl Slot {
    fn is_unused(&self) -> bool {
        self.record.is_none() && self.watchers.is_none()
    }
}

struct Lease {
    ttl: Duration,
    keys: BTreeSet<Key>,
}

/// Sends to a key's watchers, forgetting the channel once nobody listens.
fn publish(watchers: &mut Option<broadcast::Sender<Notice>>, notice: impl FnOnce() -> Notice) {
    if let Some(tx) = watchers {
        if tx.receiver_count() == 0 || tx.send(notice()).is_err() {
            *watchers = None;
        }
    }
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
    slots: HashMap<Key, Slot>,
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
            slots: HashMap::new(),
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
        match self.pinned {
            Some(pinned) => self.revision = pinned,
            None => self.revision += 1,
        }
        self.revision
    }

    /// The record under `key`.
    pub fn get(&self, key: &Key) -> Option<&Record> {
        self.slots.get(key).and_then(|s| s.record.as_ref())
    }

    /// Applies a conditional write (the rules of the [contract](super)).
    /// Fails with `LeaseExpired` when a `Put` names a lease the store does
    /// not hold.
    pub fn write(&mut self, write: Write) -> Result<WriteOutcome> {
        let Write {
            key,
            condition,
            op,
            lease,
        } = write;
        let current = self.get(&key);
        let holds = match &condition {
            Condition::Any => true,
            Condition::Absent => current.is_none(),
            Condition::Exists => current.is_some(),
            Condition::Version(v) => current.is_some_and(|r| r.version == *v),
            Condition::ModRevision(rev) => current.is_some_and(|r| r.mod_revision == *rev),
            Condition::FieldModRevision { field, revision } => current
                .and_then(|r| r.field(field))
                .is_some_and(|f| f.mod_revision == *revision),
        };
        let applicable = match op {
            Op::Put(_) => true,
            Op::Patch(_) | Op::Delete => current.is_some(),
        };
        if !holds || !applicable {
            return Ok(WriteOutcome::Rejected {
                current: current.cloned(),
            });
        }
        if let (Op::Put(_), Some(lease)) = (&op, lease) {
            if !self.leases.contains_key(&lease) {
                return Err(Error::LeaseExpired { lease });
            }
        }
        let revision = self.next_revision();
        match op {
            Op::Put(fields) => Ok(self.put(key, fields, lease, revision)),
            Op::Patch(fields) => Ok(self.patch(&key, fields, revision)),
            Op::Delete => Ok(self.delete(&key, revision, EventKind::Deleted)),
        }
    }

    fn put(
        &mut self,
        key: Key,
        fields: Vec<(FieldName, Bytes)>,
        lease: Option<LeaseId>,
        revision: u64,
    ) -> WriteOutcome {
        let slot = self.slots.entry(key.clone()).or_default();
        let watched = slot.watchers.is_some();
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        let old_lease = slot.record.as_ref().and_then(|r| r.lease);
        let (version, create_revision) = match &mut slot.record {
            // The common case: the same fields in the same order, updated in
            // place.
            Some(record)
                if record.fields.len() == fields.len()
                    && record
                        .fields
                        .iter()
                        .zip(&fields)
                        .all(|(f, (n, _))| f.name == *n) =>
            {
                for (field, (name, value)) in record.fields.iter_mut().zip(fields) {
                    if field.value != value {
                        if watched {
                            changed.push((name, value.clone()));
                        }
                        field.value = value;
                        field.mod_revision = revision;
                    }
                }
                record.version += 1;
                (record.version, record.create_revision)
            }
            existing => {
                let old = existing.take();
                let mut new_fields = Vec::with_capacity(fields.len());
                for (name, value) in fields {
                    let previous = old.as_ref().and_then(|r| r.field(&name));
                    let mod_revision = match previous {
                        Some(p) if p.value == value => p.mod_revision,
                        _ => {
                            changed.push((name.clone(), value.clone()));
                            revision
                        }
                    };
                    new_fields.push(Field {
                        name,
                        value,
                        mod_revision,
                    });
                }
                if let Some(old) = &old {
                    removed = old
                        .fields
                        .iter()
                        .filter(|f| !new_fields.iter().any(|n| n.name == f.name))
                        .map(|f| f.name.clone())
                        .collect();
                }
                let (version, create_revision) = match &old {
                    Some(r) => (r.version + 1, r.create_revision),
                    None => (1, revision),
                };
                *existing = Some(Record {
                    fields: new_fields,
                    version,
                    create_revision,
                    mod_revision: revision,
                    lease,
                });
                (version, create_revision)
            }
        };
        if let Some(record) = &mut slot.record {
            record.mod_revision = revision;
            record.lease = lease;
        }
        publish(&mut slot.watchers, || {
            Notice::Event(Event {
                revision,
                kind: EventKind::Put {
                    version,
                    create_revision,
                    changed,
                    removed,
                    lease,
                },
            })
        });
        if old_lease != lease {
            if let Some(l) = old_lease.and_then(|l| self.leases.get_mut(&l)) {
                l.keys.remove(&key);
            }
            if let Some(l) = lease.and_then(|l| self.leases.get_mut(&l)) {
                l.keys.insert(key);
            }
        }
        WriteOutcome::Committed { revision, version }
    }

    fn patch(&mut self, key: &Key, fields: Vec<(FieldName, Bytes)>, revision: u64) -> WriteOutcome {
        let Some(record) = self.slots.get_mut(key).and_then(|s| s.record.as_mut()) else {
            // `write` checked existence before taking a revision.
            return WriteOutcome::Rejected { current: None };
        };
        let mut changed = Vec::new();
        for (name, value) in fields {
            match record.fields.iter_mut().find(|f| f.name == name) {
                Some(f) if f.value == value => {}
                Some(f) => {
                    f.value = value.clone();
                    f.mod_revision = revision;
                    changed.push((name, value));
                }
                None => {
                    record.fields.push(Field {
                        name: name.clone(),
                        value: value.clone(),
                        mod_revision: revision,
                    });
                    changed.push((name, value));
                }
            }
        }
        record.version += 1;
        record.mod_revision = revision;
        let (version, create_revision, lease) =
            (record.version, record.create_revision, record.lease);
        if let Some(slot) = self.slots.get_mut(key) {
            publish(&mut slot.watchers, || {
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
        if let Some(slot) = self.slots.get_mut(key) {
            if let Some(old) = slot.record.take() {
                if let Some(l) = old.lease.and_then(|l| self.leases.get_mut(&l)) {
                    l.keys.remove(key);
                }
            }
            publish(&mut slot.watchers, || {
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
            slot.record = None;
        }
        for (key, record) in image.records {
            if let Some(l) = record.lease.and_then(|l| self.leases.get_mut(&l)) {
                l.keys.insert(key.clone());
            }
            self.slots.entry(key).or_default().record = Some(record);
        }
        for slot in self.slots.values_mut() {
            publish(&mut slot.watchers, || Notice::Reset);
        }
        self.slots.retain(|_, s| !s.is_unused());
    }

    fn subscribe(&mut self, key: &Key) -> broadcast::Receiver<Notice> {
        let buffer = self.watch_buffer;
        let slot = self.slots.entry(key.clone()).or_default();
        match &slot.watchers {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(buffer);
                slot.watchers = Some(tx);
                rx
            }
        }
    }
}

/// Something that holds a [`Store`] behind a lock, so that a watch stream
/// can resync from it.
pub trait StoreAccess: Send + Sync + 'static {
    /// Runs `f` with the store locked.
    fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R;
}

/// Watches `key` on the store behind `access`, with the contract's `since`
/// semantics. The stream holds only a weak reference: it ends when the
/// store is dropped.
pub fn watch<A: StoreAccess>(access: &Arc<A>, key: Key, since: Option<u64>) -> WatchStream {
    let (rx, initial, floor) = access.with_store(|store| {
        let rx = store.subscribe(&key);
        let current = store.get(&key);
        let (initial, floor) = match since {
            Some(since) if current.is_none_or(|r| r.mod_revision > since) => {
                (Some(WatchItem::Resync(current.cloned())), store.revision())
            }
            Some(since) => (None, since),
            None => (None, 0),
        };
        (rx, initial, floor)
    });
    let watch = StoreWatch {
        rx,
        floor,
        initial,
        access: Arc::downgrade(access),
        key,
    };
    Box::pin(futures_util::stream::unfold(watch, StoreWatch::next))
}

struct StoreWatch<A> {
    rx: broadcast::Receiver<Notice>,
    /// Events at or below this revision are already reflected by what the
    /// stream delivered (the `since` revision, or the last resync).
    floor: u64,
    initial: Option<WatchItem>,
    access: Weak<A>,
    key: Key,
}

impl<A: StoreAccess> StoreWatch<A> {
    async fn next(mut self) -> Option<(Result<WatchItem>, Self)> {
        if let Some(item) = self.initial.take() {
            return Some((Ok(item), self));
        }
        loop {
            match self.rx.recv().await {
                Ok(Notice::Event(event)) if event.revision <= self.floor => continue,
                Ok(Notice::Event(event)) => {
                    self.floor = event.revision;
                    return Some((Ok(WatchItem::Event(event)), self));
                }
                Ok(Notice::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    let access = self.access.upgrade()?;
                    // Notices are sent under the store lock: a receiver made
                    // under it sees exactly the commits after this snapshot,
                    // and the backlog is dropped.
                    let (rx, record, revision) = access.with_store(|store| {
                        let rx = self.rx.resubscribe();
                        (rx, store.get(&self.key).cloned(), store.revision())
                    });
                    self.rx = rx;
                    self.floor = revision;
                    return Some((Ok(WatchItem::Resync(record)), self));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::engine::{FieldName, Op};

    fn put_under(key: &str, lease: Option<LeaseId>) -> Write {
        let fields = vec![(FieldName::from("v"), Bytes::from_static(b"1"))];
        Write {
            lease,
            ..Write::new(Key::new(key), Op::Put(fields))
        }
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
