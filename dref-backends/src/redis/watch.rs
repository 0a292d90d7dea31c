//! Watches over one shared pub/sub connection per backend handle.
//!
//! A background task owns the pub/sub connection. It subscribes once to
//! the pattern of every event channel of the namespace, so opening a watch
//! costs no round trip: the task remembers the last revision it saw for
//! each key, and a watch that asks for the commits after revision `r` is
//! served live when nothing newer than `r` went by for that key since the
//! subscription started. Otherwise the watcher reads the record and starts
//! with a resync. After a reconnect every watcher is told to resync, since
//! pub/sub drops what was published while the connection was down.
//!
//! The store revision never goes back unless the server lost its data
//! (revisions seeded after a loss are above the old ones, see the module
//! docs). A handle remembers the highest revision it has seen; when the
//! revision read at a reconnect is lower, the data was lost without an
//! event for it, so no watch that asks for the commits after an old
//! revision is served live: each starts with a resync.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dref::engine::{Event, Key};
use dref::{Error, Result};
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use tokio::sync::{broadcast, oneshot, watch};

use super::{redis_error, wire};

const WATCH_BUFFER: usize = 256;

/// Keys whose last event revision is remembered; beyond this the memory is
/// folded into one floor revision (which only costs extra resyncs).
const REMEMBERED_KEYS: usize = 65_536;

/// What the pub/sub task tells the watchers of a key.
#[derive(Clone, Debug)]
pub(super) enum Notice {
    Event(Event),
    /// The pub/sub connection was (re-)established: events may have been
    /// missed.
    Reconnected,
    /// A message on the key's channel could not be decoded.
    Malformed(String),
}

/// What the pub/sub task tells the watchers of a prefix.
#[derive(Clone, Debug)]
pub(super) enum PrefixNotice {
    /// An event of a key under the prefix.
    Event(Key, Event),
    /// The pub/sub connection was (re-)established: events may have been
    /// missed.
    Reconnected,
    /// A message on the channel of a key under the prefix could not be
    /// decoded.
    Malformed(String),
}

#[derive(Default)]
struct State {
    senders: HashMap<Key, broadcast::Sender<Notice>>,
    /// The watched prefixes (few: tools and dashboards watch them).
    prefixes: Vec<(String, broadcast::Sender<PrefixNotice>)>,
    /// Revision of the last event seen per key since `live_since`.
    last: HashMap<Key, u64>,
    /// Events of keys missing from `last` had revisions at most this.
    floor: u64,
    /// While subscribed: every event above this revision is delivered.
    live_since: Option<u64>,
}

impl State {
    /// How a watch that wants every commit after `since` starts, given the
    /// highest revision of the events it follows that went by since the
    /// subscription started (`last`): live only when none is above `since`.
    fn start(&self, since: Option<u64>, last: impl FnOnce(&State) -> u64) -> Start {
        match (since, self.live_since) {
            (None, _) => Start::Live,
            (Some(since), Some(live)) if live <= since && last(self) <= since => Start::Live,
            _ => Start::Resync,
        }
    }
}

/// How a new watch starts.
pub(super) enum Start {
    /// Nothing after the requested revision was missed.
    Live,
    /// The watcher must read the record and resync.
    Resync,
}

/// The watched keys of one backend handle.
pub(super) struct Watches {
    prefix: String,
    state: Mutex<State>,
    live: watch::Sender<bool>,
    /// The highest store revision this handle has seen (events, replies).
    highest: AtomicU64,
    /// Why the last attempt to (re)connect the pub/sub connection failed.
    last_error: Mutex<Option<Error>>,
    /// Dropped with the handle, which stops the pub/sub task.
    _shutdown: oneshot::Sender<()>,
}

/// A watcher's registration for one key.
pub(super) struct Subscription {
    pub(super) rx: broadcast::Receiver<Notice>,
    watches: Arc<Watches>,
    key: Key,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = self.watches.state.lock();
        // Our receiver is still counted until the field is dropped.
        if state
            .senders
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            state.senders.remove(&self.key);
        }
    }
}

/// A watcher's registration for a prefix.
pub(super) struct PrefixSubscription {
    pub(super) rx: broadcast::Receiver<PrefixNotice>,
    watches: Arc<Watches>,
    prefix: String,
}

impl Drop for PrefixSubscription {
    fn drop(&mut self) {
        let mut state = self.watches.state.lock();
        // Our receiver is still counted until the field is dropped.
        state
            .prefixes
            .retain(|(p, tx)| *p != self.prefix || tx.receiver_count() > 1);
    }
}

