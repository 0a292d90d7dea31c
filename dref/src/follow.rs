//! Following one key through its watch: the loop under every "wait until
//! this record changes" of locks and elections.

use std::time::Duration;

use futures_util::StreamExt;

use crate::engine::{Backend, Event, Key, Record, WatchItem};
use crate::Error;

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What [`follow`] saw.
pub(crate) enum Followed<'a> {
    /// A committed event of the key.
    Event(&'a Event),
    /// The record as it is now; events before it may have been missed.
    Resync(Option<&'a Record>),
    /// The watch failed (it is re-opened unless the caller stops).
    Error(&'a Error),
}

/// Watches `key` for every commit after revision `since` and hands each
/// item to `until`, until it returns `Some`. A watch that fails or ends is
/// re-opened from the last revision seen, after a backoff (50 ms doubling
/// to 2 s, reset by any item), so nothing is missed: the backend replays
/// the gap or resyncs.
pub(crate) async fn follow<T>(
    backend: &dyn Backend,
    key: &Key,
    since: u64,
    mut until: impl FnMut(Followed<'_>) -> Option<T>,
) -> T {
    let mut revision = since;
    let mut backoff = MIN_BACKOFF;
    loop {
        match backend.watch(key.clone(), Some(revision)).await {
            Ok(mut stream) => {
                while let Some(item) = stream.next().await {
                    let seen = match &item {
                        Ok(WatchItem::Event(event)) => {
                            revision = revision.max(event.revision);
                            Followed::Event(event)
                        }
                        Ok(WatchItem::Resync(record)) => {
                            if let Some(r) = record {
                                revision = revision.max(r.mod_revision);
                            }
                            Followed::Resync(record.as_ref())
                        }
                        Err(error) => Followed::Error(error),
                    };
                    let failed = item.is_err();
                    if let Some(done) = until(seen) {
                        return done;
                    }
                    if failed {
                        break;
                    }
                    backoff = MIN_BACKOFF;
                }
                tracing::debug!(%key, revision, "watch ended; re-opening it");
            }
            Err(error) => {
                if let Some(done) = until(Followed::Error(&error)) {
                    return done;
                }
                tracing::debug!(%key, %error, "cannot open the watch; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
