//! Serving the peers' RPCs: replication handed to openraft, and the
//! client and membership requests of other nodes.

use std::sync::Weak;
use std::time::Duration;

use dref::engine::store;
use dref::engine::{Key, LeaseId, PrefixItem, WriteOutcome};
use dref::{Error, Result};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use openraft::error::{Fatal, RaftError};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::Raft;

use super::cluster::ClusterTag;
use super::node::{Node, Routed};
use super::rpc::{
    ClientRequest, ClientResponse, Handler, RaftResult, SnapshotChunk, SnapshotResult,
    WatchMessage, WatchRequest,
};
use super::types::{wire_records, Applied, TypeConfig, WireEvent, WireRecord};

/// Serves the RPCs of a node it does not keep alive.
pub(super) struct Rpc {
    pub(super) node: Weak<Node>,
}

impl Rpc {
    /// Hands a replication message to the node's Raft. A leaving node keeps
    /// answering replication until it has left: its own removal may need
    /// its acknowledgement.
    fn replicate<T, E, F, Fut>(&self, call: F) -> BoxFuture<'static, Result<T, RaftError<u64, E>>>
    where
        F: FnOnce(Raft<TypeConfig>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, RaftError<u64, E>>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let raft = self
            .node
            .upgrade()
            .filter(|n| !n.has_stopped_serving())
            .map(|n| n.raft.clone());
        async move {
            match raft {
                Some(raft) => call(raft).await,
                None => Err(RaftError::Fatal(Fatal::Stopped)),
            }
        }
        .boxed()
    }
}

impl Handler for Rpc {
    fn append(
        &self,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> BoxFuture<'static, RaftResult<AppendEntriesResponse<u64>>> {
        self.replicate(|raft| async move { raft.append_entries(req).await })
    }