/// Escapes Redis glob characters.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Watches {
    /// Starts the pub/sub task for `client`; `commands` reads the store
    /// revision when the subscription starts.
    pub(super) fn start(
        client: redis::Client,
        commands: ConnectionManager,
        prefix: String,
        connect_timeout: Duration,
    ) -> Arc<Self> {
        let (shutdown, stopped) = oneshot::channel();
        let watches = Arc::new(Watches {
            prefix,
            state: Mutex::new(State::default()),
            live: watch::channel(false).0,
            highest: AtomicU64::new(0),
            last_error: Mutex::new(None),
            _shutdown: shutdown,
        });
        tokio::spawn(run(
            client,
            commands,
            Arc::downgrade(&watches),
            connect_timeout,
            stopped,
        ));
        watches
    }

    /// Waits until the pub/sub subscription is live.
    pub(super) async fn wait_live(&self, timeout: Duration) -> Result<()> {
        let mut live = self.live.subscribe();
        let became_live = tokio::time::timeout(timeout, live.wait_for(|l| *l))
            .await
            .is_ok_and(|r| r.is_ok());
        if became_live {
            return Ok(());
        }
        match self.last_error.lock().clone() {
            // Data or configuration that will not fix itself.
            Some(e) if !e.is_transient() => Err(e),
            last => Err(Error::Unavailable {
                backend: "redis",
                message: format!(
                    "the pub/sub subscription did not start within {timeout:?}{}",
                    last.map(|e| format!(" ({e})")).unwrap_or_default()
                ),
            }),
        }
    }

    /// Notes that the store was at `revision` (a reply or an event).
    pub(super) fn observe(&self, revision: u64) {
        self.highest.fetch_max(revision, Ordering::Relaxed);
    }

    /// Registers a watcher of `key` that wants every commit after `since`,
    /// and tells it whether it must resync first.
    pub(super) fn subscribe(
        self: &Arc<Self>,
        key: &Key,
        since: Option<u64>,
    ) -> (Subscription, Start) {
        let mut state = self.state.lock();
        let rx = state
            .senders
            .entry(key.clone())
            .or_insert_with(|| broadcast::channel(WATCH_BUFFER).0)
            .subscribe();
        let start = state.start(since, |state| {
            state.last.get(key).copied().unwrap_or(state.floor)
        });
        drop(state);
        let subscription = Subscription {
            rx,
            watches: self.clone(),
            key: key.clone(),
        };
        (subscription, start)
    }

    /// Registers a watcher of every key under `prefix` that wants every
    /// commit after `since`, and tells it whether it must resync first: it
    /// may start live only when no event of a key under the prefix above
    /// `since` went by since the subscription started.
    pub(super) fn subscribe_prefix(
        self: &Arc<Self>,
        prefix: &str,
        since: Option<u64>,
    ) -> (PrefixSubscription, Start) {
        let mut state = self.state.lock();
        let rx = match state.prefixes.iter().find(|(p, _)| p == prefix) {
            Some((_, tx)) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(WATCH_BUFFER);
                state.prefixes.push((prefix.to_owned(), tx));
                rx
            }
        };
        let start = state.start(since, |state| {
            state
                .last
                .iter()
                .filter(|(key, _)| key.as_str().starts_with(prefix))
                .map(|(_, revision)| *revision)
                .fold(state.floor, u64::max)
        });
        drop(state);
        let subscription = PrefixSubscription {
            rx,
            watches: self.clone(),
            prefix: prefix.to_owned(),
        };
        (subscription, start)
    }

    fn dispatch(&self, channel: &[u8], payload: &[u8]) {
        let Some(key) = channel
            .strip_prefix(self.prefix.as_bytes())
            .and_then(|c| c.strip_prefix(b"c:"))
            .and_then(|k| std::str::from_utf8(k).ok())
        else {
            tracing::debug!(
                prefix = %self.prefix,
                channel = %String::from_utf8_lossy(channel),
                "ignored a message on a channel that names no key"
            );
            return;
        };
        let key = Key::new(key);
        let mut state = self.state.lock();
        let watched = state.senders.get(&key).cloned();
        let prefixed = state
            .prefixes
            .iter()
            .any(|(prefix, _)| key.as_str().starts_with(prefix.as_str()));
        let notice = match watched.is_some() || prefixed {
            true => match wire::event(payload) {
                Ok(event) => Ok(event),
                Err(e) => Err(e.to_string()),
            },
            false => match wire::event_revision(payload) {
                Ok(revision) => {
                    self.observe(revision);
                    remember(&mut state, key, revision);
                    return;
                }
                Err(e) => Err(e.to_string()),
            },
        };
        let notice = match notice {
            Ok(event) => {
                self.observe(event.revision);
                remember(&mut state, key.clone(), event.revision);
                Notice::Event(event)
            }
            Err(message) => {
                tracing::warn!(prefix = %self.prefix, %key, %message, "malformed event message");
                Notice::Malformed(message)
            }
        };
        if prefixed {
            let notice = match &notice {
                Notice::Event(event) => PrefixNotice::Event(key.clone(), event.clone()),
                Notice::Malformed(message) => {
                    PrefixNotice::Malformed(format!("an event of `{key}`: {message}"))
                }
                Notice::Reconnected => PrefixNotice::Reconnected,
            };
            // A sender without receivers belongs to watchers going away.
            state.prefixes.retain(|(prefix, tx)| {
                !key.as_str().starts_with(prefix.as_str()) || tx.send(notice.clone()).is_ok()
            });
        }
        // (Under the lock, so the entry is still this sender.)
        if let Some(tx) = watched {
            if tx.send(notice).is_err() {
                // Its last watcher is going away.
                state.senders.remove(&key);
            }
        }
    }

    /// The subscription took effect, and the store revision read after it
    /// is `revision`; `seen` is the highest revision this handle had seen
    /// before that read was sent (the store cannot have been below it).
    fn went_live(&self, revision: u64, seen: u64) {
        self.highest.fetch_max(revision, Ordering::Relaxed);
        let since = if revision >= seen {
            revision
        } else {
            tracing::warn!(
                prefix = %self.prefix,
                revision,
                seen,
                "the store revision went back: Redis lost data (a restart without persistence, \
                 or a failover to a replica that lagged); every watcher resyncs"
            );
            // Every watch from a revision before the loss must resync.
            seen.saturating_add(1)
        };
        let mut state = self.state.lock();
        state.live_since = Some(since);
        state.last.clear();
        state.floor = 0;
        // A sender without receivers belongs to watchers going away.
        state
            .senders
            .retain(|_, tx| tx.send(Notice::Reconnected).is_ok());
        state
            .prefixes
            .retain(|(_, tx)| tx.send(PrefixNotice::Reconnected).is_ok());
        drop(state);
        self.live.send_replace(true);
    }

    /// The pub/sub connection was lost: events may be missed from now on.
    fn went_down(&self) {
        let mut state = self.state.lock();
        state.live_since = None;
        state.last.clear();
        state.floor = 0;
        drop(state);
        self.live.send_replace(false);
    }
}

