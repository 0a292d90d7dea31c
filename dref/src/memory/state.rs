//! The store state behind the memory backend's mutex.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::engine::{
    Condition, Event, EventKind, Field, Key, LeaseId, Op, Record, Write, WriteOutcome,
};
use crate::{Error, Result};

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<Key>,
}

#[derive(Default)]
pub(super) struct State {
    revision: u64,
    records: HashMap<Key, Record>,
    watchers: HashMap<Key, broadcast::Sender<Event>>,
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

impl State {
    pub(super) fn revision(&self) -> u64 {
        self.revision
    }

    pub(super) fn get(&self, key: &Key) -> Option<&Record> {
        self.records.get(key)
    }

    pub(super) fn subscribe(&mut self, key: &Key, buffer: usize) -> broadcast::Receiver<Event> {
        self.watchers
            .entry(key.clone())
            .or_insert_with(|| broadcast::channel(buffer).0)
            .subscribe()
    }

    fn publish(&mut self, key: &Key, event: Event) {
        if let Some(tx) = self.watchers.get(key) {
            if tx.send(event).is_err() {
                // Nobody listens any more.
                self.watchers.remove(key);
            }
        }
    }

    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    pub(super) fn write(&mut self, write: Write) -> Result<WriteOutcome> {
        let Write {
            key,
            condition,
            op,
            lease,
        } = write;
        let current = self.records.get(&key);
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
            Op::Put(fields) => self.put(key, fields, lease, revision),
            Op::Patch(fields) => self.patch(key, fields, revision),
            Op::Delete => self.delete(key, revision, EventKind::Deleted),
        }
    }

    fn put(
        &mut self,
        key: Key,
        fields: Vec<(crate::engine::FieldName, bytes::Bytes)>,
        lease: Option<LeaseId>,
        revision: u64,
    ) -> Result<WriteOutcome> {
        let old = self.records.remove(&key);
        let mut changed = Vec::new();
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
        let removed = old
            .as_ref()
            .map(|r| {
                r.fields
                    .iter()
                    .filter(|f| !new_fields.iter().any(|n| n.name == f.name))
                    .map(|f| f.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        let (version, create_revision) = match &old {
            Some(r) => (r.version + 1, r.create_revision),
            None => (1, revision),
        };
        let old_lease = old.and_then(|r| r.lease);
        if old_lease != lease {
            if let Some(l) = old_lease.and_then(|l| self.leases.get_mut(&l)) {
                l.keys.remove(&key);
            }
            if let Some(l) = lease.and_then(|l| self.leases.get_mut(&l)) {
                l.keys.insert(key.clone());
            }
        }
        self.records.insert(
            key.clone(),
            Record {
                fields: new_fields,
                version,
                create_revision,
                mod_revision: revision,
                lease,
            },
        );
        self.publish(
            &key,
            Event {
                revision,
                kind: EventKind::Put {
                    version,
                    create_revision,
                    changed,
                    removed,
                    lease,
                },
            },
        );
        Ok(WriteOutcome::Committed { revision, version })
    }

    fn patch(
        &mut self,
        key: Key,
        fields: Vec<(crate::engine::FieldName, bytes::Bytes)>,
        revision: u64,
    ) -> Result<WriteOutcome> {
        let Some(record) = self.records.get_mut(&key) else {
            // `write` checked existence under the same lock.
            return Ok(WriteOutcome::Rejected { current: None });
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
        let event = Event {
            revision,
            kind: EventKind::Put {
                version: record.version,
                create_revision: record.create_revision,
                changed,
                removed: Vec::new(),
                lease: record.lease,
            },
        };
        let version = record.version;
        self.publish(&key, event);
        Ok(WriteOutcome::Committed { revision, version })
    }

    fn delete(&mut self, key: Key, revision: u64, kind: EventKind) -> Result<WriteOutcome> {
        if let Some(old) = self.records.remove(&key) {
            if let Some(l) = old.lease.and_then(|l| self.leases.get_mut(&l)) {
                l.keys.remove(&key);
            }
        }
        self.publish(&key, Event { revision, kind });
        Ok(WriteOutcome::Committed {
            revision,
            version: 0,
        })
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
                let revision = self.next_revision();
                // Keys in a lease's set always have a record.
                let _ = self.delete(key, revision, EventKind::Expired);
            }
        }
    }

    pub(super) fn expire_due(&mut self, now: Instant) {
        if self.earliest_deadline.is_none_or(|e| now < e) {
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
