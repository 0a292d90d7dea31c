//! Prefix feeds: the notices of every key under a prefix, in commit order,
//! which prefix watch streams read under the store's lock (as key feeds,
//! see [`Feed`](super::Feed)).

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::task::{Context as TaskContext, Waker};

use super::{Cursor, Notice};
use crate::engine::{Event, Key};

/// The prefix feeds of one store. Empty unless someone watches a prefix,
/// so that a commit pays one emptiness check for them.
#[derive(Default)]
pub(super) struct PrefixFeeds {
    feeds: Vec<PrefixFeed>,
}

/// The latest notices of the keys under one prefix.
struct PrefixFeed {
    prefix: String,
    /// Sequence number of the first notice in `notices`.
    first: u64,
    /// At most `capacity` notices, each with its key; `None` is a reset of
    /// the whole store. Older notices are dropped, and a stream that had
    /// not read them resyncs.
    notices: VecDeque<Option<(Key, Notice)>>,
    capacity: usize,
    /// The streams waiting for the next notice.
    waiting: Vec<(Weak<()>, Waker)>,
    /// Held by every stream of the prefix: when only the feed holds it,
    /// nobody listens and the feed is dropped.
    streams: Arc<()>,
}

impl PrefixFeed {
    fn end(&self) -> u64 {
        self.first + self.notices.len() as u64
    }

    fn push(&mut self, notice: Option<(Key, Notice)>) {
        if self.notices.len() >= self.capacity {
            self.notices.pop_front();
            self.first += 1;
        }
        self.notices.push_back(notice);
        for (_, waker) in self.waiting.drain(..) {
            waker.wake();
        }
    }
}

impl Drop for PrefixFeed {
    fn drop(&mut self) {
        // When the store goes, its waiting streams wake up to end.
        for (_, waker) in self.waiting.drain(..) {
            waker.wake();
        }
    }
}

/// What a prefix stream finds in its feed.
pub(super) enum Polled {
    /// The next event of a key under the prefix.
    Event(Key, Event),
    /// Nothing new: the stream's waker is registered.
    Pending,
    /// Notices were missed (the stream lagged, or the store was reset):
    /// the stream must resync.
    Resync,
}

impl PrefixFeeds {
    /// Whether someone watches a prefix of `key` (so that the notice of its
    /// commit is worth building). Forgets the feeds nobody listens to.
    #[inline]
    pub(super) fn cover(&mut self, key: &Key) -> bool {
        // (Inlined: without prefix watches, a commit costs a check.)
        !self.feeds.is_empty() && self.cover_watched(key)
    }

    /// [`cover`](Self::cover) while some prefix has a feed.
    fn cover_watched(&mut self, key: &Key) -> bool {
        self.feeds.retain(|f| Arc::strong_count(&f.streams) > 1);
        self.feeds
            .iter()
            .any(|f| key.as_str().starts_with(&f.prefix))
    }

    /// How many prefixes have a feed.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.feeds.len()
    }

    /// Sends the notice of a commit to `key` to the feeds of its prefixes.
    pub(super) fn publish(&mut self, key: &Key, notice: &Notice) {
        for feed in &mut self.feeds {
            if key.as_str().starts_with(&feed.prefix) {
                feed.push(Some((key.clone(), notice.clone())));
            }
        }
    }

    /// The whole store was replaced: every prefix stream resyncs.
    pub(super) fn reset(&mut self) {
        for feed in &mut self.feeds {
            feed.push(None);
        }
    }

    /// Opens a stream on the feed of `prefix` (shared by all the streams of
    /// one prefix), positioned after its last notice.
    pub(super) fn subscribe(&mut self, prefix: &str, capacity: usize) -> Cursor {
        let at = match self.feeds.iter().position(|f| f.prefix == prefix) {
            Some(at) => at,
            None => {
                self.feeds.push(PrefixFeed {
                    prefix: prefix.to_owned(),
                    first: 0,
                    notices: VecDeque::new(),
                    capacity,
                    waiting: Vec::new(),
                    streams: Arc::new(()),
                });
                self.feeds.len() - 1
            }
        };
        let feed = &self.feeds[at];
        Cursor {
            alive: Arc::new(()),
            hold: feed.streams.clone(),
            next: feed.end(),
            floor: 0,
        }
    }

    /// The next notice for the stream at `cursor` that it has not seen: an
    /// event above its floor, `Pending` (its waker registered), or a
    /// resync (after which the cursor is positioned at the end).
    pub(super) fn poll(&mut self, cursor: &mut Cursor, cx: &mut TaskContext<'_>) -> Polled {
        let Some(feed) = self
            .feeds
            .iter_mut()
            .find(|f| Arc::ptr_eq(&f.streams, &cursor.hold))
        else {
            // Not reachable while the stream holds its feed; should it
            // happen, a resync is always correct.
            return Polled::Resync;
        };
        while let Some(offset) = cursor.next.checked_sub(feed.first) {
            let Some(notice) = usize::try_from(offset)
                .ok()
                .and_then(|i| feed.notices.get(i))
            else {
                let me = Arc::as_ptr(&cursor.alive);
                match feed.waiting.iter_mut().find(|(s, _)| s.as_ptr() == me) {
                    Some((_, waker)) => waker.clone_from(cx.waker()),
                    None => {
                        if feed.waiting.len() >= Arc::strong_count(&feed.streams) {
                            feed.waiting.retain(|(s, _)| s.strong_count() > 0);
                        }
                        feed.waiting
                            .push((Arc::downgrade(&cursor.alive), cx.waker().clone()));
                    }
                }
                return Polled::Pending;
            };
            cursor.next += 1;
            let Some((key, notice)) = notice else {
                break;
            };
            // (The floor stays where the `since` or the last resync put it:
            // several keys' notices may share a revision.)
            match notice.revision() {
                Some(r) if r <= cursor.floor => {}
                // (Prefix feeds get notices that carry their bytes.)
                Some(_) => match notice.clone().into_event(None) {
                    Some(event) => return Polled::Event(key.clone(), event),
                    None => break,
                },
                None => break,
            }
        }
        cursor.next = feed.end();
        Polled::Resync
    }
}