    fn vote(&self, req: VoteRequest<u64>) -> BoxFuture<'static, RaftResult<VoteResponse<u64>>> {
        self.replicate(|raft| async move { raft.vote(req).await })
    }

    fn snapshot(&self, req: SnapshotChunk) -> BoxFuture<'static, SnapshotResult> {
        self.replicate(|raft| async move { raft.install_snapshot(req.into()).await })
    }

    fn node_id(&self) -> Option<u64> {
        self.node.upgrade().map(|n| n.id)
    }

    fn refuses(&self, caller: &ClusterTag) -> Option<String> {
        let node = self.node.upgrade()?;
        node.peers.cluster().tag().refuses(caller)
    }

    fn replicated_by(&self, id: u64) {
        let Some(node) = self.node.upgrade() else {
            return;
        };
        let cluster = node.peers.cluster();
        if cluster.knows_id() {
            return;
        }
        if let Err(why) = cluster.adopt(id) {
            tracing::error!(node = node.id, %why, "cannot record the cluster id learnt from the leader");
        }
    }

    fn watch(&self, req: WatchRequest) -> BoxStream<'static, WatchMessage> {
        let Some(node) = self.node.upgrade().filter(|n| !n.is_shutting_down()) else {
            let failed = WatchMessage::Failed("the node is shutting down".into());
            return futures_util::stream::once(async move { failed }).boxed();
        };
        // This node's own state, as for a watch through its own handle;
        // the stream ends with the node's state machine.
        let items = store::watch_prefix(&node.machines, req.prefix, req.since);
        items
            .map(|item| match item {
                Ok(PrefixItem::Event(key, event)) => match WireEvent::from_engine(&event) {
                    Some(event) => WatchMessage::Event(key.as_str().to_owned(), event),
                    None => WatchMessage::Failed(format!("cannot send the event {event:?}")),
                },
                Ok(PrefixItem::Resync(listing)) => {
                    WatchMessage::Resync(listing.revision, wire_records(&listing.records))
                }
                Err(e) => WatchMessage::Failed(e.to_string()),
            })
            .boxed()
    }

    fn client(&self, req: ClientRequest) -> BoxFuture<'static, ClientResponse> {
        let node = self.node.upgrade().filter(|n| !n.is_shutting_down());
        async move {
            let Some(node) = node else {
                return ClientResponse::Failed("the node is shutting down".into());
            };
            let not_leader = || ClientResponse::NotLeader(node.leader());
            // A client's request failed: for now (`Failed`, it may retry)
            // or for good (`Refused`).
            let failed = |e: Error| match e.is_transient() {
                true => ClientResponse::Failed(e.to_string()),
                false => ClientResponse::Refused(e.to_string()),
            };
            fn done<T>(
                node: &Node,
                routed: Routed<T>,
                ok: fn(T) -> ClientResponse,
            ) -> ClientResponse {
                match routed {
                    Routed::Done(Ok(v)) => ok(v),
                    Routed::Done(Err(Error::LeaseExpired { .. })) => ClientResponse::LeaseExpired,
                    Routed::Done(Err(e)) => ClientResponse::Failed(e.to_string()),
                    Routed::Retry(_) => ClientResponse::NotLeader(node.leader()),
                }
            }
            match req {
                ClientRequest::Hello => ClientResponse::Hello(node.info()),
                ClientRequest::Campaign { departed, after_ms } => {
                    node.campaign_later(departed, Duration::from_millis(after_ms));
                    ClientResponse::Done
                }
                // A client that is not a node asks any node, which
                // routes as for its own backend handle.
                ClientRequest::Status => ClientResponse::Status(node.status()),
                ClientRequest::Read(key) => match node.read(Key::new(key)).await {
                    Ok(record) => ClientResponse::Record(record.as_ref().map(WireRecord::from)),
                    Err(e) => failed(e),
                },
                ClientRequest::List(prefix) => match node.list(prefix).await {
                    Ok(listing) => {
                        ClientResponse::Listing(listing.revision, wire_records(&listing.records))
                    }
                    Err(e) => failed(e),
                },
                ClientRequest::Write(write) => {
                    let write = write.into_engine();
                    match node.write(write).await {
                        Ok(WriteOutcome::Committed { revision, version }) => {
                            ClientResponse::Written(Applied::Committed { revision, version })
                        }
                        Ok(WriteOutcome::Rejected { current }) => ClientResponse::Written(
                            Applied::Rejected(current.as_ref().map(WireRecord::from)),
                        ),
                        Err(e) => failed(e),
                    }
                }
                _ if node.leader_term().is_none() => not_leader(),
                ClientRequest::Propose(command) => {
                    let timeout = node.config.request_timeout;
                    let mut stop = node.stop_signal();
                    tokio::select! {
                        committed = tokio::time::timeout(timeout, node.commit_local(command)) => {
                            match committed {
                                Ok(routed) => done(&node, routed, |(applied, index)| {
                                    ClientResponse::Applied(applied, index)
                                }),
                                Err(_) => ClientResponse::Failed(
                                    "the leader did not commit in time".into(),
                                ),
                            }
                        }
                        _ = stop.wait_for(|s| *s) => {
                            ClientResponse::Failed("the node is shutting down".into())
                        }
                    }
                }
                ClientRequest::ReadIndex => done(
                    &node,
                    node.read_index_local().await,
                    ClientResponse::ReadIndex,
                ),
                ClientRequest::KeepAlive(lease) => {
                    done(&node, node.keep_alive_local(LeaseId(lease)).await, |()| {
                        ClientResponse::Done
                    })
                }
                // Bounded, as they hold the membership lock: a change on a
                // leader that lost its majority never completes.
                ClientRequest::Join { id, addr, cluster } => {
                    let timeout = node.config.request_timeout;
                    tokio::time::timeout(timeout, node.join_local(id, addr, cluster))
                        .await
                        .unwrap_or_else(|_| {
                            ClientResponse::Failed("the join did not complete in time".into())
                        })
                }
                ClientRequest::Leave { id } => {
                    let timeout = node.config.request_timeout;
                    tokio::time::timeout(timeout, node.leave_local(id))
                        .await
                        .unwrap_or_else(|_| {
                            ClientResponse::Failed("the leave did not complete in time".into())
                        })
                }
            }
        }
        .boxed()
    }
}
