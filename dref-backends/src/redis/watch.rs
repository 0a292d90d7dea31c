//! Watches over one shared pub/sub connection per backend handle.
//!
//! A background task owns the pub/sub connection: it subscribes the
//! channels of watched keys, fans messages out to per-key broadcast
//! channels, and after a reconnect re-subscribes and tells every watcher to
//! resync (events published while it was away are lost to pub/sub).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use dref::engine::{Event, Key};
use dref::{Error, Result};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::wire;

const WATCH_BUFFER: usize = 256;

/// What the pub/sub task tells the watchers of a key.
#[derive(Clone, Debug)]
pub(super) enum Notice {
    Event(Event),
    /// The pub/sub connection was re-established: events may have been
    /// missed.
    Reconnected,
    /// A message on the key's channel could not be decoded.
    Malformed(String),
}

enum Control {
    Subscribe(Vec<u8>, oneshot::Sender<Result<()>>),
    Unsubscribe(Vec<u8>),
}

/// The watched keys of one backend handle.
pub(super) struct Watches {
    prefix: String,
    keys: Mutex<HashMap<Key, broadcast::Sender<Notice>>>,
    control: mpsc::UnboundedSender<Control>,
}

/// Keeps a key subscribed while a watcher holds it.
pub(super) struct Subscription {
    pub(super) rx: broadcast::Receiver<Notice>,
    watches: Arc<Watches>,
    key: Key,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut keys = self.watches.keys.lock();
        // Our receiver is still counted until the field is dropped.
        if keys
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            keys.remove(&self.key);
            // Queued under the lock, so a later subscribe of the same key
            // is ordered after this.
            let _ = self
                .watches
                .control
                .send(Control::Unsubscribe(self.watches.channel(&self.key)));
        }
    }
}

impl Watches {
    /// Starts the pub/sub task for `client`.
    pub(super) fn start(
        client: redis::Client,
        prefix: String,
        connect_timeout: Duration,
    ) -> Arc<Self> {
        let (control, rx) = mpsc::unbounded_channel();
        let watches = Arc::new(Watches {
            prefix,
            keys: Mutex::new(HashMap::new()),
            control,
        });
        tokio::spawn(run(client, Arc::downgrade(&watches), rx, connect_timeout));
        watches
    }

    fn channel(&self, key: &Key) -> Vec<u8> {
        format!("{}c:{}", self.prefix, key).into_bytes()
    }

    /// Subscribes to a key's events; resolves once the server confirmed the
    /// subscription, so that every event committed afterwards is delivered.
    pub(super) async fn subscribe(
        self: &Arc<Self>,
        key: &Key,
        timeout: Duration,
    ) -> Result<Subscription> {
        let rx = {
            let mut keys = self.keys.lock();
            keys.entry(key.clone())
                .or_insert_with(|| broadcast::channel(WATCH_BUFFER).0)
                .subscribe()
        };
        let subscription = Subscription {
            rx,
            watches: self.clone(),
            key: key.clone(),
        };
        // Always confirm with the server, even if another watcher already
        // asked: SUBSCRIBE is idempotent, and its reply is our proof.
        let (ack, confirmed) = oneshot::channel();
        self.control
            .send(Control::Subscribe(self.channel(key), ack))
            .map_err(|_| closed())?;
        match tokio::time::timeout(timeout, confirmed).await {
            Ok(Ok(result)) => result.map(|()| subscription),
            Ok(Err(_)) => Err(closed()),
            Err(_) => Err(Error::Unavailable {
                backend: "redis",
                message: format!("subscribing to `{key}` timed out after {timeout:?}"),
            }),
        }
    }

    fn dispatch(&self, channel: &[u8], payload: &[u8]) {
        let Some(key) = channel
            .strip_prefix(self.prefix.as_bytes())
            .and_then(|c| c.strip_prefix(b"c:"))
            .and_then(|k| std::str::from_utf8(k).ok())
        else {
            return;
        };
        let keys = self.keys.lock();
        if let Some(tx) = keys.get(&Key::new(key)) {
            let notice = match wire::event(payload) {
                Ok(event) => Notice::Event(event),
                Err(e) => Notice::Malformed(e.to_string()),
            };
            let _ = tx.send(notice);
        }
    }

    fn notify_all(&self, notice: Notice) {
        for tx in self.keys.lock().values() {
            let _ = tx.send(notice.clone());
        }
    }
}

fn closed() -> Error {
    Error::Unavailable {
        backend: "redis",
        message: "the pub/sub task has stopped".into(),
    }
}

fn unavailable(e: redis::RedisError) -> Error {
    Error::Unavailable {
        backend: "redis",
        message: format!("pub/sub: {e}"),
    }
}

/// Owns the pub/sub connection: reconnects with backoff, re-subscribes,
/// and serves subscribe requests in order.
async fn run(
    client: redis::Client,
    watches: Weak<Watches>,
    mut control: mpsc::UnboundedReceiver<Control>,
    connect_timeout: Duration,
) {
    let mut backoff = Duration::from_millis(50);
    let mut connected_before = false;
    loop {
        let pubsub = match tokio::time::timeout(connect_timeout, client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => pubsub,
            _ => {
                if watches.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let (mut sink, mut stream) = pubsub.split();
        let Some(w) = watches.upgrade() else { return };
        let channels: Vec<Vec<u8>> = w.keys.lock().keys().map(|k| w.channel(k)).collect();
        if !channels.is_empty() && sink.subscribe(&channels).await.is_err() {
            continue;
        }
        if connected_before {
            w.notify_all(Notice::Reconnected);
        }
        connected_before = true;
        drop(w);
        loop {
            tokio::select! {
                request = control.recv() => match request {
                    None => return,
                    Some(Control::Subscribe(channel, ack)) => {
                        let result = sink.subscribe(&channel).await.map_err(unavailable);
                        let failed = result.is_err();
                        let _ = ack.send(result);
                        if failed {
                            break;
                        }
                    }
                    Some(Control::Unsubscribe(channel)) => {
                        if sink.unsubscribe(&channel).await.is_err() {
                            break;
                        }
                    }
                },
                message = stream.next() => match message {
                    None => break,
                    Some(message) => {
                        let Some(w) = watches.upgrade() else { return };
                        w.dispatch(message.get_channel_name().as_bytes(), message.get_payload_bytes());
                    }
                },
            }
        }
    }
}
