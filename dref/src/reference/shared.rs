//! State shared by the clones of one `DRef`: its cache of the latest value,
//! and the hub that fans the watcher's commits out to subscribers.

use std::any::TypeId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{RwLock, RwLockWriteGuard};
use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::change::HubItem;
use super::combiner::{Combiner, FieldSlot, Splice};
use super::value::{NoFields, Value};
use crate::context::Context;
use crate::engine::{Backend, Condition, FieldName, Key, Op, Record, Write, WriteOutcome};
use crate::{Error, Result};

/// How long a field write waits for the ref's watcher to deliver the commit
/// into the local cache before reading the record instead.
const CATCH_UP: Duration = Duration::from_secs(2);

use crate::layout::TYPE_FIELD;

/// A `'static` copy of a type fingerprint, so that the fingerprint field
/// of every write is a free clone. There is one fingerprint per value type
/// and codec, so the set stays small.
fn intern(fingerprint: String) -> &'static [u8] {
    static INTERNED: std::sync::Mutex<Vec<&'static [u8]>> = std::sync::Mutex::new(Vec::new());
    let mut interned = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = interned.iter().find(|f| **f == fingerprint.as_bytes()) {
        return found;
    }
    let leaked: &'static [u8] = Box::leak(fingerprint.into_bytes().into_boxed_slice());
    interned.push(leaked);
    leaked
}

/// FNV-1a: a cheap digest of a field's encoded bytes.
pub(crate) fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Digests of the value fields of a `Put` built by
/// [`RefShared::encode_put`] (whose first field is the fingerprint), for
/// a value of type `T`.
pub(crate) fn put_digests<T: Value>(put: &[(FieldName, Bytes)]) -> Digests {
    if !tracks_fields::<T>() {
        return Digests::Untracked;
    }
    match put {
        [_, (_, value)] => Digests::One(digest(value)),
        _ => Digests::Many(put.iter().skip(1).map(|(_, b)| digest(b)).collect()),
    }
}

/// Whether refs of `T` keep per-field revisions (and the digests that
/// maintain them): only field handles read them, and a type without any
/// ([`NoFields`], such as every plain serde type) keeps none, so its
/// cache's field list stays empty. (Known at compile time.)
fn tracks_fields<T: Value>() -> bool {
    TypeId::of::<T::Fields>() != TypeId::of::<NoFields>()
}

/// The [`put_digests`] of a `Put`; a single-field value needs no `Vec`.
pub(crate) enum Digests {
    /// Not computed: the type keeps no per-field revisions
    /// ([`tracks_fields`]).
    Untracked,
    One(u64),
    Many(Vec<u64>),
}

impl Digests {
    pub(crate) fn as_slice(&self) -> &[u64] {
        match self {
            Digests::Untracked => &[],
            Digests::One(d) => std::slice::from_ref(d),
            Digests::Many(all) => all,
        }
    }
}

/// A ref's `Put`, kept so that each write only refills its values (see
/// [`RefShared::reuse_put`]): the key and the field names are made once,
/// and fields are encoded into one buffer.
#[derive(Default)]
pub(crate) struct PutParts {
    /// The last write, made by `reuse_put` (a `Put` of the fingerprint and
    /// every value field); a backend may have taken its values.
    write: Option<Write>,
    /// The buffer fields are encoded into.
    scratch: Vec<u8>,
}

/// What updates in a ref's lane keep from one to the next (see
/// `update.rs`).
pub(crate) struct LaneState<T> {
    pub(crate) parts: PutParts,
    /// The value the last update in the lane cached, its revision, and
    /// the [cache generation](RefShared::cache_generation) it made: while
    /// the cache is at that generation, this copy is what it holds.
    pub(crate) known: Option<(T, u64, u64)>,
}

impl<T> Default for LaneState<T> {
    fn default() -> Self {
        LaneState {
            parts: PutParts::default(),
            known: None,
        }
    }
}

/// The latest state of the record this node knows about.
struct Cache<T> {
    value: Option<T>,
    mod_revision: u64,
    /// Per value field: a digest of its encoded bytes and its
    /// `mod_revision`. The digest tells which fields a `Put` changed; a
    /// collision only costs a rejected field write and a retry.
    fields: Vec<(u64, u64)>,
}

