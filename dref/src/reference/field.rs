//! Per-field handles on refs of `#[distributed]` structs.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use futures_core::Stream;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::change::{Change, ChangeKind};
use super::changes::Changes;
use super::combiner::{FieldSlot, Splice};
use super::shared::RefShared;
use super::update::{update, Target};
use super::value::{FieldValue, RefCore, Value};
use crate::codec::{Codec, CodecError};
use crate::engine::{Condition, WriteOutcome};
use crate::{Error, Result};

/// A handle on one stored field of a `#[distributed]` struct held in a
/// [`DRef`](crate::DRef), returned by the generated accessors.
///
/// For `#[distributed] struct Flags { beta_feature: bool, rollout: u8 }`,
/// a `DRef<Flags>` dereferences to the generated `FlagsFields`, whose
/// methods `flags.rollout()` and `flags.beta_feature()` return a
/// `FieldRef`: a handle that reads, writes and watches that one field.
///
/// [`get`](FieldRef::get) is linearizable and [`peek`](FieldRef::peek) is
/// this node's latest view, as for [`DRef`](crate::DRef). A write is a `Patch` of that
/// one stored field, so it sends and stores only that field and yields one
/// change event. Updates are optimistic compare-and-set writes conditional
/// on that field's own revision only: two nodes updating *different* fields
/// of one struct concurrently both succeed without a retry, while updates
/// of the *same* field are serialized (the loser retries with the record
/// the store returned). An update of the whole struct through [`DRef`](crate::DRef)
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
    /// `None` for an index the value type does not have (a hand-written
    /// `Value` impl): every operation then fails with `Config`.
    slot: Option<Arc<FieldSlot<T>>>,
    get: fn(&T) -> &F,
    get_mut: fn(&mut T) -> &mut F,
    change: fn(T::Change) -> Option<F>,
}

impl<T: Value, F> Clone for FieldRef<T, F> {
    fn clone(&self) -> Self {
        FieldRef {
            shared: self.shared.clone(),
            index: self.index,
            slot: self.slot.clone(),
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
    let splice = move || -> Splice<T> {
        Box::new(move |into: &mut T, from: &T| *get_mut(into) = get(from).clone())
    };
    FieldRef {
        shared: core.shared.clone(),
        index,
        slot: core.shared.field_slot(index, splice).ok(),
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

    fn slot(&self) -> Result<&Arc<FieldSlot<T>>> {
        self.slot
            .as_ref()
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
    /// round trip (see [`DRef::peek`](crate::DRef::peek)).
    pub fn peek(&self) -> Option<F> {
        self.shared.peek().map(|v| (self.get)(&v).clone())
    }

    /// Replaces the field's value, leaving the other fields untouched.
    /// Fails with [`Error::Missing`] if the record was deleted.
    pub async fn set(&self, value: F) -> Result<()> {
        let slot = self.slot()?;
        let bytes = self.encode(&value)?;
        let write = self
            .shared
            .patch_write(slot.name.clone(), bytes.clone(), Condition::Any);
        let before = self.shared.cached();
        match self.shared.write(write).await? {
            WriteOutcome::Committed { revision, .. } => {
                let get_mut = self.get_mut;
                let apply = |into: &mut T| *get_mut(into) = value;
                self.shared
                    .field_committed(slot.index, before, revision, &bytes, apply)
                    .await;
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

    fn encode(&self, value: &F) -> Result<Bytes> {
        let codec: Codec = self.shared.ctx.inner.codec;
        let bytes = codec
            .encode(value)
            .map(Bytes::from)
            .map_err(|e| Error::Encode {
                key: self.shared.key.clone(),
                codec: codec.name(),
                message: format!("field `{}`: {e}", self.name()),
            })?;
        self.shared.check_size(bytes.len())?;
        Ok(bytes)
    }

    /// The update loop of a field (see `update.rs`): `f` is applied to
    /// the field of the freshest known value, and the write is conditional
    /// on that field's `mod_revision` only.
    async fn field_loop<B, E, Fun, Fut>(&self, mut f: Fun) -> Result<(B, F, F), E>
    where
        Fun: FnMut(F) -> Fut,
        Fut: Future<Output = Result<(B, F), E>>,
        E: From<Error>,
    {
        let target = Target::Field(self.slot()?.clone());
        let (get, get_mut) = (self.get, self.get_mut);
        let whole = |mut value: T| {
            let old = get(&value).clone();
            let made = f(old.clone());
            async move {
                let (b, new) = made.await?;
                *get_mut(&mut value) = new.clone();
                Ok::<_, E>(((b, old, new), value))
            }
        };
        let (field, _, _) = update(&self.shared, &target, whole).await?;
        Ok(field)
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
