//! The Raft type configuration, the replicated commands, and the wire forms
//! of engine values (plain serde types, encoded with postcard).

use std::io::Cursor;
use std::time::Duration;

use bytes::Bytes;
use dref::engine::{
    Condition, Event, EventKind, Field, FieldName, Key, LeaseId, Listing, Op, Record, Write,
    WriteOutcome,
};
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// The openraft type configuration of dref's Raft backend.
    pub TypeConfig:
        D = Proposal,
        R = Vec<Applied>,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Identifies one proposal, so that a proposal retried after a lost answer
/// (leader crash, timeout) is applied at most once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId {
    /// The proposing node process (random at every start).
    pub client: u64,
    /// Sequence number within that handle.
    pub seq: u64,
}

/// The payload of one log entry: the commands the leader's proposer
/// gathered while the previous entry was being committed (group commit:
/// they share one disk sync and one replication round). Applied in order;
/// command `i` of the entry at log index `n` commits at revision
/// [`revision_of`]`(n, i)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The commands, in the order they are applied.
    pub commands: Vec<Command>,
}

/// Most commands in one log entry.
pub const MAX_COMMANDS_PER_ENTRY: usize = 1 << REVISION_SHIFT;
/// Bits of a revision below the log index: the command's place in its entry.
const REVISION_SHIFT: u32 = 10;

/// The store revision of command `position` of the log entry at `index`:
/// every node derives the same revisions from the same log, and they
/// strictly increase in commit order.
pub fn revision_of(index: u64, position: usize) -> u64 {
    (index << REVISION_SHIFT) | position as u64
}

/// A command of a [`Proposal`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Deduplicates retries.
    pub id: RequestId,
    /// What to do.
    pub op: CommandOp,
}

/// What a [`Command`] does to the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandOp {
    /// A conditional write.
    Write(WireWrite),
    /// Creates a lease with this TTL in milliseconds.
    Grant {
        /// TTL in milliseconds.
        ttl_ms: u64,
    },
    /// Ends a lease (revoked by its holder or expired by the leader).
    Revoke {
        /// The lease.
        lease: u64,
    },
}

/// The result of applying a [`Command`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Applied {
    /// A blank or membership entry.
    #[default]
    Nothing,
    /// The write committed.
    Committed {
        /// Its revision.
        revision: u64,
        /// The record's new version.
        version: u64,
    },
    /// The write's condition failed; the current record.
    Rejected(Option<WireRecord>),
    /// The write named a lease that does not exist.
    LeaseExpired(u64),
    /// The record the write would make breaks its `max_record_bytes`.
    TooLarge {
        /// Bytes of field values the record would hold.
        size: u64,
        /// The write's limit.
        limit: u64,
    },
    /// A lease was created.
    Granted(u64),
    /// A lease was ended (or did not exist).
    Revoked,
    /// The store refused the command.
    Failed(String),
}

impl Applied {
    /// Whether a retry of the same request must get this same answer
    /// (results that depend on the state at retry time are recomputed).
    pub fn is_final(&self) -> bool {
        matches!(self, Applied::Committed { .. } | Applied::Granted(_))
    }
}

/// Wire form of a [`Record`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRecord {
    /// Fields: name, bytes, mod revision. (`Bytes` travel as one byte
    /// string, not as a sequence of numbers.)
    pub fields: Vec<(String, Bytes, u64)>,
    /// Per-key version.
    pub version: u64,
    /// Revision that created the record.
    pub create_revision: u64,
    /// Revision of the last write.
    pub mod_revision: u64,
    /// Attached lease.
    pub lease: Option<u64>,
}

impl From<&Record> for WireRecord {
    fn from(r: &Record) -> Self {
        WireRecord {
            fields: r
                .fields
                .iter()
                .map(|f| (f.name.to_string(), f.value.clone(), f.mod_revision))
                .collect(),
            version: r.version,
            create_revision: r.create_revision,
            mod_revision: r.mod_revision,
            lease: r.lease.map(|l| l.0),
        }
    }
}

