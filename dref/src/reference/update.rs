//! The one optimistic update loop of refs and fields, and the combining of
//! concurrent updates of one target.
//!
//! An update computes a new value from the freshest one this node knows,
//! writes it conditional on the revision it was computed from, and on a
//! rejection goes again from the record the store returned. On a backend
//! that answers at once ([`Backend::try_write`](crate::engine::Backend))
//! that is all. On any other, while one update of a target (the whole
//! record, or one field) has its write in flight, later updates of that
//! target queue; the next *round* applies the queued closures in arrival
//! order, each to its predecessor's result, starting from the freshest
//! value, and commits the last result with one conditional write. Every
//! caller gets the outcome it would have had alone at its place in that
//! order, and all of a round's updates take effect at its commit, so the
//! result stays linearizable. A rejected round applies the batch again to
//! the record the store returned; a closure that fails leaves the batch
//! with its error and the rest go on.
//!
//! Each caller's closure runs in the caller's own task (closures borrow
//! from their callers and need not be `'static`): the round is driven by a
//! spawned task that hands each caller the value to apply its closure to
//! and collects the result. A caller dropped at any point simply drops out
//! of the batch; its contribution stays if it had already given it, as a
//! write whose caller went away may or may not have committed.

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::combiner::{Combiner, FieldSlot, Turn};
use super::shared::{Digests, LaneState, RefShared};
use super::value::Value;
use crate::engine::{Condition, Write, WriteOutcome};
use crate::{Error, Result};

/// What an update writes: the whole record, or one stored field.
pub(crate) enum Target<T: Value> {
    Whole,
    Field(Arc<FieldSlot<T>>),
}

impl<T: Value> Clone for Target<T> {
    fn clone(&self) -> Self {
        match self {
            Target::Whole => Target::Whole,
            Target::Field(slot) => Target::Field(slot.clone()),
        }
    }
}

/// The right to write a busy target, held by the update whose write is in
/// flight. Dropping it (the update ended, or its future was dropped) hands
/// the target to the queued callers.
struct Claim<T: Value> {
    shared: Arc<RefShared<T>>,
    target: Target<T>,
}

impl<T: Value> Drop for Claim<T> {
    fn drop(&mut self) {
        let Some(round) = self.target.combiner(&self.shared).next_round() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(drive(self.shared.clone(), self.target.clone(), round));
            }
            Err(_) => {
                // No runtime to drive a round on: dropping the queued
                // callers' channels tells them to go on by themselves.
                tracing::debug!(key = %self.shared.key, "no runtime for an update round");
                drop(round);
                self.target.combiner(&self.shared).release();
            }
        }
    }
}

/// What a write needs to know to record its commit.
enum Written<T> {
    Put(Digests),
    Field {
        bytes: Bytes,
        before: Option<(T, u64)>,
    },
}

/// Where an attempt ended.
enum Settled<T> {
    Done,
    /// Rejected: go again from this value, current at this revision.
    Retry(T, u64),
}

impl<T: Value> Target<T> {
    fn combiner<'a>(&'a self, shared: &'a RefShared<T>) -> &'a Combiner<T> {
        match self {
            Target::Whole => &shared.combiner,
            Target::Field(slot) => &slot.combiner,
        }
    }

    /// The freshest value this node knows and the revision a write of the
    /// target must be conditional on; a read when the cache has none.
    async fn current(&self, shared: &RefShared<T>) -> Result<(T, u64)> {
        let cached = match self {
            Target::Whole => shared.cached(),
            Target::Field(slot) => shared.cached_field(slot.index),
        };
        if let Some(known) = cached {
            return Ok(known);
        }
        // Deleted as far as we know: confirm with a read.
        let record = shared.read().await?;
        let value = shared
            .observe_record(record.as_ref())?
            .ok_or_else(|| shared.missing())?;
        let revision = match (self, &record) {
            (Target::Field(slot), Some(record)) => shared.field_revision(record, &slot.name)?,
            (_, record) => record.as_ref().map_or(0, |r| r.mod_revision),
        };
        Ok((value, revision))
    }

