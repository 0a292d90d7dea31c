//! Per-field handles on refs of `#[distributed]` structs.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::changes::{Change, ChangeKind, Changes, HubItem};
use crate::codec::{Codec, CodecError};
use crate::engine::{Condition, FieldName, Record, WriteOutcome};
use crate::reference::{DRef, RefShared};
use crate::value::Value;
use crate::{Error, Result};

/// What the type of a stored field of a `#[distributed]` struct must be.
///
/// Implemented for every type that is `Serialize + DeserializeOwned + Clone
/// + PartialEq + Send + Sync + 'static`: primitives, strings, collections
/// (`Vec`, `HashMap`, `Option`, ...) and serde structs nested inside.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the type of a stored `#[distributed]` field",
    note = "a stored field's type must be `Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + 'static`; mark a local-only field `#[dref(skip)]`"
)]
pub trait FieldValue:
    Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + 'static
{
}

impl<F> FieldValue for F where
    F: Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + 'static
{
}

/// The field handles of a ref whose value has no per-field handles (every
/// type that is not a `#[distributed]` struct): an empty struct.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoFields;

/// The shared state of one ref, handed to [`Value::fields`] so that the
/// generated field accessors of a `#[distributed]` struct can build their
/// [`FieldRef`] handles. Cheap to clone.
pub struct RefCore<T: Value> {
    shared: Arc<RefShared<T>>,
}

impl<T: Value> Clone for RefCore<T> {
    fn clone(&self) -> Self {
        RefCore {
            shared: self.shared.clone(),
        }
    }
}

impl<T: Value> fmt::Debug for RefCore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefCore")
            .field("key", &self.shared.key)
            .finish()
    }
}

impl<T: Value> DRef<T> {
    pub(crate) fn from_shared(shared: Arc<RefShared<T>>) -> Self {
        let fields = T::fields(&RefCore {
            shared: shared.clone(),
        });
        DRef { shared, fields }
    }

    /// The per-field handles of this ref (for a `#[distributed]` struct
    /// `Flags`, the generated `FlagsFields`). `DRef<T>` also dereferences to
    /// them, so `flags.rollout()` works directly; call
    /// `flags.fields().get()` for a field whose name collides with a method
    /// of `DRef` such as `get`, `set` or `key`.
    pub fn fields(&self) -> &T::Fields {
        &self.fields
    }
}

impl<T: Value> Deref for DRef<T> {
    type Target = T::Fields;

    fn deref(&self) -> &T::Fields {
        &self.fields
    }
}

/// How long a field write waits for the ref's watcher to deliver the commit
/// into the local cache before reading the record instead.
const CATCH_UP: Duration = Duration::from_secs(2);

/// A handle on one stored field of a `#[distributed]` struct held in a
/// [`DRef`], returned by the generated accessors.
///
/// For `#[distributed] struct Flags { beta_feature: bool, rollout: u8 }`,
/// a `DRef<Flags>` dereferences to the generated `FlagsFields`, whose
/// methods `flags.rollout()` and `flags.beta_feature()` return a
/// `FieldRef`: a handle that reads, writes and watches that one field.
///
/// [`get`](FieldRef::get) is linearizable and [`peek`](FieldRef::peek) is
/// this node's latest view, as for [`DRef`]. A write is a `Patch` of that
/// one stored field, so it sends and stores only that field and yields one
/// change event. Updates are optimistic compare-and-set writes conditional
/// on that field's own revision only: two nodes updating *different* fields
/// of one struct concurrently both succeed without a retry, while updates
/// of the *same* field are serialized (the loser retries with the record
/// the store returned). An update of the whole struct through [`DRef`]
/// stays conditional on the whole record.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dref::Result<()> {
/// use dref::{distributed, Context};
///
/// #[distributed]
/// #[derive(Clone, Debug, PartialEq)]
/// struct Flags {
///     beta_feature: bool,
///     rollout: u8,
/// }
///
/// let ctx = Context::local();
/// let flags = ctx
///     .make(Flags::id("flags"), Flags { beta_feature: false, rollout: 0 })
///     .await?;
/// flags.rollout().set(5).await?;                 // one-field write
/// flags.beta_feature().update(|b| !b).await?;    // conditional on that field only
/// assert_eq!(flags.get().await?, Flags { beta_feature: true, rollout: 5 });
/// assert_eq!(flags.rollout().get().await?, 5);
/// # Ok(()) }
/// ```
pub struct FieldRef<T: Value, F> {
    shared: Arc<RefShared<T>>,
    index: usize,
    get: fn(&T) -> &F,
    get_mut: fn(&mut T) -> &mut F,
    change: fn(T::Change) -> Option<F>,
}