impl From<WireRecord> for Record {
    fn from(r: WireRecord) -> Self {
        Record {
            fields: r
                .fields
                .into_iter()
                .map(|(name, value, mod_revision)| Field {
                    name: FieldName::from(name),
                    value,
                    mod_revision,
                })
                .collect(),
            version: r.version,
            create_revision: r.create_revision,
            mod_revision: r.mod_revision,
            lease: r.lease.map(LeaseId),
        }
    }
}

/// Wire form of a [`Condition`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireCondition {
    /// [`Condition::Any`].
    Any,
    /// [`Condition::Absent`].
    Absent,
    /// [`Condition::Exists`].
    Exists,
    /// [`Condition::Version`].
    Version(u64),
    /// [`Condition::ModRevision`].
    ModRevision(u64),
    /// [`Condition::FieldModRevision`].
    FieldModRevision(String, u64),
}

/// Wire form of an [`Op`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireOp {
    /// [`Op::Put`].
    Put(Vec<(String, Bytes)>),
    /// [`Op::Patch`].
    Patch(Vec<(String, Bytes)>),
    /// [`Op::Delete`].
    Delete,
}

/// Wire form of a [`Write`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireWrite {
    /// The key.
    pub key: String,
    /// The condition.
    pub condition: WireCondition,
    /// The operation.
    pub op: WireOp,
    /// The lease to attach.
    pub lease: Option<u64>,
    /// [`Write::max_record_bytes`].
    pub max_record_bytes: Option<u64>,
}

fn wire_fields(fields: &[(FieldName, Bytes)]) -> Vec<(String, Bytes)> {
    fields
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect()
}

fn engine_fields(fields: Vec<(String, Bytes)>) -> Vec<(FieldName, Bytes)> {
    fields
        .into_iter()
        .map(|(n, v)| (FieldName::from(n), v))
        .collect()
}

impl WireWrite {
    /// The wire form of `write`, or `None` for a condition or op this
    /// version does not know.
    pub fn from_engine(write: &Write) -> Option<Self> {
        let condition = match &write.condition {
            Condition::Any => WireCondition::Any,
            Condition::Absent => WireCondition::Absent,
            Condition::Exists => WireCondition::Exists,
            Condition::Version(v) => WireCondition::Version(*v),
            Condition::ModRevision(r) => WireCondition::ModRevision(*r),
            Condition::FieldModRevision { field, revision } => {
                WireCondition::FieldModRevision(field.to_string(), *revision)
            }
            _ => return None,
        };
        let op = match &write.op {
            Op::Put(fields) => WireOp::Put(wire_fields(fields)),
            Op::Patch(fields) => WireOp::Patch(wire_fields(fields)),
            Op::Delete => WireOp::Delete,
            _ => return None,
        };
        Some(WireWrite {
            key: write.key.as_str().to_owned(),
            condition,
            op,
            lease: write.lease.map(|l| l.0),
            max_record_bytes: write.max_record_bytes.map(|l| l as u64),
        })
    }

    /// The engine form.
    pub fn into_engine(self) -> Write {
        let condition = match self.condition {
            WireCondition::Any => Condition::Any,
            WireCondition::Absent => Condition::Absent,
            WireCondition::Exists => Condition::Exists,
            WireCondition::Version(v) => Condition::Version(v),
            WireCondition::ModRevision(r) => Condition::ModRevision(r),
            WireCondition::FieldModRevision(field, revision) => Condition::FieldModRevision {
                field: FieldName::from(field),
                revision,
            },
        };
        let op = match self.op {
            WireOp::Put(fields) => Op::Put(engine_fields(fields)),
            WireOp::Patch(fields) => Op::Patch(engine_fields(fields)),
            WireOp::Delete => Op::Delete,
        };
        let write = Write::new(Key::from(self.key), op)
            .when(condition)
            .with_lease(self.lease.map(LeaseId));
        match self.max_record_bytes {
            // A limit beyond this machine's address space limits nothing.
            Some(limit) => {
                write.with_max_record_bytes(usize::try_from(limit).unwrap_or(usize::MAX))
            }
            None => write,
        }
    }
}