    /// The conditional write of `new`, computed from the value current at
    /// `revision`.
    fn prepare(
        &self,
        shared: &RefShared<T>,
        new: &T,
        revision: u64,
    ) -> Result<(Write, Written<T>)> {
        match self {
            Target::Whole => {
                let (write, digests) = shared.put_write(new, Condition::ModRevision(revision))?;
                Ok((write, Written::Put(digests)))
            }
            Target::Field(slot) => {
                let bytes = shared.encode_field(new, slot.index)?;
                shared.check_size(bytes.len())?;
                let condition = Condition::FieldModRevision {
                    field: slot.name.clone(),
                    revision,
                };
                let write = shared.patch_write(slot.name.clone(), bytes.clone(), condition);
                let before = shared.cached();
                Ok((write, Written::Field { bytes, before }))
            }
        }
    }

    /// Records the outcome of a write of `new`.
    async fn settle(
        &self,
        shared: &RefShared<T>,
        outcome: WriteOutcome,
        new: &T,
        written: Written<T>,
    ) -> Result<Settled<T>> {
        match (self, outcome, written) {
            (Target::Whole, WriteOutcome::Committed { revision, .. }, Written::Put(digests)) => {
                shared.commit_put(revision, new.clone(), &digests);
                Ok(Settled::Done)
            }
            (
                Target::Field(slot),
                WriteOutcome::Committed { revision, .. },
                Written::Field { bytes, before },
            ) => {
                let splice = |into: &mut T| (slot.splice)(into, new);
                shared
                    .field_committed(slot.index, before, revision, &bytes, splice)
                    .await;
                Ok(Settled::Done)
            }
            (_, WriteOutcome::Committed { .. }, _) => {
                Err(shared.contract_broken("the record of a write"))
            }
            (target, WriteOutcome::Rejected { current }, _) => {
                let value = shared.observe_record(current.as_ref())?;
                match (value, current) {
                    (Some(value), Some(record)) => {
                        let revision = match target {
                            Target::Whole => record.mod_revision,
                            Target::Field(slot) => shared.field_revision(&record, &slot.name)?,
                        };
                        Ok(Settled::Retry(value, revision))
                    }
                    _ => Err(shared.missing()),
                }
            }
        }
    }
}

/// Updates `target` of the ref with `f`: returns the closure's result with
/// the value it was given and the value it made.
pub(crate) async fn update<T, B, E, F, Fut>(
    shared: &Arc<RefShared<T>>,
    target: &Target<T>,
    f: F,
) -> Result<(B, T, T), E>
where
    T: Value,
    F: FnMut(T) -> Fut,
    Fut: Future<Output = Result<(B, T), E>>,
    E: From<Error>,
{
    let span = shared.span("update");
    if span.is_disabled() {
        // (Not wrapping the future spares moving it for a span that
        // records nothing.)
        update_in_span(shared, target, f).await
    } else {
        update_in_span(shared, target, f).instrument(span).await
    }
}

async fn update_in_span<T, B, E, F, Fut>(
    shared: &Arc<RefShared<T>>,
    target: &Target<T>,
    mut f: F,
) -> Result<(B, T, T), E>
where
    T: Value,
    F: FnMut(T) -> Fut,
    Fut: Future<Output = Result<(B, T), E>>,
    E: From<Error>,
{
    let combiner = target.combiner(shared);
    let combine = shared.ctx.inner.combine_updates;
    let mut claim: Option<Claim<T>> = None;
    let mut from_lane = None;
    if combine && matches!(target, Target::Whole) && shared.answers_at_once.load(Ordering::Relaxed)
    {
        match in_lane(shared, &mut f).await? {
            Lane::Done(result) => return Ok(result),
            Lane::Retry(value, revision) => {
                shared.ctx.inner.metrics.retry();
                from_lane = Some((value, revision));
            }
            Lane::Declined => {}
        }
    }
    'attempt: loop {
        if combine && claim.is_none() && combiner.is_busy() {
            if let Some(turns) = combiner.enqueue() {
                match take_turns(turns, &mut f).await {
                    Some(result) => return result,
                    // No round took us in: go on by ourselves.
                    None => continue 'attempt,
                }
            }
        }
        let (mut current, mut revision) = match from_lane.take() {
            Some(known) => known,
            None => target.current(shared).await?,
        };
        loop {
            let (b, new) = f(current.clone()).await?;
            let (mut write, written) = target.prepare(shared, &new, revision)?;
            let outcome = match shared.backend().try_write(&mut write) {
                Some(answered) => {
                    shared.answers_at_once.store(true, Ordering::Relaxed);
                    answered?
                }
                None => {
                    if combine && claim.is_none() {
                        if !combiner.claim() {
                            // Another update's write went out meanwhile:
                            // join the next round instead.
                            continue 'attempt;
                        }
                        claim = Some(Claim {
                            shared: shared.clone(),
                            target: target.clone(),
                        });
                    }
                    shared.write(write).await?
                }
            };
            match target.settle(shared, outcome, &new, written).await? {
                Settled::Done => return Ok((b, current, new)),
                Settled::Retry(value, at) => {
                    shared.ctx.inner.metrics.retry();
                    (current, revision) = (value, at);
                }
            }
        }
    }
}

