//! Requests to the leader: a node proposes, reads and keeps leases alive
//! through whichever node leads, retrying across changes of leader.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use dref::engine::store::StoreAccess;
use dref::engine::{Key, Listing, Record, Write, WriteOutcome};
use dref::Result;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::time::Instant;

use super::node::{stopped, unavailable, unexpected, Node, Routed};
use super::rpc::{ClientRequest, ClientResponse};
use super::types::{Applied, Command, CommandOp, WireWrite};

impl Node {
    /// Runs `local` when this node leads, else sends `remote` to the
    /// leader; retries across leader changes until the request timeout.
    pub(super) async fn route<T>(
        &self,
        what: &str,
        remote: ClientRequest,
        mut local: impl FnMut() -> BoxFuture<'static, Routed<T>>,
        mut answer: impl FnMut(ClientResponse) -> Routed<T>,
    ) -> Result<T> {
        let timeout = self.config.request_timeout;
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(5);
        let mut last;
        loop {
            if self.stopped.load(Ordering::Acquire) {
                return Err(unavailable("this raft node was shut down"));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let routed = match self.leader() {
                Some((leader, _)) if leader == self.id => {
                    let attempt = tokio::time::timeout(remaining, local());
                    tokio::select! {
                        done = attempt => done.unwrap_or_else(|_| {
                            Routed::Retry("the leader did not commit in time".into())
                        }),
                        () = self.leader_moved(leader) => {
                            Routed::Retry("this node lost the leadership".into())
                        }
                    }
                }
                Some((leader, addr)) => {
                    // A leader that dies mid-call never answers: give up
                    // on it as soon as this node sees the leadership move
                    // (its election timeout), and resend to the next one.
                    // A resent proposal keeps its request id, so it is
                    // applied at most once.
                    let call = self.peers.client(&addr, remote.clone(), remaining);
                    tokio::select! {
                        answered = call => match answered {
                            Ok(resp) => answer(resp),
                            Err(e) => Routed::Retry(format!("leader {leader} at {addr}: {e}")),
                        },
                        () = self.leader_moved(leader) => {
                            Routed::Retry(format!("leader {leader} at {addr} lost the leadership"))
                        }
                    }
                }
                None => Routed::Retry("no leader is known".into()),
            };
            match routed {
                Routed::Done(result) => return result,
                Routed::Retry(why) => last = why,
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(unavailable(format!(
                    "{what} could not be completed within {timeout:?}: {last}"
                )));
            }
            tokio::time::sleep(backoff.min(remaining)).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// Commits a command through the leader and returns its result once
    /// this node has applied it too, so a caller reads its own write from
    /// this node's state (watches, `peek`, lock monitors) right away.
    pub(super) async fn propose(self: &Arc<Self>, op: CommandOp) -> Result<Applied> {
        let command = Command {
            id: self.next_request(),
            op,
        };
        let node = self.clone();
        let local_command = command.clone();
        let (applied, index) = self
            .route(
                "the write",
                ClientRequest::Propose(command),
                move || {
                    let (node, command) = (node.clone(), local_command.clone());
                    async move { node.commit_local(command).await }.boxed()
                },
                |resp| match resp {
                    ClientResponse::Applied(applied, index) => Routed::Done(Ok((applied, index))),
                    ClientResponse::NotLeader(_) | ClientResponse::Failed(_) => {
                        Routed::Retry(format!("{resp:?}"))
                    }
                    other => Routed::Done(Err(unexpected(&other))),
                },
            )
            .await?;
        self.applied_at_least(index, "the write").await?;
        Ok(applied)
    }

    /// Waits until this node's state machine has applied `index`.
    pub(super) async fn applied_at_least(&self, index: u64, what: &str) -> Result<()> {
        if self.machines.applied_index() >= index {
            return Ok(());
        }
        self.raft
            .wait(Some(self.config.request_timeout))
            .applied_index_at_least(Some(index), what)
            .await
            .map(|_| ())
            .map_err(|e| {
                unavailable(format!(
                    "{what} committed at index {index}, but this node did not apply it in time: {e}"
                ))
            })
    }

    /// Commits `command` through this node's raft, which must lead (with
    /// whatever else is proposed meanwhile: see [`proposer`](super::proposer)).
    pub(super) async fn commit_local(&self, command: Command) -> Routed<(Applied, u64)> {
        self.proposer.commit(command).await
    }

    /// The index a linearizable read must see: confirmed by the leader
    /// with a heartbeat round, then awaited in the local applied state.
    pub(super) async fn read(self: &Arc<Self>, key: Key) -> Result<Option<Record>> {
        self.read_barrier().await?;
        Ok(self.machines.get(&key))
    }

    /// A linearizable listing of the keys under `prefix`: the read barrier
    /// of [`read`](Self::read), then this node's own state.
    pub(super) async fn list(self: &Arc<Self>, prefix: String) -> Result<Listing> {
        self.read_barrier().await?;
        Ok(self.machines.with_store(|store| store.list(&prefix)))
    }

    /// A conditional write through this node: answered at once when its
    /// condition cannot hold (see [`doomed`](Self::doomed)), else proposed
    /// (through the leader).
    pub(super) async fn write(self: &Arc<Self>, write: Write) -> Result<WriteOutcome> {
        write.check_size(self.config.max_write_bytes)?;
        if let Some(rejected) = self.doomed(&write).await? {
            return Ok(rejected);
        }
        let wire = WireWrite::from_engine(&write).ok_or_else(|| {
            dref::Error::Config(format!(
                "the raft backend does not support this write: {write:?}"
            ))
        })?;
        self.propose(CommandOp::Write(wire))
            .await?
            .into_write_outcome(&write.key)
    }

    /// A write whose condition this node's state already contradicts for
    /// good ([`Store::doomed`](dref::engine::store::Store::doomed)) is
    /// answered without a log entry (no disk sync, no replication, no
    /// apply): after a read barrier, so that the record it answers with is
    /// as current as a linearizable read (a lagging node's own copy may be
    /// older than the call). `None`: propose it.
    pub(super) async fn doomed(self: &Arc<Self>, write: &Write) -> Result<Option<WriteOutcome>> {
        let doomed = || self.machines.with_store(|store| store.doomed(write));
        if doomed().is_none() {
            return Ok(None);
        }
        self.read_barrier().await?;
        Ok(doomed())
    }

    /// Waits until this node has applied everything committed before the
    /// call (a leader confirmed by a majority says how far that is).
    pub(super) async fn read_barrier(self: &Arc<Self>) -> Result<()> {
        let node = self.clone();
        let index = self
            .route(
                "the linearizable read",
                ClientRequest::ReadIndex,
                move || {
                    let node = node.clone();
                    async move { node.read_index_local().await }.boxed()
                },
                |resp| match resp {
                    ClientResponse::ReadIndex(index) => Routed::Done(Ok(index)),
                    ClientResponse::NotLeader(_) | ClientResponse::Failed(_) => {
                        Routed::Retry(format!("{resp:?}"))
                    }
                    other => Routed::Done(Err(unexpected(&other))),
                },
            )
            .await?;
        self.applied_at_least(index, "the linearizable read").await
    }

    pub(super) async fn read_index_local(&self) -> Routed<u64> {
        match self.raft.ensure_linearizable().await {
            Ok(log_id) => Routed::Done(Ok(log_id.map_or(0, |l| l.index))),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Routed::Retry(format!("leadership moved: {f}"))
            }
            Err(RaftError::APIError(e)) => Routed::Retry(e.to_string()),
            Err(RaftError::Fatal(f)) => Routed::Done(Err(stopped(&f))),
        }
    }
}
