//! Leader election: a lock plus an observable leader record.

use std::fmt;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::context::Context;
use crate::engine::{apply_event, Key, Record, WatchItem, WatchStream};
use crate::layout::{Holding, ELECTION_PREFIX};
use crate::lock::{acquire, FencingToken, LockGuard, Wait};
use crate::{Error, Result};

/// Who leads an election.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Leader {
    /// The leader's node id ([`Context::node_id`]).
    pub node_id: String,
    /// The leadership's fencing token (strictly increasing across leaders).
    pub token: FencingToken,
}

/// This node's leadership of an election. Resign with
/// [`resign`](Leadership::resign); dropping it resigns in the background.
#[derive(Debug)]
pub struct Leadership {
    guard: LockGuard,
}

impl Leadership {
    /// The election's name.
    pub fn name(&self) -> &str {
        self.guard.name()
    }

    /// The fencing token of this term.
    pub fn token(&self) -> FencingToken {
        self.guard.token()
    }

    /// Whether leadership is known to be lost.
    pub fn is_lost(&self) -> bool {
        self.guard.is_lost()
    }

    /// Resolves with [`Error::LockLost`] once leadership is lost (see
    /// [`LockGuard::lost`]).
    pub async fn lost(&self) -> Error {
        self.guard.lost().await
    }

    /// Steps down, letting the next candidate win at once.
    pub async fn resign(self) -> Result<()> {
        self.guard.release().await
    }
}

fn election_key(name: &str) -> Key {
    Key::from(format!("{ELECTION_PREFIX}{name}"))
}

fn leader_of(key: &Key, record: Option<&Record>) -> Result<Option<Leader>> {
    let Some(record) = record else {
        return Ok(None);
    };
    let holding = Holding::from_record(key, record)?;
    Ok(Some(Leader {
        node_id: holding.holder,
        token: holding.token,
    }))
}

impl Context {
    /// Campaigns in the election `name` and resolves once this node leads.
    ///
    /// If the leader's node dies, leadership moves to another candidate
    /// within one session TTL plus the time the store takes to notice the
    /// lease's end: nothing more on the in-memory store; on Redis, one
    /// sweep interval (100 ms by default); on Raft, one heartbeat, and when
    /// the dead node was also the Raft leader, one election timeout (the
    /// upper end of the configured range) on top, since the new Raft leader
    /// starts the lease's TTL afresh. The old leader stops believing it
    /// leads (its [`Leadership::is_lost`]) before any other node can win.
    pub async fn campaign(&self, name: &str) -> Result<Leadership> {
        let guard = acquire(self, election_key(name), name, Wait::Forever).await?;
        Ok(Leadership { guard })
    }

    /// Takes leadership if nobody leads; fails with [`Error::LockBusy`] at
    /// once otherwise.
    pub async fn try_campaign(&self, name: &str) -> Result<Leadership> {
        let guard = acquire(self, election_key(name), name, Wait::No).await?;
        Ok(Leadership { guard })
    }

    /// [`campaign`](Context::campaign) that fails with [`Error::Timeout`] if
    /// this node does not lead within `timeout`.
    pub async fn campaign_timeout(&self, name: &str, timeout: Duration) -> Result<Leadership> {
        let wait = Wait::Until(Instant::now() + timeout, timeout);
        let guard = acquire(self, election_key(name), name, wait).await?;
        Ok(Leadership { guard })
    }

    /// The current leader of the election `name` (linearizable).
    pub async fn leader(&self, name: &str) -> Result<Option<Leader>> {
        let key = election_key(name);
        let record = self.inner.backend.read(key.clone()).await?;
        leader_of(&key, record.as_ref())
    }

    /// The leader of the election `name` now, then after every change of
    /// leader (`None` while nobody leads).
    pub fn observe(&self, name: &str) -> Observe {
        Observe::new(self.clone(), election_key(name))
    }
}

/// The stream returned by [`Context::observe`]. An `Err` item reports a
/// failure to reach the store; the stream goes on and resumes watching.
pub struct Observe {
    inner: BoxStream<'static, Result<Option<Leader>>>,
}

impl fmt::Debug for Observe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observe").finish_non_exhaustive()
    }
}

struct ObserveState {
    ctx: Context,
    key: Key,
    stream: Option<WatchStream>,
    record: Option<Record>,
    revision: u64,
    last: Option<Option<Leader>>,
}

impl ObserveState {
    /// Opens the watch, first reading the current record.
    async fn open(&mut self) -> Result<()> {
        if self.last.is_none() {
            let backend = &self.ctx.inner.backend;
            self.record = backend.read(self.key.clone()).await?;
            self.revision = self.record.as_ref().map_or(0, |r| r.mod_revision);
        }
        let since = Some(self.revision);
        self.stream = Some(
            self.ctx
                .inner
                .backend
                .watch(self.key.clone(), since)
                .await?,
        );
        Ok(())
    }

    async fn next(mut self) -> Option<(Result<Option<Leader>>, Self)> {
        loop {
            if self.stream.is_none() {
                if let Err(e) = self.open().await {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return Some((Err(e), self));
                }
                if self.last.is_none() {
                    return self.emit();
                }
            }
            let item = self.stream.as_mut()?.next().await;
            match item {
                Some(Ok(WatchItem::Event(event))) => {
                    self.revision = self.revision.max(event.revision);
                    apply_event(&mut self.record, &event);
                }
                Some(Ok(WatchItem::Resync(record))) => {
                    if let Some(r) = &record {
                        self.revision = self.revision.max(r.mod_revision);
                    }
                    self.record = record;
                }
                Some(Err(e)) => {
                    self.stream = None;
                    return Some((Err(e), self));
                }
                None => {
                    self.stream = None;
                    continue;
                }
            }
            let leader = leader_of(&self.key, self.record.as_ref());
            if leader.as_ref().ok() != self.last.as_ref() {
                return self.emit();
            }
        }
    }

    fn emit(mut self) -> Option<(Result<Option<Leader>>, Self)> {
        let leader = leader_of(&self.key, self.record.as_ref());
        if let Ok(l) = &leader {
            self.last = Some(l.clone());
        }
        Some((leader, self))
    }
}

impl Observe {
    fn new(ctx: Context, key: Key) -> Self {
        let state = ObserveState {
            ctx,
            key,
            stream: None,
            record: None,
            revision: 0,
            last: None,
        };
        Observe {
            inner: futures_util::stream::unfold(state, ObserveState::next).boxed(),
        }
    }
}

impl Stream for Observe {
    type Item = Result<Option<Leader>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}