/// Where an update through the lane ended.
enum Lane<B, T> {
    Done((B, T, T)),
    /// Rejected: go on from this value, current at this revision.
    Retry(T, u64),
    /// Not done in the lane (the closure did not finish at once, the cache
    /// holds no value, or the backend declined to answer at once).
    Declined,
}

/// One attempt at an update of the whole value on a backend that answers
/// at once, serialized with the other updates of this ref through this
/// context: the cached value, the closure, the write and the cache update
/// as one step under the ref's lane lock. Concurrent callers on other
/// threads then wait for the lane, a short critical section, instead of
/// each computing from the same cached revision and all but one being
/// rejected by the store (which is what made many tasks on one in-memory
/// ref slow). Only a closure whose future is ready at its first poll runs
/// here; any other is dropped unpolled further and runs again outside,
/// as closures may. (The lane is reentrant: a closure that updates the
/// same ref runs that update at once, and its own write is then rejected
/// and retried, as if another node had written.)
async fn in_lane<T, B, E, F, Fut>(shared: &RefShared<T>, f: &mut F) -> Result<Lane<B, T>, E>
where
    T: Value,
    F: FnMut(T) -> Fut,
    Fut: Future<Output = Result<(B, T), E>>,
    E: From<Error>,
{
    std::future::poll_fn(|cx| {
        let lane = shared.lane.lock();
        let Some((current, revision)) = lane_start(shared, &lane) else {
            return Poll::Ready(Ok(Lane::Declined));
        };
        let made = std::pin::pin!(f(current.clone()));
        let (b, new) = match made.poll(cx) {
            Poll::Ready(Ok(made)) => made,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Ready(Ok(Lane::Declined)),
        };
        Poll::Ready(write_in_lane(shared, &lane, current, revision, b, new).map_err(E::from))
    })
    .await
}

/// The value and revision an update in the lane starts from: the lane's
/// copy of what the last update cached, while the cache has not been
/// written since (which spares a read of the cache's lock), else the
/// cache's.
fn lane_start<T: Value>(shared: &RefShared<T>, lane: &RefCell<LaneState<T>>) -> Option<(T, u64)> {
    if let Ok(state) = lane.try_borrow() {
        if let Some((value, revision, generation)) = &state.known {
            if *generation == shared.cache_generation() {
                return Some((value.clone(), *revision));
            }
        }
    }
    shared.cached()
}

/// The write of an update in the lane (see [`in_lane`]), made again in
/// the lane's [`LaneState`]; a commit leaves its value there for the next
/// update ([`lane_start`]).
fn write_in_lane<T: Value, B>(
    shared: &RefShared<T>,
    lane: &RefCell<LaneState<T>>,
    current: T,
    revision: u64,
    b: B,
    new: T,
) -> Result<Lane<B, T>> {
    let condition = Condition::ModRevision(revision);
    // The lane's state is borrowed only here and in `lane_start`, where
    // nothing calls back into the ref; should it be borrowed all the
    // same, the write is made without it.
    let mut state = lane.try_borrow_mut();
    let answered = match state.as_deref_mut() {
        Ok(state) => {
            state.known = None;
            let (write, digests) = shared.reuse_put(&mut state.parts, &new, condition)?;
            (shared.backend().try_write(write), digests)
        }
        Err(_) => {
            let (mut write, digests) = shared.put_write(&new, condition)?;
            (shared.backend().try_write(&mut write), digests)
        }
    };
    let (answered, digests) = answered;
    match answered {
        None => Ok(Lane::Declined),
        Some(answered) => match answered? {
            WriteOutcome::Committed { revision, .. } => {
                let generation = shared.commit_put(revision, new.clone(), &digests);
                if let (Ok(state), Some(generation)) = (state.as_deref_mut(), generation) {
                    state.known = Some((new.clone(), revision, generation));
                }
                Ok(Lane::Done((b, current, new)))
            }
            WriteOutcome::Rejected { current: record } => {
                let value = shared.observe_record(record.as_ref())?;
                match (value, record) {
                    (Some(value), Some(record)) => Ok(Lane::Retry(value, record.mod_revision)),
                    _ => Err(shared.missing()),
                }
            }
        },
    }
}

