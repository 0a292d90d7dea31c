//! The queue of one target's concurrent updates (the whole value of a
//! ref, or one of its fields): the state behind combining, which the
//! update loop (`update.rs`) drives.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::value::Value;
use crate::engine::FieldName;
use crate::Result;

/// At most this many queued updates share one round; the rest wait for the
/// next, so that one round's closures do not hold up its write for long.
const MAX_ROUND: usize = 256;

/// Copies one field from the second value into the first.
pub(crate) type Splice<T> = Box<dyn Fn(&mut T, &T) + Send + Sync>;

/// One stored field of a ref, as its updates need it. Made once per field
/// by the field handles (see [`RefShared::field_slot`]).
pub(crate) struct FieldSlot<T: Value> {
    pub(crate) index: usize,
    pub(crate) name: FieldName,
    /// Copies this field from the second value into the first.
    pub(super) splice: Splice<T>,
    pub(super) combiner: Combiner<T>,
}

impl<T: Value> FieldSlot<T> {
    pub(crate) fn new(index: usize, name: FieldName, splice: Splice<T>) -> Self {
        FieldSlot {
            index,
            name,
            splice,
            combiner: Combiner::default(),
        }
    }
}

/// The queue of one target's updates waiting for a round.
pub(crate) struct Combiner<T: Value> {
    /// Whether an update's write is in flight or a round is being driven.
    /// Changed only under `queue`'s lock; read without it as a hint.
    busy: AtomicBool,
    queue: Mutex<VecDeque<mpsc::UnboundedSender<Turn<T>>>>,
}

/// What a round's driver tells a queued caller.
pub(super) enum Turn<T> {
    /// Apply your closure to this value and answer with the result, or
    /// `None` when the closure failed.
    Apply {
        value: T,
        reply: oneshot::Sender<Option<T>>,
    },
    /// The round ended: committed (`Ok`), or failed for every caller in it.
    Done(Result<()>),
}

impl<T: Value> Default for Combiner<T> {
    fn default() -> Self {
        Combiner {
            busy: AtomicBool::new(false),
            queue: Mutex::new(VecDeque::new()),
        }
    }
}

impl<T: Value> Combiner<T> {
    /// Whether an update's write is in flight (a hint: it may change at
    /// once).
    pub(super) fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    /// How many callers wait.
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        self.queue.lock().len()
    }

    /// Takes the target for one update's write, unless it is busy.
    pub(super) fn claim(&self) -> bool {
        let _queue = self.queue.lock();
        !self.busy.swap(true, Ordering::Relaxed)
    }

    /// Queues a caller, unless the target became free meanwhile (then the
    /// caller goes on by itself).
    pub(super) fn enqueue(&self) -> Option<mpsc::UnboundedReceiver<Turn<T>>> {
        let mut queue = self.queue.lock();
        if !self.busy.load(Ordering::Relaxed) {
            return None;
        }
        let (turns, receiver) = mpsc::unbounded_channel();
        queue.push_back(turns);
        Some(receiver)
    }

    /// The next round's callers, or `None` (and the target is free) when
    /// nobody waits.
    pub(super) fn next_round(&self) -> Option<Vec<mpsc::UnboundedSender<Turn<T>>>> {
        let mut queue = self.queue.lock();
        if queue.is_empty() {
            self.busy.store(false, Ordering::Relaxed);
            return None;
        }
        let take = queue.len().min(MAX_ROUND);
        Some(queue.drain(..take).collect())
    }
}

impl<T: Value> Combiner<T> {
    /// Frees the target, ending the queue (its callers go on by
    /// themselves).
    pub(super) fn release(&self) {
        let mut queue = self.queue.lock();
        queue.clear();
        self.busy.store(false, Ordering::Relaxed);
    }
}
