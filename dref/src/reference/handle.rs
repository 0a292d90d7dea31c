//! `DRef<T>`: a typed distributed reference.

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use super::changes::{Changes, Subscription, Values};
use super::shared::{put_digests, RefShared};
use super::update::{update, Target};
use super::value::{RefCore, Value};
use super::watcher;
use crate::context::Context;
use crate::engine::{Condition, Field, Key, Op, Record, Write, WriteOutcome};
use crate::id::RefId;
use crate::{Error, Result};

/// A distributed reference to a `T`: every node that makes a ref with the
/// same id shares one record.
///
/// Reads through [`get`](DRef::get) are linearizable; [`peek`](DRef::peek)
/// returns the latest value this node has seen without a round trip. Updates
/// are optimistic compare-and-set writes conditional on the record's
/// revision, retried with the current record on conflict: one store round
/// trip when uncontended, and never a lock. Concurrent updates through one
/// context are combined: while one update's write is in flight, later ones
/// queue, and the next write carries all of their results, each closure
/// applied to its predecessor's in arrival order (see the ref layer's
/// notes). Clones share one local cache and one watch on the store.
pub struct DRef<T: Value> {
    pub(super) shared: Arc<RefShared<T>>,
    /// Per-field handles (see `field.rs`), reached through `Deref`.
    fields: T::Fields,
}

impl<T: Value> Clone for DRef<T> {
    fn clone(&self) -> Self {
        DRef::from_shared(self.shared.clone())
    }
}

impl<T: Value + std::fmt::Debug> std::fmt::Debug for DRef<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DRef")
            .field("key", &self.shared.key)
            .field("value", &self.peek())
            .finish()
    }
}

impl Context {
    /// Gets or creates the ref named by `id`: the first node seeds it with
    /// `initial`, later nodes attach to the existing record (and `initial`
    /// is dropped). Fails with [`Error::TypeMismatch`] if the record was
    /// written for another type or codec.
    ///
    /// `id` is a [`ManualId`](crate::ManualId), or an
    /// [`AutoId`](crate::AutoId) derived from the call site; see also
    /// [`make_here`](Context::make_here).
    pub async fn make<T: Value>(&self, id: impl RefId<T>, initial: T) -> Result<DRef<T>> {
        DRef::open(self, id.key(), initial).await
    }

    /// [`make`](Context::make) with an [`AutoId`](crate::AutoId) taken from
    /// the caller's source location and `T`: the same binary on every node
    /// names the same ref.
    #[track_caller]
    pub fn make_here<T: Value>(&self, initial: T) -> impl Future<Output = Result<DRef<T>>> + '_ {
        let id = crate::AutoId::<T>::here();
        self.make(id, initial)
    }
}