/// A queued caller's side of the rounds: applies its closure to each value
/// a driver hands it until its round ends. `None` when no round took it in
/// before the queue ended.
async fn take_turns<T, B, E, F, Fut>(
    mut turns: mpsc::UnboundedReceiver<Turn<T>>,
    f: &mut F,
) -> Option<Result<(B, T, T), E>>
where
    T: Value,
    F: FnMut(T) -> Fut,
    Fut: Future<Output = Result<(B, T), E>>,
    E: From<Error>,
{
    let mut mine = None;
    loop {
        match turns.recv().await {
            Some(Turn::Apply { value, reply }) => {
                let old = value.clone();
                match f(value).await {
                    Ok((b, new)) => {
                        // A driver that is gone closes `turns` too, which
                        // the next `recv` reports.
                        if reply.send(Some(new.clone())).is_ok() {
                            mine = Some((b, old, new));
                        }
                    }
                    Err(e) => {
                        // Out of the batch either way.
                        drop(reply.send(None));
                        return Some(Err(e));
                    }
                }
            }
            Some(Turn::Done(Ok(()))) => return mine.map(Ok),
            Some(Turn::Done(Err(e))) => return Some(Err(e.into())),
            // The driver went away (its runtime is shutting down) after
            // our closure's result went into a write whose outcome we will
            // never know.
            None if mine.is_some() => return Some(Err(Error::Closed.into())),
            None => return None,
        }
    }
}

/// Drives rounds of the queued updates of `target` until nobody waits.
async fn drive<T: Value>(
    shared: Arc<RefShared<T>>,
    target: Target<T>,
    mut round: Vec<mpsc::UnboundedSender<Turn<T>>>,
) {
    loop {
        match run_round(&shared, &target, &mut round).await {
            Err(Error::ValueTooLarge { .. } | Error::Encode { .. }) if round.len() > 1 => {
                // The combined value could not be written (too large, or
                // not encodable): find whose closure made it so by running
                // each caller's update on its own.
                for caller in std::mem::take(&mut round) {
                    let mut alone = vec![caller];
                    let result = run_round(&shared, &target, &mut alone).await;
                    finish(alone, result);
                }
            }
            result => finish(std::mem::take(&mut round), result),
        }
        match target.combiner(&shared).next_round() {
            Some(next) => round = next,
            None => return,
        }
    }
}

/// Tells the callers of a round how it ended.
fn finish<T>(round: Vec<mpsc::UnboundedSender<Turn<T>>>, result: Result<()>) {
    for caller in round {
        // A caller that is gone has nobody left to tell.
        drop(caller.send(Turn::Done(result.clone())));
    }
}