pub(crate) struct RefShared<T: Value> {
    pub(crate) ctx: Context,
    pub(crate) key: Key,
    pub(crate) names: Box<[FieldName]>,
    type_field: (FieldName, Bytes),
    cache: RwLock<Cache<T>>,
    /// Moves on at every write of the cache (see
    /// [`cache_generation`](Self::cache_generation)).
    generation: AtomicU64,
    pub(crate) hub: broadcast::Sender<Arc<HubItem<T>>>,
    pub(crate) watcher: OnceLock<AbortHandle>,
    /// The queue of concurrent updates of the whole value.
    pub(crate) combiner: Combiner<T>,
    /// Serializes updates of the whole value on a backend that answers at
    /// once (see `update.rs`), and holds what they keep from one to the
    /// next. Reentrant, so that an update whose closure updates this ref
    /// again (in its first poll) does not deadlock.
    pub(crate) lane: parking_lot::ReentrantMutex<std::cell::RefCell<LaneState<T>>>,
    /// Whether the backend answered a write of this ref at once.
    pub(crate) answers_at_once: std::sync::atomic::AtomicBool,
    /// Per stored field, what its updates need (made by the first field
    /// handle).
    field_slots: Box<[OnceLock<Arc<FieldSlot<T>>>]>,
}

impl<T: Value> Drop for RefShared<T> {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.get() {
            watcher.abort();
        }
    }
}

impl<T: Value> RefShared<T> {
    pub(crate) fn new(ctx: Context, key: Key) -> Self {
        let names: Box<[FieldName]> = T::field_names()
            .iter()
            .map(|n| FieldName::from(*n))
            .collect();
        let type_name = FieldName::from(TYPE_FIELD);
        let fingerprint = intern(format!("{}:{}", ctx.inner.codec.name(), T::fingerprint()));
        let (hub, _) = broadcast::channel(ctx.inner.change_buffer);
        RefShared {
            ctx,
            key,
            names,
            type_field: (type_name, Bytes::from_static(fingerprint)),
            cache: RwLock::new(Cache {
                value: None,
                mod_revision: 0,
                fields: Vec::new(),
            }),
            generation: AtomicU64::new(0),
            hub,
            watcher: OnceLock::new(),
            combiner: Combiner::default(),
            lane: parking_lot::ReentrantMutex::new(std::cell::RefCell::default()),
            answers_at_once: std::sync::atomic::AtomicBool::new(false),
            field_slots: T::field_names().iter().map(|_| OnceLock::new()).collect(),
        }
    }

