//! The task that keeps a ref's cache current and feeds its subscribers.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;

use super::change::{ChangeKind, HubItem};
use super::shared::RefShared;
use super::value::Value;
use crate::engine::{apply_event, Event, EventKind, Record, WatchItem, WatchStream};
use crate::{Error, Result};

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Opens the ref's watch from `record` (the state at its `mod_revision`)
/// and spawns the watcher task.
pub(super) async fn spawn<T: Value>(shared: &Arc<RefShared<T>>, record: Record) -> Result<()> {
    let since = record.mod_revision;
    let stream = shared
        .backend()
        .watch(shared.key.clone(), Some(since))
        .await?;
    let task = tokio::spawn(run(Arc::downgrade(shared), stream, Some(record), since));
    if shared.watcher.set(task.abort_handle()).is_err() {
        // `spawn` runs once per `RefShared`, right after it is built.
        task.abort();
        return Err(shared.contract_broken("a second watcher"));
    }
    Ok(())
}

async fn run<T: Value>(
    shared: Weak<RefShared<T>>,
    mut stream: WatchStream,
    mut raw: Option<Record>,
    mut last_revision: u64,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let item = stream.next().await;
        let Some(ref_shared) = shared.upgrade() else {
            return;
        };
        match item {
            Some(Ok(WatchItem::Event(event))) => {
                backoff = MIN_BACKOFF;
                last_revision = last_revision.max(event.revision);
                apply_event(&mut raw, &event);
                on_event(&ref_shared, &event, raw.as_ref());
            }
            Some(Ok(WatchItem::Resync(record))) => {
                backoff = MIN_BACKOFF;
                if let Some(r) = &record {
                    last_revision = last_revision.max(r.mod_revision);
                }
                raw = record;
                on_resync(&ref_shared, raw.as_ref(), last_revision);
            }
            Some(Err(Error::Closed)) => {
                ref_shared.publish(HubItem::Error(Error::Closed));
                return;
            }
            ended => {
                if let Some(Err(e)) = ended {
                    ref_shared.publish(HubItem::Error(e));
                }
                drop(ref_shared);
                // Re-open the watch from the last revision seen: the backend
                // replays what we missed or resyncs us.
                loop {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    let Some(ref_shared) = shared.upgrade() else {
                        return;
                    };
                    let key = ref_shared.key.clone();
                    match ref_shared.backend().watch(key, Some(last_revision)).await {
                        Ok(s) => {
                            stream = s;
                            break;
                        }
                        Err(e) => ref_shared.publish(HubItem::Error(e)),
                    }
                }
            }
        }
    }
}

/// Takes in one event: the cache first, then the subscribers.
fn on_event<T: Value>(shared: &RefShared<T>, event: &Event, raw: Option<&Record>) {
    let subscribed = shared.hub.receiver_count() > 0;
    let newer = event.revision > shared.cache_revision();
    if !subscribed && !newer {
        // Our own write, already in the cache, and nobody to tell.
        return;
    }
    let decoded = match raw.map(|r| shared.decode_record(r)).transpose() {
        Ok(decoded) => decoded,
        Err(e) => return shared.publish(HubItem::Error(e)),
    };
    let value = decoded.as_ref().map(|(v, _)| v.clone());
    if newer {
        shared.commit_seen(event.revision, decoded);
    }
    if !subscribed {
        return;
    }
    let mut changes = Vec::new();
    match &event.kind {
        EventKind::Put { changed, .. } => {
            for (name, bytes) in changed {
                match shared.decode_change(name, bytes) {
                    Some(Ok(change)) => changes.push(ChangeKind::Updated(change)),
                    Some(Err(e)) => return shared.publish(HubItem::Error(e)),
                    None => {}
                }
            }
        }
        EventKind::Deleted => changes.push(ChangeKind::Deleted),
        EventKind::Expired => changes.push(ChangeKind::Expired),
    }
    shared.publish(HubItem::Commit {
        revision: event.revision,
        changes,
        value,
    });
}

/// Takes in a resync: the current record, at `revision`.
fn on_resync<T: Value>(shared: &RefShared<T>, raw: Option<&Record>, revision: u64) {
    crate::metrics::watch_resync(shared.backend().name());
    // (A store that reconnected, or a watcher that fell behind: its
    // subscribers get the value now instead of the changes in between.)
    tracing::debug!(key = %shared.key, revision, backend = shared.backend().name(), "ref resynced");
    match shared.observe_record(raw) {
        Ok(value) => shared.publish(HubItem::Resync { revision, value }),
        Err(e) => shared.publish(HubItem::Error(e)),
    }
}