/// One round: applies the callers' closures in order to the freshest value
/// and writes the result, again from the returned record while rejected.
/// Callers whose closure failed or who went away leave `round`.
async fn run_round<T: Value>(
    shared: &RefShared<T>,
    target: &Target<T>,
    round: &mut Vec<mpsc::UnboundedSender<Turn<T>>>,
) -> Result<()> {
    let (mut value, mut revision) = target.current(shared).await?;
    loop {
        let mut new = value;
        let mut applied = Vec::with_capacity(round.len());
        for caller in round.drain(..) {
            let (reply, answer) = oneshot::channel();
            let turn = Turn::Apply {
                value: new.clone(),
                reply,
            };
            if caller.send(turn).is_err() {
                continue;
            }
            if let Ok(Some(next)) = answer.await {
                new = next;
                applied.push(caller);
            }
        }
        *round = applied;
        if round.is_empty() {
            return Ok(());
        }
        let (write, written) = target.prepare(shared, &new, revision)?;
        let outcome = shared.write(write).await?;
        match target.settle(shared, outcome, &new, written).await? {
            Settled::Done => {
                shared.ctx.inner.metrics.round(round.len());
                return Ok(());
            }
            Settled::Retry(current, at) => {
                shared.ctx.inner.metrics.retry();
                (value, revision) = (current, at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Combining, made visible with a backend whose writes wait at a gate.

    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use futures_util::future::BoxFuture;
    use futures_util::FutureExt;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::engine::{Backend, FieldName, Key, LeaseId, Op, Record, WatchStream};
    use crate::{Context, DRef, ManualId, MemoryBackend};

    /// The in-memory store behind writes that each wait for a permit, and
    /// no synchronous answers: a write stays in flight until the test
    /// lets it through.
    #[derive(Clone)]
    struct Gated {
        store: MemoryBackend,
        gate: Arc<Semaphore>,
        writes: Arc<AtomicUsize>,
    }

    impl Gated {
        fn new() -> Self {
            Gated {
                store: MemoryBackend::new(),
                gate: Arc::new(Semaphore::new(0)),
                writes: Arc::new(AtomicUsize::new(0)),
            }
        }

        fn open(&self, writes: usize) {
            self.gate.add_permits(writes);
        }

        fn writes(&self) -> usize {
            self.writes.load(Ordering::SeqCst)
        }
    }

    impl Backend for Gated {
        fn name(&self) -> &'static str {
            "gated"
        }

        fn read(&self, key: Key) -> BoxFuture<'_, Result<Option<Record>>> {
            self.store.read(key)
        }

        fn list(&self, prefix: String) -> BoxFuture<'_, Result<crate::engine::Listing>> {
            self.store.list(prefix)
        }

        fn write(&self, write: Write) -> BoxFuture<'_, Result<WriteOutcome>> {
            async move {
                self.writes.fetch_add(1, Ordering::SeqCst);
                let permit = self.gate.acquire().await.map_err(|_| Error::Closed)?;
                permit.forget();
                self.store.write(write).await
            }
            .boxed()
        }

        fn watch(&self, key: Key, since: Option<u64>) -> BoxFuture<'_, Result<WatchStream>> {
            self.store.watch(key, since)
        }

        fn watch_prefix(
            &self,
            prefix: String,
            since: Option<u64>,
        ) -> BoxFuture<'_, Result<crate::engine::PrefixStream>> {
            self.store.watch_prefix(prefix, since)
        }

        fn grant_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId>> {
            self.store.grant_lease(ttl)
        }

        fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>> {
            self.store.keep_alive(lease)
        }

        fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>> {
            self.store.revoke_lease(lease)
        }
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(30), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out waiting for {what}");
    }

    fn queued<T: Value>(r: &DRef<T>) -> usize {
        r.shared.combiner.queued()
    }

    async fn counter(gated: &Gated) -> DRef<u64> {
        let ctx = Context::builder().backend(gated.clone()).build();
        gated.open(1);
        ctx.make(ManualId::<u64>::new("n"), 0).await.unwrap()
    }

    /// Starts an increment and waits until its write is in flight (the
    /// second write, after the creation); it returns the old value.
    async fn in_flight(gated: &Gated, r: &DRef<u64>) -> tokio::task::JoinHandle<Result<u64>> {
        let first = tokio::spawn({
            let r = r.clone();
            async move { r.get_and_update(|v| v + 1).await }
        });
        until("the first write", || gated.writes() == 2).await;
        first
    }

    /// Starts `n` increments that queue behind the write in flight,
    /// returning each one's old value.
    async fn queue_increments(
        r: &DRef<u64>,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<Result<u64>>> {
        let before = queued(r);
        let tasks = (0..n)
            .map(|_| {
                let r = r.clone();
                tokio::spawn(async move { r.get_and_update(|v| v + 1).await })
            })
            .collect();
        until("the increments to queue", || queued(r) == before + n).await;
        tasks
    }

    async fn olds(tasks: Vec<tokio::task::JoinHandle<Result<u64>>>) -> Vec<u64> {
        let mut olds = Vec::new();
        for task in tasks {
            let done = tokio::time::timeout(Duration::from_secs(30), task).await;
            olds.push(done.expect("an update to finish").unwrap().unwrap());
        }
        olds.sort_unstable();
        olds
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn updates_queued_behind_a_write_share_the_next_one() {
        let gated = Gated::new();
        let r = counter(&gated).await;
        let first = in_flight(&gated, &r).await;
        let rest = queue_increments(&r, 10).await;
        gated.open(2);
        assert_eq!(first.await.unwrap().unwrap(), 0);
        // Each caller saw the value as if it had run alone in its place.
        assert_eq!(olds(rest).await, (1..=10).collect::<Vec<_>>());
        assert_eq!(r.get().await.unwrap(), 11);
        // The creation, the first update, and one write for the ten.
        assert_eq!(gated.writes(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_closure_leaves_the_round_and_the_rest_commit() {
        #[derive(Debug, PartialEq)]
        enum Refused {
            Odd(u64),
            Dref,
        }
        impl From<Error> for Refused {
            fn from(_: Error) -> Self {
                Refused::Dref
            }
        }
        let gated = Gated::new();
        let r = counter(&gated).await;
        let first = in_flight(&gated, &r).await;
        let refusing = tokio::spawn({
            let r = r.clone();
            async move {
                r.update_async(|v| async move { Err::<u64, _>(Refused::Odd(v)) })
                    .await
            }
        });
        until("the refusing update to queue", || queued(&r) == 1).await;
        let rest = queue_increments(&r, 4).await;
        gated.open(2);
        assert_eq!(first.await.unwrap().unwrap(), 0);
        assert_eq!(refusing.await.unwrap(), Err(Refused::Odd(1)));
        assert_eq!(olds(rest).await, vec![1, 2, 3, 4]);
        assert_eq!(r.get().await.unwrap(), 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rejected_round_applies_its_batch_again_to_the_stored_value() {
        let gated = Gated::new();
        let r = counter(&gated).await;
        let other = Context::builder().backend(gated.store.clone()).build();
        let theirs = other.make(ManualId::<u64>::new("n"), 0).await.unwrap();
        let first = in_flight(&gated, &r).await;
        let rest = queue_increments(&r, 5).await;
        gated.open(1);
        assert_eq!(first.await.unwrap().unwrap(), 0);
        until("the round's write", || gated.writes() == 3).await;
        // Another node writes while the round's write is in flight.
        theirs.set(100).await.unwrap();
        gated.open(2);
        assert_eq!(olds(rest).await, vec![100, 101, 102, 103, 104]);
        assert_eq!(r.get().await.unwrap(), 105);
        assert_eq!(gated.writes(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_callers_leave_the_queue_and_a_dropped_writer_hands_it_on() {
        let gated = Gated::new();
        let r = counter(&gated).await;
        let first = in_flight(&gated, &r).await;
        let mut rest = queue_increments(&r, 5).await;
        let dropped = rest.remove(2);
        dropped.abort();
        assert!(dropped.await.unwrap_err().is_cancelled());
        // The update whose write is in flight goes away before its write
        // was let through: the queue still gets its round.
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        gated.open(1);
        assert_eq!(olds(rest).await, vec![0, 1, 2, 3]);
        assert_eq!(r.get().await.unwrap(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_update_whose_closure_updates_the_same_ref_does_not_deadlock() {
        let r = Context::local()
            .make(ManualId::<u64>::new("n"), 0)
            .await
            .unwrap();
        // The first update teaches the ref that the store answers at once.
        r.update(|v| v + 1).await.unwrap();
        let inner = r.clone();
        let mut runs = 0;
        // Its first run updates the ref itself (which can only make its
        // own write rejected: a closure that always did would never
        // succeed, with or without the lane).
        let outer = r.update_async(|v| {
            runs += 1;
            let nested = (runs == 1).then(|| inner.clone());
            async move {
                if let Some(inner) = nested {
                    inner.update(|w| w + 10).await?;
                }
                Ok::<_, Error>(v + 100)
            }
        });
        tokio::time::timeout(Duration::from_secs(30), outer)
            .await
            .expect("a nested update deadlocked")
            .unwrap();
        assert_eq!(runs, 2);
        assert_eq!(r.get().await.unwrap(), 111);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_tasks_on_one_ref_of_a_store_that_answers_at_once() {
        let r = Context::local()
            .make(ManualId::<u64>::new("n"), 0)
            .await
            .unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let r = r.clone();
                tokio::spawn(async move {
                    let mut olds = Vec::new();
                    for _ in 0..500 {
                        olds.push(r.get_and_update(|v| v + 1).await.unwrap());
                        // And an async closure that is not ready at once.
                        r.update_async(|v| async move {
                            tokio::task::yield_now().await;
                            Ok::<_, Error>(v + 1)
                        })
                        .await
                        .unwrap();
                    }
                    olds
                })
            })
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        for task in tasks {
            for old in task.await.unwrap() {
                assert!(seen.insert(old), "two updates saw {old}");
            }
        }
        assert_eq!(seen.len(), 16 * 500);
        assert_eq!(r.get().await.unwrap(), 2 * 16 * 500);
    }

    /// Everything the store's watch of `key` has ready now.
    fn ready_items(watch: &mut WatchStream) -> Vec<crate::engine::WatchItem> {
        use futures_util::StreamExt;
        let mut items = Vec::new();
        while let Some(Some(item)) = watch.next().now_or_never() {
            items.push(item.unwrap());
        }
        items
    }

    /// The same updates through the lane (a store that answers at once,
    /// writes refilled from the lane's parts) and through the async forms
    /// of the contract: the same results, records and events, value by
    /// value, through errors and a delete.
    #[tokio::test]
    async fn updates_in_the_lane_write_what_the_async_forms_write() {
        let direct = MemoryBackend::new();
        let gated = Gated::new();
        gated.open(1_000);
        let contexts = [
            Context::builder()
                .backend(direct.clone())
                .max_value_bytes(16)
                .build(),
            Context::builder()
                .backend(gated.clone())
                .max_value_bytes(16)
                .build(),
        ];
        let stores: [Arc<dyn Backend>; 2] =
            [Arc::new(direct.clone()), Arc::new(gated.store.clone())];
        let mut outcomes = Vec::new();
        let mut watches = Vec::new();
        let mut in_lane = Vec::new();
        let id = ManualId::<String>::new("text");
        let key = crate::id::RefId::key(&id);
        for ctx in &contexts {
            watches.push(ctx.backend().watch(key.clone(), None).await.unwrap());
            let r = ctx.make(id.clone(), String::new()).await.unwrap();
            let mut seen = Vec::new();
            for word in ["a", "bb", "", "cccc", "dd", "dd"] {
                seen.push(format!("{:?}", r.get_and_update(|s| s + word).await));
                seen.push(format!(
                    "{:?}",
                    r.update_and_get(|s| s.replace('c', "")).await
                ));
            }
            // Too large, then the same write parts again.
            seen.push(format!("{:?}", r.update(|s| s.repeat(10)).await));
            seen.push(format!("{:?}", r.modify(|s| (s.len(), s + "e")).await));
            seen.push(format!("{:?}", r.update(|s| s).await));
            seen.push(format!("{:?}", r.delete().await));
            seen.push(format!("{:?}", r.update(|s| s + "f").await));
            seen.push(format!("{:?}", r.set("g".into()).await));
            seen.push(format!("{:?}", r.update_and_get(|s| s + "h").await));
            outcomes.push(seen);
            in_lane.push(r.shared.answers_at_once.load(Ordering::Relaxed));
        }
        // One ref took the lane, the other the async forms.
        assert_eq!(in_lane, [true, false]);
        assert!(gated.writes() > 10);
        assert_eq!(outcomes[0], outcomes[1]);
        let records = [stores[0].read(key.clone()).await, stores[1].read(key).await];
        assert_eq!(records[0].as_ref().unwrap(), records[1].as_ref().unwrap());
        let events = [ready_items(&mut watches[0]), ready_items(&mut watches[1])];
        assert!(events[0].len() > 10, "{:?}", events[0]);
        assert_eq!(events[0], events[1]);
    }

    /// The lane's reused writes are the writes `put_write` makes, value
    /// after value, whatever the backend took from the last one.
    #[tokio::test]
    async fn a_reused_put_is_the_put_write_of_its_value() {
        let r = Context::local()
            .make(ManualId::<Vec<u8>>::new("bytes"), Vec::new())
            .await
            .unwrap();
        let shared = &r.shared;
        let mut parts = crate::reference::shared::PutParts::default();
        for (n, value) in [vec![], vec![1], vec![2; 300], vec![], vec![3; 7]]
            .into_iter()
            .enumerate()
        {
            let condition = Condition::ModRevision(n as u64);
            let (expected, digests) = shared.put_write(&value, condition.clone()).unwrap();
            let (reused, reused_digests) = shared.reuse_put(&mut parts, &value, condition).unwrap();
            assert_eq!(*reused, expected);
            assert_eq!(reused_digests.as_slice(), digests.as_slice());
            // What a store takes from a write it commits.
            if let Op::Put(fields) = &mut reused.op {
                for (_, value) in fields.iter_mut() {
                    drop(std::mem::take(value));
                }
            }
        }
    }

    #[tokio::test]
    async fn a_reused_put_that_a_backend_changed_beyond_its_values_is_made_again() {
        let r = Context::local()
            .make(ManualId::<u64>::new("n"), 0)
            .await
            .unwrap();
        let shared = &r.shared;
        // What `Backend::try_write` forbids a backend to do to a lent write.
        let breaches: [fn(&mut Write); 7] = [
            |w| w.key = Key::from("elsewhere"),
            |w| w.lease = Some(LeaseId(7)),
            |w| w.max_record_bytes = Some(1),
            |w| w.op = Op::Delete,
            |w| {
                if let Op::Put(fields) = &mut w.op {
                    fields[1].0 = FieldName::from("renamed");
                }
            },
            |w| {
                if let Op::Put(fields) = &mut w.op {
                    fields.swap(0, 1);
                }
            },
            |w| {
                if let Op::Put(fields) = &mut w.op {
                    fields.pop();
                }
            },
        ];
        let mut parts = crate::reference::shared::PutParts::default();
        for (n, breach) in breaches.into_iter().enumerate() {
            let value = n as u64;
            let condition = Condition::ModRevision(n as u64);
            let (expected, _) = shared.put_write(&value, condition.clone()).unwrap();
            let (reused, _) = shared.reuse_put(&mut parts, &value, condition).unwrap();
            assert_eq!(*reused, expected, "after breach {n}");
            breach(reused);
        }
        let value = 99;
        let (expected, _) = shared.put_write(&value, Condition::Any).unwrap();
        let (reused, _) = shared
            .reuse_put(&mut parts, &value, Condition::Any)
            .unwrap();
        assert_eq!(*reused, expected, "after the last breach");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_combined_value_over_the_limit_fails_only_the_update_that_made_it() {
        let gated = Gated::new();
        let ctx = Context::builder()
            .backend(gated.clone())
            .max_value_bytes(64)
            .build();
        gated.open(1);
        let r = ctx
            .make(ManualId::<Vec<u8>>::new("bytes"), Vec::new())
            .await
            .unwrap();
        let push = |n: usize| {
            let r = r.clone();
            tokio::spawn(async move {
                r.update(move |mut v| {
                    v.extend(std::iter::repeat_n(1, n));
                    v
                })
                .await
            })
        };
        let first = push(1);
        until("the first write", || gated.writes() == 2).await;
        let small = [push(1), push(1)];
        until("two updates to queue", || queued(&r) == 2).await;
        let large = push(100);
        until("the large update to queue", || queued(&r) == 3).await;
        let last = push(1);
        until("the last update to queue", || queued(&r) == 4).await;
        gated.open(8);
        first.await.unwrap().unwrap();
        for task in small {
            task.await.unwrap().unwrap();
        }
        let refused = large.await.unwrap().unwrap_err();
        assert!(matches!(refused, Error::ValueTooLarge { .. }), "{refused}");
        last.await.unwrap().unwrap();
        assert_eq!(r.get().await.unwrap(), vec![1; 4]);
    }
}
