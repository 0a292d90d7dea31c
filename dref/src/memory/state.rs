//! The store state behind the memory backend's mutex.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use bytes::Bytes;

use crate::engine::{
    Condition, Event, EventKind, Field, FieldName, Key, LeaseId, Op, Record, Write, WriteOutcome,
};
use crate::{Error, Result};

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<Key>,
}

/// Everything the store keeps for one key.
#[derive(Default)]
struct Slot {
    record: Option<Record>,
    watchers: Option<broadcast::Sender<Event>>,
}

#[derive(Default)]
pub(super) struct State {
    revision: u64,
    slots: HashMap<Key, Slot>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: u64,
    /// No lease ends before this instant (a lower bound; keep-alives may
    /// have pushed the real earliest deadline later).
    earliest_deadline: Option<Instant>,
    pub(super) reaper_running: bool,
}

/// Encoded size of a write's payload.
pub(super) fn write_size(write: &Write) -> usize {
    match &write.op {
        Op::Put(fields) | Op::Patch(fields) => fields.iter().map(|(n, v)| n.len() + v.len()).sum(),
        _ => 0,
    }
}

/// Sends an event to a key's watchers, forgetting the channel once nobody
/// listens.
fn publish(watchers: &mut Option<broadcast::Sender<Event>>, event: impl FnOnce() -> Event) {
    if let Some(tx) = watchers {
        if tx.receiver_count() == 0 || tx.send(event()).is_err() {
            *watchers = None;
        }
    }
}

impl Slot {
    fn is_unused(&self) -> bool {
        self.record.is_none() && self.watchers.is_none()
    }
}

impl State {
    pub(super) fn revision(&self) -> u64 {
        self.revision
    }

    pub(super) fn get(&self, key: &Key) -> Option<&Record> {
        self.slots.get(key).and_then(|s| s.record.as_ref())
    }

    pub(super) fn subscribe(&mut self, key: &Key, buffer: usize) -> broadcast::Receiver<Event> {
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

    pub(super) fn write(&mut self, write: Write) -> Result<WriteOutcome> {
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
        self.revision += 1;
        let revision = self.revision;
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
        publish(&mut slot.watchers, || Event {
            revision,
            kind: EventKind::Put {
                version,
                create_revision,
                changed,
                removed,
                lease,
            },
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
        let Some(slot) = self.slots.get_mut(key) else {
            return WriteOutcome::Rejected { current: None };
        };
        let Some(record) = slot.record.as_mut() else {
            // `write` checked existence under the same lock.
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
        publish(&mut slot.watchers, || Event {
            revision,
            kind: EventKind::Put {
                version,
                create_revision,
                changed,
                removed: Vec::new(),
                lease,
            },
        });
        WriteOutcome::Committed { revision, version }
    }

    fn delete(&mut self, key: &Key, revision: u64, kind: EventKind) -> WriteOutcome {
        if let Some(slot) = self.slots.get_mut(key) {
            if let Some(old) = slot.record.take() {
                if let Some(l) = old.lease.and_then(|l| self.leases.get_mut(&l)) {
                    l.keys.remove(key);
                }
            }
            publish(&mut slot.watchers, || Event { revision, kind });
            if slot.is_unused() {
                self.slots.remove(key);
            }
        }
        WriteOutcome::Committed {
            revision,
            version: 0,
        }
    }

    pub(super) fn grant(&mut self, ttl: Duration, now: Instant) -> LeaseId {
        self.next_lease += 1;
        let id = LeaseId(self.next_lease);
        self.leases.insert(
            id,
            Lease {
                ttl,
                deadline: now + ttl,
                keys: BTreeSet::new(),
            },
        );
        let deadline = now + ttl;
        self.earliest_deadline = Some(self.earliest_deadline.map_or(deadline, |e| e.min(deadline)));
        id
    }

    pub(super) fn keep_alive(&mut self, lease: LeaseId, now: Instant) -> Result<()> {
        let l = self
            .leases
            .get_mut(&lease)
            .ok_or(Error::LeaseExpired { lease })?;
        l.deadline = now + l.ttl;
        Ok(())
    }

    pub(super) fn revoke(&mut self, lease: LeaseId) {
        if let Some(l) = self.leases.remove(&lease) {
            for key in l.keys {
                self.revision += 1;
                self.delete(&key, self.revision, EventKind::Expired);
            }
        }
    }

    /// Expires the leases whose deadlines have passed. Reads the clock only
    /// when some lease exists.
    pub(super) fn expire_due(&mut self) {
        let Some(earliest) = self.earliest_deadline else {
            return;
        };
        let now = Instant::now();
        if now < earliest {
            return;
        }
        let mut due: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        due.sort();
        for lease in due {
            self.revoke(lease);
        }
        self.earliest_deadline = self.next_deadline();
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.deadline).min()
    }
}