impl<T: Value> DRef<T> {
    fn from_shared(shared: Arc<RefShared<T>>) -> Self {
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

    async fn open(ctx: &Context, key: Key, initial: T) -> Result<Self> {
        let shared = RefShared::new(ctx.clone(), key);
        let fields = shared.encode_put(&initial)?;
        let write = Write::new(shared.key.clone(), Op::Put(fields.clone())).when(Condition::Absent);
        let record = match shared.write(write).await? {
            WriteOutcome::Committed { revision, version } => {
                shared.commit_put(revision, initial, &put_digests::<T>(&fields));
                Record {
                    fields: fields
                        .into_iter()
                        .map(|(name, value)| Field {
                            name,
                            value,
                            mod_revision: revision,
                        })
                        .collect(),
                    version,
                    create_revision: revision,
                    mod_revision: revision,
                    lease: None,
                }
            }
            WriteOutcome::Rejected { current } => {
                let record = current.ok_or_else(|| Error::Protocol {
                    backend: ctx.inner.backend.name(),
                    message: format!(
                        "a create of `{}` was rejected but no record was returned",
                        shared.key
                    ),
                })?;
                shared.observe_record(Some(&record))?;
                record
            }
        };
        let shared = Arc::new(shared);
        watcher::spawn(&shared, record).await?;
        Ok(DRef::from_shared(shared))
    }

    /// The store key of this ref.
    pub fn key(&self) -> &Key {
        &self.shared.key
    }

    /// The context this ref belongs to.
    pub fn context(&self) -> &Context {
        &self.shared.ctx
    }

    /// The current value (linearizable). Fails with [`Error::Missing`] if the
    /// record was deleted.
    pub async fn get(&self) -> Result<T> {
        let record = self.shared.read().await?;
        self.shared
            .observe_record(record.as_ref())?
            .ok_or_else(|| self.shared.missing())
    }

    /// The latest value this node has observed (through its own writes,
    /// reads and the ref's change watch), without a round trip. `None` if
    /// the record is deleted as far as this node knows.
    pub fn peek(&self) -> Option<T> {
        self.shared.peek()
    }

    /// Replaces the value.
    pub async fn set(&self, value: T) -> Result<()> {
        let (write, digests) = self.shared.put_write(&value, Condition::Any)?;
        match self.shared.write(write).await? {
            WriteOutcome::Committed { revision, .. } => {
                self.shared.commit_put(revision, value, &digests);
                Ok(())
            }
            WriteOutcome::Rejected { .. } => {
                Err(self.shared.contract_broken("an unconditional put"))
            }
        }
    }

    /// Sets the value only if the record is absent (deleted or expired).
    /// Returns whether it was set.
    pub async fn set_if_absent(&self, value: T) -> Result<bool> {
        let (write, digests) = self.shared.put_write(&value, Condition::Absent)?;
        match self.shared.write(write).await? {
            WriteOutcome::Committed { revision, .. } => {
                self.shared.commit_put(revision, value, &digests);
                Ok(true)
            }
            WriteOutcome::Rejected { current } => {
                self.shared.observe_record(current.as_ref())?;
                Ok(false)
            }
        }
    }

    /// Deletes the record. Returns whether there was one. Afterwards `get`
    /// and the update methods fail with [`Error::Missing`] until the value
    /// is set again.
    pub async fn delete(&self) -> Result<bool> {
        let write = Write::new(self.shared.key.clone(), Op::Delete);
        match self.shared.write(write).await? {
            WriteOutcome::Committed { revision, .. } => {
                self.shared.commit_delete(revision);
                Ok(true)
            }
            WriteOutcome::Rejected { .. } => {
                self.shared.observe_record(None)?;
                Ok(false)
            }
        }
    }

    /// Atomically replaces the value with the second half of `f(value)` and
    /// returns the first half. `f` may run more than once under contention.
    pub async fn modify<B>(&self, mut f: impl FnMut(T) -> (B, T)) -> Result<B> {
        let (b, _, _) = self
            .cas_loop(|v| std::future::ready(Ok::<_, Error>(f(v))))
            .await?;
        Ok(b)
    }

    /// Atomically replaces the value with `f(value)`.
    pub async fn update(&self, mut f: impl FnMut(T) -> T) -> Result<()> {
        self.cas_loop(|v| std::future::ready(Ok::<_, Error>(((), f(v)))))
            .await?;
        Ok(())
    }

    /// Atomically replaces the value with `f(value)`; returns the old value.
    pub async fn get_and_update(&self, mut f: impl FnMut(T) -> T) -> Result<T> {
        let (_, old, _) = self
            .cas_loop(|v| std::future::ready(Ok::<_, Error>(((), f(v)))))
            .await?;
        Ok(old)
    }

    /// Atomically replaces the value with `f(value)`; returns the new value.
    pub async fn update_and_get(&self, mut f: impl FnMut(T) -> T) -> Result<T> {
        let (_, _, new) = self
            .cas_loop(|v| std::future::ready(Ok::<_, Error>(((), f(v)))))
            .await?;
        Ok(new)
    }

    /// [`modify`](DRef::modify) with an async closure that may await other
    /// work and may fail: its error aborts the update (nothing is written)
    /// and is returned. Errors of dref itself are converted with `From`.
    pub async fn modify_async<B, E, F, Fut>(&self, f: F) -> Result<B, E>
    where
        F: FnMut(T) -> Fut,
        Fut: Future<Output = Result<(B, T), E>>,
        E: From<Error>,
    {
        let (b, _, _) = self.cas_loop(f).await?;
        Ok(b)
    }

    /// [`update`](DRef::update) with an async, fallible closure (see
    /// [`modify_async`](DRef::modify_async)).
    pub async fn update_async<E, F, Fut>(&self, mut f: F) -> Result<(), E>
    where
        F: FnMut(T) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        self.cas_loop(|v| with_unit(f(v))).await?;
        Ok(())
    }

    /// [`get_and_update`](DRef::get_and_update) with an async, fallible
    /// closure (see [`modify_async`](DRef::modify_async)).
    pub async fn get_and_update_async<E, F, Fut>(&self, mut f: F) -> Result<T, E>
    where
        F: FnMut(T) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        let (_, old, _) = self.cas_loop(|v| with_unit(f(v))).await?;
        Ok(old)
    }

    /// [`update_and_get`](DRef::update_and_get) with an async, fallible
    /// closure (see [`modify_async`](DRef::modify_async)).
    pub async fn update_and_get_async<E, F, Fut>(&self, mut f: F) -> Result<T, E>
    where
        F: FnMut(T) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        let (_, _, new) = self.cas_loop(|v| with_unit(f(v))).await?;
        Ok(new)
    }

    /// The update loop behind every update method (see `update.rs`).
    async fn cas_loop<B, E, F, Fut>(&self, f: F) -> Result<(B, T, T), E>
    where
        F: FnMut(T) -> Fut,
        Fut: Future<Output = Result<(B, T), E>>,
        E: From<Error>,
    {
        update(&self.shared, &Target::Whole, f).await
    }

    /// Every change committed after this call, in order: per field for
    /// `#[distributed]` structs, the whole new value otherwise, plus deletes,
    /// expiries and resyncs (when this subscriber fell behind).
    pub fn changes(&self) -> Changes<T> {
        Changes::new(self.shared.clone())
    }

    /// The value after every commit made after this call (`None` when the
    /// record is deleted or expired). A subscriber that falls behind skips to
    /// the current value.
    pub fn values(&self) -> Values<T> {
        Values::new(self.shared.clone())
    }

    /// Calls `callback` with the value after every commit (see
    /// [`values`](DRef::values)) until the returned handle is dropped or
    /// cancelled. Errors (such as an undecodable write by another client)
    /// are skipped.
    pub fn on_change<F>(&self, callback: F) -> Subscription
    where
        F: FnMut(Option<T>) + Send + 'static,
    {
        Subscription::spawn(self.values(), callback)
    }
}

async fn with_unit<T, E>(fut: impl Future<Output = Result<T, E>>) -> Result<((), T), E> {
    fut.await.map(|v| ((), v))
}

impl<T: Value> Deref for DRef<T> {
    type Target = T::Fields;

    fn deref(&self) -> &T::Fields {
        &self.fields
    }
}
