//! Change streams of a ref, and callback subscriptions, read from the
//! ref's hub.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures_core::Stream;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

use super::change::{Change, ChangeKind, HubItem};
use super::shared::RefShared;
use super::value::Value;
use crate::Result;

/// One local subscriber of a ref's hub, turning lag into a resync.
struct Subscriber<T: Value> {
    rx: broadcast::Receiver<Arc<HubItem<T>>>,
    shared: Arc<RefShared<T>>,
    /// Commits at or below this revision were already known when the
    /// subscription started (or are covered by a resync).
    since: u64,
}

impl<T: Value> Subscriber<T> {
    fn new(shared: Arc<RefShared<T>>) -> Self {
        let rx = shared.hub.subscribe();
        let since = shared.cache_revision();
        Subscriber { rx, shared, since }
    }

    async fn recv(&mut self) -> Option<Arc<HubItem<T>>> {
        loop {
            match self.rx.recv().await {
                Ok(item) => match &*item {
                    HubItem::Commit { revision, .. } if *revision <= self.since => continue,
                    HubItem::Commit { revision, .. } | HubItem::Resync { revision, .. } => {
                        self.since = self.since.max(*revision);
                        return Some(item);
                    }
                    HubItem::Error(_) => return Some(item),
                },
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Drop the backlog, then summarise it: the cache is
                    // updated before commits are published, so it covers
                    // everything this subscriber skipped.
                    self.rx = self.rx.resubscribe();
                    let (value, revision) = match self.shared.cached() {
                        Some((v, rev)) => (Some(v), rev),
                        None => (None, self.shared.cache_revision()),
                    };
                    self.since = self.since.max(revision);
                    return Some(Arc::new(HubItem::Resync { revision, value }));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The stream returned by [`DRef::changes`](crate::DRef::changes).
///
/// Items are `Err` when a commit could not be decoded (for example garbage
/// written by another client) or the backend is unreachable; the stream goes
/// on after them.
pub struct Changes<T: Value> {
    inner: BoxStream<'static, Result<Change<T>>>,
}

impl<T: Value> Changes<T> {
    pub(crate) fn new(shared: Arc<RefShared<T>>) -> Self {
        let state = (
            Subscriber::new(shared),
            VecDeque::<Result<Change<T>>>::new(),
        );
        let inner = futures_util::stream::unfold(state, |(mut sub, mut pending)| async move {
            loop {
                if let Some(item) = pending.pop_front() {
                    return Some((item, (sub, pending)));
                }
                let item = sub.recv().await?;
                match &*item {
                    HubItem::Commit {
                        revision, changes, ..
                    } => pending.extend(changes.iter().map(|kind| {
                        Ok(Change {
                            revision: *revision,
                            kind: kind.clone(),
                        })
                    })),
                    HubItem::Resync { revision, value } => pending.push_back(Ok(Change {
                        revision: *revision,
                        kind: ChangeKind::Resync(value.clone()),
                    })),
                    HubItem::Error(e) => pending.push_back(Err(e.clone())),
                }
            }
        });
        Changes {
            inner: inner.boxed(),
        }
    }
}

impl<T: Value> Stream for Changes<T> {
    type Item = Result<Change<T>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// The stream returned by [`DRef::values`](crate::DRef::values): the value
/// after each commit, `None` once deleted or expired.
pub struct Values<T: Value> {
    inner: BoxStream<'static, Result<Option<T>>>,
}

impl<T: Value> Values<T> {
    pub(crate) fn new(shared: Arc<RefShared<T>>) -> Self {
        let inner = futures_util::stream::unfold(Subscriber::new(shared), |mut sub| async move {
            let item = sub.recv().await?;
            let value = match &*item {
                HubItem::Commit { value, .. } | HubItem::Resync { value, .. } => Ok(value.clone()),
                HubItem::Error(e) => Err(e.clone()),
            };
            Some((value, sub))
        });
        Values {
            inner: inner.boxed(),
        }
    }
}

impl<T: Value> Stream for Values<T> {
    type Item = Result<Option<T>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// A running [`DRef::on_change`](crate::DRef::on_change) callback. Dropping
/// the handle (or calling [`cancel`](Subscription::cancel)) stops it.
#[must_use = "the callback stops when the Subscription is dropped"]
pub struct Subscription {
    task: AbortHandle,
    /// Held while the callback runs, so that cancelling waits for a call
    /// in progress on another thread, and no call starts after it. (An
    /// abort alone stops the task only at its next await: a poll running
    /// on another worker could still deliver a value.) Reentrant, so that
    /// a callback may drop its own subscription.
    active: Arc<parking_lot::ReentrantMutex<std::cell::Cell<bool>>>,
}

impl Subscription {
    pub(crate) fn spawn<T: Value, F>(mut values: Values<T>, mut callback: F) -> Self
    where
        F: FnMut(Option<T>) + Send + 'static,
    {
        let active = Arc::new(parking_lot::ReentrantMutex::new(std::cell::Cell::new(true)));
        let running = active.clone();
        let task = tokio::spawn(async move {
            while let Some(item) = values.next().await {
                if let Ok(value) = item {
                    let active = running.lock();
                    if !active.get() {
                        return;
                    }
                    callback(value);
                }
            }
        });
        Subscription {
            task: task.abort_handle(),
            active,
        }
    }

    /// Stops the callback. It is not called again after this returns
    /// (an invocation already running on another thread may finish).
    pub fn cancel(self) {}

    /// Whether the callback task is still running.
    pub fn is_active(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.active.lock().set(false);
        self.task.abort();
    }
}
