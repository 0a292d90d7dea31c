//! Keys, records, conditions and operations of the engine contract.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

/// A store key. Cheap to clone.
///
/// The key's hash is computed once, when it is made (with a per-process
/// random seed, as `HashMap`'s default hasher), so that stores find their
/// slots without hashing the string on every operation.
#[derive(Clone)]
pub struct Key {
    name: Arc<str>,
    hash: u64,
}

/// The hash of a key name, with one random seed per process.
fn key_hash(name: &str) -> u64 {
    static SEED: OnceLock<RandomState> = OnceLock::new();
    SEED.get_or_init(RandomState::new).hash_one(name)
}

impl Key {
    /// Creates a key from any string.
    pub fn new(key: impl AsRef<str>) -> Self {
        Key::from_arc(Arc::from(key.as_ref()))
    }

    fn from_arc(name: Arc<str>) -> Self {
        let hash = key_hash(&name);
        Key { name, hash }
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Whether `other` is a clone of this very key (not only an equal one).
    #[inline]
    pub(crate) fn is(&self, other: &Key) -> bool {
        Arc::ptr_eq(&self.name, &other.name)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.is(other) || (self.hash == other.hash && self.name == other.name)
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name.cmp(&other.name)
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A hasher for maps keyed by [`Key`]: it passes the key's precomputed hash
/// through instead of hashing it again.
#[derive(Clone, Copy, Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `Key` writes one `u64`; anything else is still hashed (FNV-1a).
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // The first write passes through unchanged.
        self.0 = self.0.rotate_left(5) ^ n;
    }
}

/// Builds [`KeyHasher`]s.
pub(crate) type KeyHashBuilder = BuildHasherDefault<KeyHasher>;

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.name, f)
    }
}

impl From<&str> for Key {
    fn from(key: &str) -> Self {
        Key::new(key)
    }
}

impl From<String> for Key {
    fn from(key: String) -> Self {
        Key::from_arc(Arc::from(key))
    }
}

/// The name of a field inside a record. Cheap to clone.
pub type FieldName = Arc<str>;

/// A lease identifier, unique within one store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct LeaseId(pub u64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One encoded field of a record.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Field {
    /// Stored field name.
    pub name: FieldName,
    /// Encoded bytes (codec chosen by the writer).
    pub value: Bytes,
    /// Revision of the last write that changed these bytes.
    pub mod_revision: u64,
}

/// A stored record: a list of encoded fields plus its version numbers.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Record {
    /// The fields, in the order the creating `Put` listed them.
    pub fields: Vec<Field>,
    /// Number of writes since the record was created (1 after creation).
    pub version: u64,
    /// Revision of the write that created the record.
    pub create_revision: u64,
    /// Revision of the last write to the record.
    pub mod_revision: u64,
    /// Lease the record is attached to, if any.
    pub lease: Option<LeaseId>,
}

impl Record {
    /// The field with the given name.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| &*f.name == name)
    }
}

/// The records under a key prefix as one linearizable read saw them (see
/// [`Backend::list`](super::Backend::list)).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Listing {
    /// The store revision the listing reflects: every commit up to it and
    /// none after it, so a watch from this revision misses nothing.
    pub revision: u64,
    /// Every record whose key starts with the prefix, in key order.
    pub records: Vec<(Key, Record)>,
}

/// Condition under which a [`Write`] is applied.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Condition {
    /// Always.
    Any,
    /// Only if no record exists under the key.
    Absent,
    /// Only if a record exists under the key.
    Exists,
    /// Only if the record exists and its `version` equals this.
    Version(u64),
    /// Only if the record exists and its `mod_revision` equals this. Unlike
    /// `Version`, this cannot be fooled by a delete and re-create (ABA).
    ModRevision(u64),
    /// Only if the record exists and the named field's `mod_revision` equals
    /// this: a write conditional on one field, so that writers of different
    /// fields never conflict.
    FieldModRevision {
        /// Stored field name.
        field: FieldName,
        /// Expected `mod_revision` of that field.
        revision: u64,
    },
}