impl<T: Value, F> Clone for FieldRef<T, F> {
    fn clone(&self) -> Self {
        FieldRef {
            shared: self.shared.clone(),
            index: self.index,
            get: self.get,
            get_mut: self.get_mut,
            change: self.change,
        }
    }
}

impl<T: Value, F> fmt::Debug for FieldRef<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldRef")
            .field("key", &self.shared.key)
            .field("field", &self.name())
            .finish()
    }
}

/// Builds a field handle (used by the code `#[distributed]` generates).
#[doc(hidden)]
pub fn field_ref<T: Value, F: FieldValue>(
    core: &RefCore<T>,
    index: usize,
    get: fn(&T) -> &F,
    get_mut: fn(&mut T) -> &mut F,
    change: fn(T::Change) -> Option<F>,
) -> FieldRef<T, F> {
    FieldRef {
        shared: core.shared.clone(),
        index,
        get,
        get_mut,
        change,
    }
}

impl<T: Value, F> FieldRef<T, F> {
    /// The stored name of the field.
    pub fn name(&self) -> &str {
        self.shared.names.get(self.index).map_or("", |n| n)
    }

    fn field_name(&self) -> Result<FieldName> {
        self.shared
            .names
            .get(self.index)
            .cloned()
            .ok_or_else(|| Error::Config(format!("no stored field #{}", self.index)))
    }
}

impl<T: Value, F: FieldValue> FieldRef<T, F> {
    /// The field's current value (linearizable). Fails with
    /// [`Error::Missing`] if the record was deleted.
    pub async fn get(&self) -> Result<F> {
        let record = self.shared.read().await?;
        let value = self
            .shared
            .observe_record(record.as_ref())?
            .ok_or_else(|| self.shared.missing())?;
        Ok((self.get)(&value).clone())
    }

    /// The latest value of the field this node has observed, without a
    /// round trip (see [`DRef::peek`]).
    pub fn peek(&self) -> Option<F> {
        self.shared.peek().map(|v| (self.get)(&v).clone())
    }

    /// Replaces the field's value, leaving the other fields untouched.
    /// Fails with [`Error::Missing`] if the record was deleted.
    pub async fn set(&self, value: F) -> Result<()> {
        let name = self.field_name()?;
        let bytes = self.encode(&name, &value)?;
        let before = self.shared.cached();
        match self
            .shared
            .patch(name, bytes.clone(), Condition::Any)
            .await?
        {
            WriteOutcome::Committed { revision, .. } => {
                self.committed(before, revision, value, &bytes).await;
                Ok(())
            }
            WriteOutcome::Rejected { current: None } => {
                self.shared.observe_record(None)?;
                Err(self.shared.missing())
            }
            WriteOutcome::Rejected { current: Some(_) } => {
                Err(self.shared.contract_broken("an unconditional patch"))
            }
        }
    }

    /// Atomically replaces the field with `f(field)`. `f` may run more than
    /// once when another writer changes *this* field meanwhile; writes to
    /// other fields never make it retry.
    pub async fn update(&self, mut f: impl FnMut(F) -> F) -> Result<()> {
        self.field_loop(|v| std::future::ready(Ok::<_, Error>(((), f(v)))))
            .await?;
        Ok(())
    }

    /// Atomically replaces the field with `f(field)`; returns the new value.
    pub async fn update_and_get(&self, mut f: impl FnMut(F) -> F) -> Result<F> {
        let (_, _, new) = self
            .field_loop(|v| std::future::ready(Ok::<_, Error>(((), f(v)))))
            .await?;
        Ok(new)
    }

    /// Atomically replaces the field with `f(field)`; returns the old value.
    pub async fn get_and_update(&self, mut f: impl FnMut(F) -> F) -> Result<F> {
        let (_, old, _) = self
            .field_loop(|v| std::future::ready(Ok::<_, Error>(((), f(v)))))
            .await?;
        Ok(old)
    }