impl Applied {
    /// The write outcome this result stands for.
    pub fn into_write_outcome(self, key: &Key) -> dref::Result<WriteOutcome> {
        match self {
            Applied::Committed { revision, version } => {
                Ok(WriteOutcome::Committed { revision, version })
            }
            Applied::Rejected(current) => Ok(WriteOutcome::Rejected {
                current: current.map(Record::from),
            }),
            Applied::LeaseExpired(lease) => Err(dref::Error::LeaseExpired {
                lease: LeaseId(lease),
            }),
            Applied::TooLarge { size, limit } => Err(dref::Error::ValueTooLarge {
                key: key.clone(),
                size: usize::try_from(size).unwrap_or(usize::MAX),
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            }),
            other => Err(dref::Error::Protocol {
                backend: "raft",
                message: format!("a write was answered with {other:?}"),
            }),
        }
    }
}

/// Milliseconds of a duration, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Wire form of a listing's records (for clients that are not nodes).
pub fn wire_records(records: &[(Key, Record)]) -> Vec<(String, WireRecord)> {
    records
        .iter()
        .map(|(key, record)| (key.as_str().to_owned(), record.into()))
        .collect()
}

/// The listing at `revision` of records in wire form.
pub fn listing_from_wire(revision: u64, records: Vec<(String, WireRecord)>) -> Listing {
    Listing {
        revision,
        records: records
            .into_iter()
            .map(|(key, record)| (Key::new(key), record.into()))
            .collect(),
    }
}

/// Wire form of an [`Event`] (for the watches of clients that are not
/// nodes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEvent {
    /// The commit's revision.
    pub revision: u64,
    /// What it did.
    pub kind: WireEventKind,
}

/// Wire form of an [`EventKind`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireEventKind {
    /// A write: the version after it, the creating revision, the changed
    /// fields, the removed ones, the lease.
    Put(u64, u64, Vec<(String, Bytes)>, Vec<String>, Option<u64>),
    /// Deleted by a write.
    Deleted,
    /// Deleted by its lease's end.
    Expired,
}

impl WireEvent {
    /// The wire form of `event`; `None` for a kind this version does not
    /// know how to send.
    pub fn from_engine(event: &Event) -> Option<Self> {
        let kind = match &event.kind {
            EventKind::Put {
                version,
                create_revision,
                changed,
                removed,
                lease,
            } => WireEventKind::Put(
                *version,
                *create_revision,
                changed
                    .iter()
                    .map(|(name, value)| (name.to_string(), value.clone()))
                    .collect(),
                removed.iter().map(|name| name.to_string()).collect(),
                lease.map(|l| l.0),
            ),
            EventKind::Deleted => WireEventKind::Deleted,
            EventKind::Expired => WireEventKind::Expired,
            _ => return None,
        };
        Some(WireEvent {
            revision: event.revision,
            kind,
        })
    }

    /// The event.
    pub fn into_engine(self) -> Event {
        let kind = match self.kind {
            WireEventKind::Put(version, create_revision, changed, removed, lease) => {
                EventKind::Put {
                    version,
                    create_revision,
                    changed: changed
                        .into_iter()
                        .map(|(name, value)| (FieldName::from(name), value))
                        .collect(),
                    removed: removed.into_iter().map(FieldName::from).collect(),
                    lease: lease.map(LeaseId),
                }
            }
            WireEventKind::Deleted => EventKind::Deleted,
            WireEventKind::Expired => EventKind::Expired,
        };
        Event {
            revision: self.revision,
            kind,
        }
    }
}