/// What a [`Write`] does when its condition holds.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Op {
    /// Replace the record's fields with these (creating the record if absent).
    /// Fields whose bytes are unchanged keep their `mod_revision`; fields not
    /// listed are removed. The record is attached to the write's lease, or to
    /// none when the write has none.
    Put(Vec<(FieldName, Bytes)>),
    /// Set some fields of an existing record, leaving the others and the
    /// record's lease untouched. On an absent record the write is rejected.
    Patch(Vec<(FieldName, Bytes)>),
    /// Delete the record. On an absent record the write is rejected.
    Delete,
}

/// An atomic conditional write to one key.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct Write {
    /// Target key.
    pub key: Key,
    /// Condition checked atomically with the operation.
    pub condition: Condition,
    /// The operation.
    pub op: Op,
    /// Lease to attach the record to (used by `Op::Put` only).
    pub lease: Option<LeaseId>,
    /// Limit on the record this write produces: at most this many bytes of
    /// field values (names not counted), checked atomically with the
    /// condition. A write over it fails with
    /// [`Error::ValueTooLarge`](crate::Error::ValueTooLarge) and changes
    /// nothing. A `Patch` needs it to bound the whole record, since the
    /// writer does not know the fields it leaves as they are.
    pub max_record_bytes: Option<usize>,
}

impl Write {
    /// A write with condition [`Condition::Any`] and no lease.
    pub fn new(key: Key, op: Op) -> Self {
        Write {
            key,
            condition: Condition::Any,
            op,
            lease: None,
            max_record_bytes: None,
        }
    }

    /// Sets the condition.
    pub fn when(mut self, condition: Condition) -> Self {
        self.condition = condition;
        self
    }

    /// Attaches the written record to a lease.
    pub fn with_lease(mut self, lease: Option<LeaseId>) -> Self {
        self.lease = lease;
        self
    }

    /// Limits the record the write produces to `limit` bytes of field
    /// values (the [`max_record_bytes`](Write#structfield.max_record_bytes)
    /// field).
    pub fn with_max_record_bytes(mut self, limit: usize) -> Self {
        self.max_record_bytes = Some(limit);
        self
    }

    /// Fails with [`Error::ValueTooLarge`](crate::Error::ValueTooLarge)
    /// when a record holding `values` bytes of field values breaks this
    /// write's [`max_record_bytes`](Write#structfield.max_record_bytes): the check
    /// every backend makes on the record a write would produce.
    pub fn check_record_size(&self, values: usize) -> crate::Result<()> {
        match self.max_record_bytes {
            Some(limit) if values > limit => Err(crate::Error::ValueTooLarge {
                key: self.key.clone(),
                size: values,
                limit,
            }),
            _ => Ok(()),
        }
    }

    /// Encoded size of the write's payload (field names and values), the
    /// figure backends compare with their size limit.
    pub fn payload_size(&self) -> usize {
        match &self.op {
            Op::Put(fields) | Op::Patch(fields) => payload_size(fields.iter().map(|(n, v)| (n, v))),
            Op::Delete => 0,
        }
    }

    /// Fails with [`Error::ValueTooLarge`](crate::Error::ValueTooLarge)
    /// when the [`payload_size`](Self::payload_size) exceeds `limit`: the
    /// check every backend makes before writing.
    pub fn check_size(&self, limit: usize) -> crate::Result<()> {
        let size = self.payload_size();
        if size > limit {
            return Err(crate::Error::ValueTooLarge {
                key: self.key.clone(),
                size,
                limit,
            });
        }
        Ok(())
    }
}

/// The size [`Write::payload_size`] counts for these fields.
pub(crate) fn payload_size<'a>(
    fields: impl IntoIterator<Item = (&'a FieldName, &'a Bytes)>,
) -> usize {
    fields.into_iter().map(|(n, v)| n.len() + v.len()).sum()
}

/// Result of a [`Write`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum WriteOutcome {
    /// The write was applied.
    Committed {
        /// Store revision of the commit (also the record's new `mod_revision`,
        /// and for a creating `Put` its `create_revision`).
        revision: u64,
        /// The record's version after the write (0 after a delete).
        version: u64,
    },
    /// The condition did not hold; nothing changed. Carries the current
    /// record so that a retry needs no extra read.
    Rejected {
        /// The record as it is now, `None` if absent.
        current: Option<Record>,
    },
}