    /// Atomically replaces the field with the second half of `f(field)` and
    /// returns the first half.
    pub async fn modify<B>(&self, mut f: impl FnMut(F) -> (B, F)) -> Result<B> {
        let (b, _, _) = self
            .field_loop(|v| std::future::ready(Ok::<_, Error>(f(v))))
            .await?;
        Ok(b)
    }

    /// [`update`](FieldRef::update) with an async closure that may await
    /// other work and may fail: its error aborts the update (nothing is
    /// written) and is returned. Errors of dref itself are converted with
    /// `From`.
    pub async fn update_async<E, Fun, Fut>(&self, mut f: Fun) -> Result<(), E>
    where
        Fun: FnMut(F) -> Fut,
        Fut: Future<Output = Result<F, E>>,
        E: From<Error>,
    {
        self.field_loop(|v| {
            let fut = f(v);
            async move { fut.await.map(|new| ((), new)) }
        })
        .await?;
        Ok(())
    }

    /// [`modify`](FieldRef::modify) with an async, fallible closure (see
    /// [`update_async`](FieldRef::update_async)).
    pub async fn modify_async<B, E, Fun, Fut>(&self, f: Fun) -> Result<B, E>
    where
        Fun: FnMut(F) -> Fut,
        Fut: Future<Output = Result<(B, F), E>>,
        E: From<Error>,
    {
        let (b, _, _) = self.field_loop(f).await?;
        Ok(b)
    }

    /// Every change of this field committed after this call: its new value
    /// for each write that changed it, plus deletes, expiries and resyncs of
    /// the record (a resync carries this field of the current value).
    /// Writes that leave this field's bytes unchanged yield nothing.
    pub fn changes(&self) -> FieldChanges<F> {
        let (get, change) = (self.get, self.change);
        let inner = Changes::new(self.shared.clone()).filter_map(move |item| {
            let mapped = match item {
                Err(e) => Some(Err(e)),
                Ok(Change { revision, kind }) => {
                    let kind = match kind {
                        ChangeKind::Updated(c) => change(c).map(ChangeKind::Updated),
                        ChangeKind::Deleted => Some(ChangeKind::Deleted),
                        ChangeKind::Expired => Some(ChangeKind::Expired),
                        ChangeKind::Resync(value) => {
                            Some(ChangeKind::Resync(value.map(|v| get(&v).clone())))
                        }
                    };
                    kind.map(|kind| Ok(Change { revision, kind }))
                }
            };
            std::future::ready(mapped)
        });
        FieldChanges {
            inner: inner.boxed(),
        }
    }

    fn encode(&self, name: &FieldName, value: &F) -> Result<Bytes> {
        let codec: Codec = self.shared.ctx.inner.codec;
        let bytes = codec
            .encode(value)
            .map(Bytes::from)
            .map_err(|e| Error::Encode {
                key: self.shared.key.clone(),
                codec: codec.name(),
                message: format!("field `{name}`: {e}"),
            })?;
        self.shared.check_size(bytes.len())?;
        Ok(bytes)
    }

    /// The field's value and `mod_revision` in `record`.
    fn in_record(&self, record: &Record, name: &str) -> Result<(F, u64)> {
        let value = self
            .shared
            .observe_record(Some(record))?
            .ok_or_else(|| self.shared.missing())?;
        let revision = record
            .field(name)
            .map(|f| f.mod_revision)
            .ok_or_else(|| Error::Decode {
                key: self.shared.key.clone(),
                field: name.to_owned(),
                codec: self.shared.ctx.inner.codec.name(),
                message: "the field is missing from the record".into(),
            })?;
        Ok(((self.get)(&value).clone(), revision))
    }