    /// The update slot of stored field `index`, made with `splice` (which
    /// copies the field from one value into another) the first time.
    pub(crate) fn field_slot(
        &self,
        index: usize,
        splice: impl FnOnce() -> Splice<T>,
    ) -> Result<Arc<FieldSlot<T>>> {
        let name = self
            .names
            .get(index)
            .cloned()
            .ok_or_else(|| Error::Config(format!("no stored field #{index}")))?;
        let slots = &self.field_slots[..];
        let slot = slots
            .get(index)
            .ok_or_else(|| Error::Config(format!("no stored field #{index}")))?;
        Ok(slot
            .get_or_init(|| Arc::new(FieldSlot::new(index, name, splice())))
            .clone())
    }

    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.ctx.inner.backend
    }

    /// A span for operation `op` on this ref (trace level: with no
    /// subscriber for it, it costs a check of the level).
    pub(crate) fn span(&self, op: &'static str) -> tracing::Span {
        tracing::trace_span!(
            "dref",
            op,
            key = %self.key,
            backend = self.backend().name(),
            node = self.ctx.node_id()
        )
    }

    /// [`Backend::read`] of this ref's key (at once when the backend can).
    pub(crate) async fn read(&self) -> Result<Option<Record>> {
        match self.backend().try_read(&self.key) {
            Some(answered) => answered,
            None => {
                let read = self.backend().read(self.key.clone());
                read.instrument(self.span("read")).await
            }
        }
    }

    /// [`Backend::write`] (at once when the backend can). A write limited
    /// by [`patch_write`](Self::patch_write) reports a too large record by
    /// the size of its value fields, as the limit was given.
    pub(crate) async fn write(&self, write: Write) -> Result<WriteOutcome> {
        let limited = write.max_record_bytes.is_some();
        let mut write = write;
        let result = match self.backend().try_write(&mut write) {
            Some(answered) => answered,
            None => {
                let written = self.backend().write(write);
                written.instrument(self.span("write")).await
            }
        };
        self.ctx.inner.metrics.write(result.as_ref());
        match result {
            Err(Error::ValueTooLarge { key, size, limit }) if limited => {
                let fingerprint = self.type_field.1.len();
                Err(Error::ValueTooLarge {
                    key,
                    size: size.saturating_sub(fingerprint),
                    limit: limit.saturating_sub(fingerprint),
                })
            }
            other => other,
        }
    }

    /// Sends `item` to the ref's local subscribers. Errors are counted and
    /// logged here, so that none goes unnoticed without subscribers.
    pub(crate) fn publish(&self, item: HubItem<T>) {
        match &item {
            HubItem::Error(Error::Closed) => {
                tracing::debug!(key = %self.key, "the store closed a ref's watch")
            }
            HubItem::Error(error) => {
                crate::metrics::watch_error(self.backend().name());
                tracing::warn!(key = %self.key, %error, "a ref's change watch failed or saw an undecodable commit");
            }
            _ => {}
        }
        // An error means nobody subscribes, which is fine.
        drop(self.hub.send(Arc::new(item)));
    }

    pub(crate) fn missing(&self) -> Error {
        Error::Missing {
            key: self.key.clone(),
        }
    }

    pub(crate) fn contract_broken(&self, what: &str) -> Error {
        Error::Protocol {
            backend: self.backend().name(),
            message: format!("{what} of `{}` was rejected", self.key),
        }
    }

    fn fingerprint(&self) -> &str {
        // Built from a String in `new`.
        std::str::from_utf8(&self.type_field.1).unwrap_or_default()
    }

    /// Encodes field `index` of `value`, as stored.
    pub(crate) fn encode_field(&self, value: &T, index: usize) -> Result<Bytes> {
        let codec = self.ctx.inner.codec;
        value
            .encode_field(index, codec)
            .map(Bytes::from)
            .map_err(|e| Error::Encode {
                key: self.key.clone(),
                codec: codec.name(),
                message: format!("field `{}`: {e}", self.field_name(index)),
            })
    }

    /// [`encode_field`](Self::encode_field), appended to `out`.
    fn encode_field_into(&self, value: &T, index: usize, out: &mut Vec<u8>) -> Result<()> {
        let codec = self.ctx.inner.codec;
        value
            .encode_field_into(index, codec, out)
            .map_err(|e| Error::Encode {
                key: self.key.clone(),
                codec: codec.name(),
                message: format!("field `{}`: {e}", self.field_name(index)),
            })
    }

    /// The fields of a `Put` of `value`: the type fingerprint, then every
    /// value field.
    pub(crate) fn encode_put(&self, value: &T) -> Result<Vec<(FieldName, Bytes)>> {
        let mut fields = Vec::with_capacity(self.names.len() + 1);
        fields.push(self.type_field.clone());
        let mut size = 0;
        for (index, name) in self.names.iter().enumerate() {
            let bytes = self.encode_field(value, index)?;
            size += bytes.len();
            fields.push((name.clone(), bytes));
        }
        self.check_size(size)?;
        Ok(fields)
    }

    /// A `Put` of `value` under `condition`, and the [`put_digests`] of
    /// its fields.
    pub(crate) fn put_write(&self, value: &T, condition: Condition) -> Result<(Write, Digests)> {
        let fields = self.encode_put(value)?;
        let digests = put_digests::<T>(&fields);
        let write = Write::new(self.key.clone(), Op::Put(fields)).when(condition);
        Ok((write, digests))
    }

    /// A `Put` of this ref's fields with empty values, for
    /// [`reuse_put`](Self::reuse_put) to fill.
    fn blank_put(&self) -> Write {
        let mut fields = Vec::with_capacity(self.names.len() + 1);
        fields.push(self.type_field.clone());
        fields.extend(self.names.iter().map(|name| (name.clone(), Bytes::new())));
        Write::new(self.key.clone(), Op::Put(fields))
    }

    /// Whether `write` is still what [`blank_put`](Self::blank_put) made,
    /// but for its values and condition: the very key, no lease, no size limit,
    /// and a `Put` of the fingerprint and the very names of the ref's
    /// fields, in order.
    #[inline]
    fn is_own_put(&self, write: &Write) -> bool {
        let Op::Put(fields) = &write.op else {
            return false;
        };
        let Some(((fingerprint, _), values)) = fields.split_first() else {
            return false;
        };
        Arc::ptr_eq(fingerprint, &self.type_field.0)
            && values.len() == self.names.len()
            && values
                .iter()
                .zip(&*self.names)
                .all(|((name, _), ours)| Arc::ptr_eq(name, ours))
            && write.lease.is_none()
            && write.max_record_bytes.is_none()
            && write.key.is(&self.key)
    }

    /// [`put_write`](Self::put_write) (the same write and digests), made
    /// in `parts` from the last write made there: the key and the field
    /// names stay, the condition is set and every value refilled (each
    /// encoded through their buffer into bytes of its exact size).
    pub(crate) fn reuse_put<'p>(
        &self,
        parts: &'p mut PutParts,
        value: &T,
        condition: Condition,
    ) -> Result<(&'p mut Write, Digests)> {
        let PutParts { write, scratch } = parts;
        if !write.as_ref().is_some_and(|w| self.is_own_put(w)) {
            // A backend took more than the values it keeps (which
            // `Backend::try_write` forbids): made again, as on first use.
            *write = None;
        }
        let write = write.get_or_insert_with(|| self.blank_put());
        write.condition = condition;
        let Op::Put(fields) = &mut write.op else {
            // `is_own_put` checked, or `blank_put` made, a `Put`.
            return Err(Error::Protocol {
                backend: self.backend().name(),
                message: format!("the reused write of `{}` is no longer a put", self.key),
            });
        };
        let mut values = fields.iter_mut();
        if let Some((_, fingerprint)) = values.next() {
            // (Still the same bytes unless the backend took them.)
            let ours = &self.type_field.1;
            if fingerprint.as_ptr() != ours.as_ptr() || fingerprint.len() != ours.len() {
                *fingerprint = ours.clone();
            }
        }
        let mut size = 0;
        for (index, (_, bytes)) in values.enumerate() {
            scratch.clear();
            self.encode_field_into(value, index, scratch)?;
            size += scratch.len();
            *bytes = Bytes::copy_from_slice(scratch);
        }
        self.check_size(size)?;
        let digests = put_digests::<T>(fields);
        Ok((write, digests))
    }

    /// A `Patch` of one field under `condition`. The record it produces is
    /// limited by the store, atomically: this node does not know the
    /// current size of the fields it leaves as they are.
    pub(crate) fn patch_write(&self, name: FieldName, bytes: Bytes, condition: Condition) -> Write {
        // The limit is on the value's fields; the store also counts the
        // fingerprint's.
        let fingerprint = self.type_field.1.len();
        Write::new(self.key.clone(), Op::Patch(vec![(name, bytes)]))
            .when(condition)
            .with_max_record_bytes(self.ctx.inner.max_value_bytes + fingerprint)
    }

    /// The `mod_revision` of field `name` in `record`.
    pub(crate) fn field_revision(&self, record: &Record, name: &str) -> Result<u64> {
        record
            .field(name)
            .map(|f| f.mod_revision)
            .ok_or_else(|| self.decode_error(name, "the field is missing from the record"))
    }

    /// Brings the cache up to a commit of field `index` at `revision`,
    /// given the cached value and its revision from just before the write,
    /// the written bytes, and how the write changes a value.
    ///
    /// A patch changes one field of a record that other nodes may have
    /// changed since this node last saw it, so the cache may be patched in
    /// place only when nothing else can have been committed in between:
    /// when our commit took the revision right after the cached one
    /// (revisions are store-wide and strictly increasing). Otherwise a
    /// stale view of the other fields could be cached at our revision, and
    /// a later whole-struct update would write it back; then the ref's
    /// watcher, which decodes the whole record at each revision, delivers
    /// the commit (see [`catch_up`](Self::catch_up)).
    pub(crate) async fn field_committed(
        &self,
        index: usize,
        before: Option<(T, u64)>,
        revision: u64,
        bytes: &[u8],
        apply: impl FnOnce(&mut T),
    ) {
        match before {
            Some((mut value, cached)) if cached.checked_add(1) == Some(revision) => {
                apply(&mut value);
                self.commit_field(revision, index, value, bytes);
            }
            _ => self.catch_up(revision).await,
        }
    }

    /// Waits until the ref's watcher has brought the cache to `revision`.
    /// If it does not within [`CATCH_UP`] (a watch reconnecting, an
    /// undecodable record), one read refreshes the cache instead. The
    /// write is committed either way, so a failure here is only logged.
    pub(crate) async fn catch_up(&self, revision: u64) {
        // The watcher updates the cache before it publishes, so checking the
        // cache after subscribing misses nothing.
        let mut hub = self.hub.subscribe();
        let delivered = tokio::time::timeout(CATCH_UP, async {
            loop {
                if self.cache_revision() >= revision {
                    return true;
                }
                match hub.recv().await {
                    Ok(item) => {
                        if let HubItem::Error(_) = &*item {
                            return false;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return false,
                }
            }
        })
        .await
        .unwrap_or(false);
        if delivered || self.cache_revision() >= revision {
            return;
        }
        let refreshed = match self.read().await {
            Ok(record) => self.observe_record(record.as_ref()).map(drop),
            Err(e) => Err(e),
        };
        if let Err(error) = refreshed {
            tracing::debug!(key = %self.key, %error, "could not refresh the cache after a field write");
        }
    }

    pub(crate) fn check_size(&self, size: usize) -> Result<()> {
        let limit = self.ctx.inner.max_value_bytes;
        if size > limit {
            return Err(Error::ValueTooLarge {
                key: self.key.clone(),
                size,
                limit,
            });
        }
        Ok(())
    }

    /// The stored name of field `index`, tolerating a bad index from a
    /// hand-written `Value` impl.
    fn field_name(&self, index: usize) -> &str {
        self.names.get(index).map_or("<unknown>", |n| n)
    }

    pub(crate) fn decode_error(&self, field: &str, message: impl std::fmt::Display) -> Error {
        Error::Decode {
            key: self.key.clone(),
            field: field.to_owned(),
            codec: self.ctx.inner.codec.name(),
            message: message.to_string(),
        }
    }

    /// Checks the record's type fingerprint. Records written by other
    /// clients may leave it out; then the fields are decoded as they are.
    pub(crate) fn check_type(&self, record: &Record) -> Result<()> {
        match record.field(TYPE_FIELD) {
            Some(f) if f.value != self.type_field.1 => Err(Error::TypeMismatch {
                key: self.key.clone(),
                stored: String::from_utf8_lossy(&f.value).into_owned(),
                expected: self.fingerprint().to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Decodes a whole record.
    pub(crate) fn decode_record(&self, record: &Record) -> Result<(T, Vec<(u64, u64)>)> {
        self.check_type(record)?;
        let tracked = tracks_fields::<T>();
        let mut slices = Vec::with_capacity(self.names.len());
        let mut fields = Vec::with_capacity(if tracked { self.names.len() } else { 0 });
        for name in self.names.iter() {
            let field = record
                .field(name)
                .ok_or_else(|| self.decode_error(name, "the field is missing from the record"))?;
            slices.push(&field.value[..]);
            if tracked {
                fields.push((digest(&field.value), field.mod_revision));
            }
        }
        let value = T::decode_fields(&slices, self.ctx.inner.codec)
            .map_err(|(index, e)| self.decode_error(self.field_name(index), e))?;
        Ok((value, fields))
    }

    /// Decodes a changed field as a change event; `None` for fields this
    /// type does not know (the fingerprint, or extra fields of other
    /// writers).
    pub(crate) fn decode_change(&self, name: &str, bytes: &[u8]) -> Option<Result<T::Change>> {
        let index = self.names.iter().position(|n| &**n == name)?;
        Some(
            T::decode_change(index, bytes, self.ctx.inner.codec)
                .map_err(|e| self.decode_error(name, e)),
        )
    }

    /// Takes in a record read from the store (or returned by a rejected
    /// write) and returns its value.
    pub(crate) fn observe_record(&self, record: Option<&Record>) -> Result<Option<T>> {
        let Some(record) = record else {
            self.write_cache().value = None;
            return Ok(None);
        };
        let (value, fields) = self.decode_record(record)?;
        let mut cache = self.write_cache();
        if record.mod_revision >= cache.mod_revision {
            *cache = Cache {
                value: Some(value.clone()),
                mod_revision: record.mod_revision,
                fields,
            };
        }
        Ok(Some(value))
    }

    /// Records a committed `Put` of `value` made by this node, given the
    /// [`put_digests`] of its fields. Returns the cache generation that
    /// holds it, `None` when the cache already held a later revision.
    pub(crate) fn commit_put(&self, revision: u64, value: T, digests: &Digests) -> Option<u64> {
        let mut cache = self.write_cache();
        if revision <= cache.mod_revision {
            return None;
        }
        // (A type that keeps no field revisions has no digests and an empty
        // field list, see `tracks_fields`.)
        let digests = digests.as_slice();
        if cache.fields.len() == digests.len() {
            for (slot, new) in cache.fields.iter_mut().zip(digests) {
                if slot.0 != *new {
                    *slot = (*new, revision);
                }
            }
        } else {
            cache.fields = digests.iter().map(|d| (*d, revision)).collect();
        }
        cache.value = Some(value);
        cache.mod_revision = revision;
        // Writers of the cache hold its lock, which keeps this current.
        Some(self.generation.load(Ordering::Relaxed))
    }

    /// Records a committed `Patch` of one field made by this node.
    pub(crate) fn commit_field(&self, revision: u64, index: usize, value: T, bytes: &[u8]) {
        let mut cache = self.write_cache();
        if revision <= cache.mod_revision {
            return;
        }
        if let Some(slot) = cache.fields.get_mut(index) {
            *slot = (digest(bytes), revision);
        }
        cache.value = Some(value);
        cache.mod_revision = revision;
    }

    /// Records a delete (by this node or seen in the watch).
    pub(crate) fn commit_delete(&self, revision: u64) {
        let mut cache = self.write_cache();
        if revision > cache.mod_revision {
            cache.value = None;
            cache.mod_revision = revision;
        }
    }

    /// Records a value seen by the watcher at `revision`.
    pub(crate) fn commit_seen(&self, revision: u64, value: Option<(T, Vec<(u64, u64)>)>) {
        let mut cache = self.write_cache();
        if revision <= cache.mod_revision {
            return;
        }
        match value {
            Some((value, fields)) => {
                cache.value = Some(value);
                cache.fields = fields;
            }
            None => cache.value = None,
        }
        cache.mod_revision = revision;
    }

    /// Write access to the cache, which moves its generation on first.
    fn write_cache(&self) -> RwLockWriteGuard<'_, Cache<T>> {
        let cache = self.cache.write();
        // Writers hold the lock: a load and a store do (no read-modify-write).
        let next = self.generation.load(Ordering::Relaxed).wrapping_add(1);
        self.generation.store(next, Ordering::Release);
        cache
    }

    /// A number that moves on whenever the cache is written: a copy of
    /// the cache taken at one generation is still what the cache holds
    /// while it has not moved on. Read without a lock.
    pub(crate) fn cache_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn cache_revision(&self) -> u64 {
        self.cache.read().mod_revision
    }

    /// The cached value and the revision it is current at.
    pub(crate) fn cached(&self) -> Option<(T, u64)> {
        let cache = self.cache.read();
        cache.value.clone().map(|v| (v, cache.mod_revision))
    }

    /// The cached value with one field's stored `mod_revision`.
    pub(crate) fn cached_field(&self, index: usize) -> Option<(T, u64)> {
        let cache = self.cache.read();
        let revision = cache.fields.get(index)?.1;
        cache.value.clone().map(|v| (v, revision))
    }

    pub(crate) fn peek(&self) -> Option<T> {
        self.cache.read().value.clone()
    }
}