fn remember(state: &mut State, key: Key, revision: u64) {
    if state.last.len() >= REMEMBERED_KEYS && !state.last.contains_key(&key) {
        let highest = state.last.values().copied().max().unwrap_or(0);
        state.floor = state.floor.max(highest);
        state.last.clear();
    }
    let last = state.last.entry(key).or_insert(0);
    *last = (*last).max(revision);
}

/// Owns the pub/sub connection: (re)connects with backoff, subscribes to
/// the namespace's event channels, and fans messages out.
async fn run(
    client: redis::Client,
    mut commands: ConnectionManager,
    watches: Weak<Watches>,
    connect_timeout: Duration,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut failures = 0u32;
    loop {
        let Some(w) = watches.upgrade() else { return };
        let pattern = format!("{}c:*", glob_escape(&w.prefix));
        let revision_key = format!("{}rev", w.prefix);
        let prefix = w.prefix.clone();
        let seen = w.highest.load(Ordering::Relaxed);
        drop(w);
        let connected = tokio::time::timeout(connect_timeout, async {
            let failed =
                |e: redis::RedisError| redis_error(&e, "subscribing to the namespace's events");
            let mut pubsub = client.get_async_pubsub().await.map_err(failed)?;
            pubsub.psubscribe(&pattern).await.map_err(failed)?;
            // Every event committed after the subscription took effect is
            // delivered; reading the revision afterwards (on this new
            // connection's server) bounds the rest.
            let stored: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&revision_key)
                .query_async(&mut commands)
                .await
                .map_err(|e| redis_error(&e, &format!("reading `{revision_key}`")))?;
            let revision = wire::revision(stored.as_deref(), &revision_key)?;
            Ok::<_, Error>((pubsub, revision))
        })
        .await
        .unwrap_or_else(|_| {
            Err(Error::Unavailable {
                backend: "redis",
                message: format!("subscribing timed out after {connect_timeout:?}"),
            })
        });
        let (pubsub, since) = match connected {
            Ok(connected) => connected,
            Err(e) => {
                let Some(w) = watches.upgrade() else { return };
                // The first failure in a row is news; the retries of an
                // outage are not.
                if failures == 0 || !e.is_transient() {
                    tracing::warn!(%prefix, error = %e, "the pub/sub connection failed; retrying");
                } else {
                    tracing::debug!(%prefix, error = %e, failures, "the pub/sub connection failed again");
                }
                *w.last_error.lock() = Some(e);
                drop(w);
                failures = failures.saturating_add(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(%prefix, failures, "the pub/sub connection is back");
        }
        backoff = Duration::from_millis(50);
        failures = 0;
        let Some(w) = watches.upgrade() else { return };
        *w.last_error.lock() = None;
        w.went_live(since, seen);
        drop(w);
        let mut stream = pubsub.into_on_message();
        loop {
            let message = tokio::select! {
                message = stream.next() => message,
                _ = &mut stopped => return,
            };
            let Some(message) = message else { break };
            let Some(w) = watches.upgrade() else { return };
            w.dispatch(
                message.get_channel_name().as_bytes(),
                message.get_payload_bytes(),
            );
        }
        tracing::warn!(%prefix, "the pub/sub connection was lost; reconnecting");
        let Some(w) = watches.upgrade() else { return };
        w.went_down();
    }
}