    /// The optimistic update loop of a field: compute from the freshest
    /// known value of the field, patch it conditional on the field's
    /// `mod_revision`, and on rejection retry with the returned record.
    async fn field_loop<B, E, Fun, Fut>(&self, mut f: Fun) -> Result<(B, F, F), E>
    where
        Fun: FnMut(F) -> Fut,
        Fut: Future<Output = Result<(B, F), E>>,
        E: From<Error>,
    {
        let shared = &self.shared;
        let name = self.field_name()?;
        let (mut current, mut revision) = match shared.cached_field(self.index) {
            Some((value, revision)) => ((self.get)(&value).clone(), revision),
            None => {
                // Deleted as far as we know: confirm with a read.
                let record = shared.read().await?;
                match record {
                    Some(record) => self.in_record(&record, &name)?,
                    None => {
                        shared.observe_record(None)?;
                        return Err(shared.missing().into());
                    }
                }
            }
        };
        loop {
            let (b, new) = f(current.clone()).await?;
            let bytes = self.encode(&name, &new)?;
            let before = shared.cached();
            let condition = Condition::FieldModRevision {
                field: name.clone(),
                revision,
            };
            match shared.patch(name.clone(), bytes.clone(), condition).await? {
                WriteOutcome::Committed { revision, .. } => {
                    self.committed(before, revision, new.clone(), &bytes).await;
                    return Ok((b, current, new));
                }
                WriteOutcome::Rejected {
                    current: Some(record),
                } => (current, revision) = self.in_record(&record, &name)?,
                WriteOutcome::Rejected { current: None } => {
                    shared.observe_record(None)?;
                    return Err(shared.missing().into());
                }
            }
        }
    }

    /// Brings the ref's cache up to our patch of this field, committed at
    /// `revision`, given the cached value and its revision from just before
    /// the write.
    ///
    /// A patch changes one field of a record that other nodes may have
    /// changed since this node last saw it, so the cache may be patched in
    /// place only when nothing else can have been committed in between:
    /// when our commit took the revision right after the cached one
    /// (revisions are store-wide and strictly increasing). Otherwise a
    /// stale view of the other fields could be cached at our revision, and
    /// a later whole-struct update would write it back. In that case the
    /// ref's watcher, which decodes the whole record at each revision,
    /// delivers the commit; see [`catch_up`](Self::catch_up).
    async fn committed(&self, before: Option<(T, u64)>, revision: u64, new: F, bytes: &[u8]) {
        match before {
            Some((mut value, cached)) if cached.checked_add(1) == Some(revision) => {
                *(self.get_mut)(&mut value) = new;
                self.shared.commit_field(revision, self.index, value, bytes);
            }
            _ => self.catch_up(revision).await,
        }
    }

    /// Waits until the ref's watcher has brought the cache to `revision`.
    /// If it does not within [`CATCH_UP`] (a watch reconnecting, an
    /// undecodable record), one read refreshes the cache instead. The
    /// write is committed either way, so failures here are not reported.
    async fn catch_up(&self, revision: u64) {
        let shared = &self.shared;
        // The watcher updates the cache before it publishes, so checking the
        // cache after subscribing misses nothing.
        let mut hub = shared.hub.subscribe();
        let delivered = tokio::time::timeout(CATCH_UP, async {
            loop {
                if shared.cache_revision() >= revision {
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
        if !delivered && shared.cache_revision() < revision {
            if let Ok(record) = shared.read().await {
                let _ = shared.observe_record(record.as_ref());
            }
        }
    }
}

/// The stream returned by [`FieldRef::changes`]: [`Change`]s of one field,
/// whose `Updated` events carry the field's new value.
///
/// Items are `Err` when a commit could not be decoded or the backend is
/// unreachable; the stream goes on after them.
pub struct FieldChanges<F: FieldValue> {
    inner: BoxStream<'static, Result<Change<F>>>,
}

impl<F: FieldValue> fmt::Debug for FieldChanges<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldChanges").finish_non_exhaustive()
    }
}

impl<F: FieldValue> Stream for FieldChanges<F> {
    type Item = Result<Change<F>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

// Helpers for the code `#[distributed]` generates.

/// Checks at compile time that a stored field's type is a [`FieldValue`].
#[doc(hidden)]
pub fn assert_field_value<F: FieldValue>() {}

/// Checks at compile time that a `#[distributed]` struct can be a [`Value`].
#[doc(hidden)]
pub fn assert_distributed<T: Clone + Send + Sync + 'static>() {}

/// Decodes stored field `index` out of the fields of a record.
#[doc(hidden)]
pub fn decode_field<F: DeserializeOwned>(
    fields: &[&[u8]],
    index: usize,
    codec: Codec,
) -> std::result::Result<F, (usize, CodecError)> {
    let bytes = fields
        .get(index)
        .ok_or_else(|| (index, CodecError("the field is missing".into())))?;
    codec.decode(bytes).map_err(|e| (index, e))
}

/// The error for a field index a `#[distributed]` struct does not have.
#[doc(hidden)]
pub fn no_such_field(index: usize) -> CodecError {
    CodecError(format!("no stored field #{index}"))
}
