//! The node-to-node RPCs: a gRPC service over tonic whose messages are
//! encoded with postcard by a custom codec (no `.proto`, no `protoc`).
//!
//! Service `dref.Raft`, four unary methods:
//! - `Append`, `Vote`, `Snapshot`: openraft's replication RPCs;
//! - `Client`: everything a node asks another node on behalf of its
//!   users (forwarded proposals, read index, lease keep-alives) and for
//!   membership (hello, join, leave).

use std::collections::HashMap;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use super::cluster::{Cluster, ClusterTag};
use super::tls::Tls;
use super::transport::Connector;
use super::types::{Applied, Command, TypeConfig, WireEvent, WireRecord, WireWrite};

const SERVICE: &str = "dref.Raft";
const APPEND: &str = "/dref.Raft/Append";
const VOTE: &str = "/dref.Raft/Vote";
const SNAPSHOT: &str = "/dref.Raft/Snapshot";
/// Metadata naming the node a replication RPC is meant for: a replica that
/// restarted at the same address under a new identity must not answer for
/// its predecessor (openraft's leader would see that log go backwards).
const TARGET_HEADER: &str = "dref-target-node";
/// Metadata naming the caller's cluster (see [`ClusterTag::header`]): a
/// node refuses callers of another cluster.
const CLUSTER_HEADER: &str = "dref-cluster";
/// The start of a refusal's message, so that the caller can tell it from
/// other failures.
const REFUSAL: &str = "dref refused: ";
const CLIENT: &str = "/dref.Raft/Client";
/// The watch of a client that is not a node: a stream of messages.
const WATCH: &str = "/dref.Raft/Watch";

/// Upper bound of one decoded message (a replication batch or snapshot
/// chunk); far above what the configured batch and chunk sizes produce.
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// A tonic codec encoding `E` and decoding `D` with postcard.
pub struct Postcard<E, D>(PhantomData<fn(E) -> D>);

impl<E, D> Default for Postcard<E, D> {
    fn default() -> Self {
        Postcard(PhantomData)
    }
}

/// Encoder half of [`Postcard`].
pub struct PostcardEncoder<E>(PhantomData<fn(E)>);
/// Decoder half of [`Postcard`].
pub struct PostcardDecoder<D>(PhantomData<fn() -> D>);

impl<E: Serialize + Send + 'static, D: DeserializeOwned + Send + 'static> Codec for Postcard<E, D> {
    type Encode = E;
    type Decode = D;
    type Encoder = PostcardEncoder<E>;
    type Decoder = PostcardDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        PostcardEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        PostcardDecoder(PhantomData)
    }
}

impl<E: Serialize> Encoder for PostcardEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        postcard::to_io(&item, dst.writer())
            .map(|_| ())
            .map_err(|e| Status::internal(format!("cannot encode message: {e}")))
    }
}

impl<D: DeserializeOwned> Decoder for PostcardDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed dref.Raft message: {e}")))
    }
}

/// Where a node believes the leader is.
pub type LeaderHint = Option<(u64, String)>;

/// What a node tells about itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its Raft node id.
    pub id: u64,
    /// Its advertised address.
    pub addr: String,
    /// Whether it is a member of an initialized cluster.
    pub initialized: bool,
    /// Its cluster.
    pub cluster: ClusterTag,
    /// Before it belongs to a cluster: the lowest address among the nodes
    /// it reaches (itself included), which it expects to initialize one.
    pub initializer: Option<String>,
}

/// What a node tells of its own state (for operators' tools).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its Raft node id.
    pub id: u64,
    /// Its advertised address.
    pub addr: String,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub state: String,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// The index of the last entry of its log.
    pub last_log_index: u64,
    /// The index of the last entry it applied.
    pub applied_index: u64,
    /// The members it knows of: id, address, and whether a voter.
    pub members: Vec<(u64, String, bool)>,
}

/// The request of the `Watch` method: every commit of the keys under
/// `prefix` after revision `since` (after the call without one).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WatchRequest {
    /// The key prefix.
    pub prefix: String,
    /// The revision after which to watch.
    pub since: Option<u64>,
}

/// The messages of the `Watch` method's stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WatchMessage {
    /// An event of a key under the prefix.
    Event(String, WireEvent),
    /// The records under the prefix now, at this revision (events were
    /// missed).
    Resync(u64, Vec<(String, WireRecord)>),
    /// The watch cannot go on (the node is shutting down); the stream ends.
    Failed(String),
}

/// Requests of the `Client` method.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Propose a command (the receiver must be the leader).
    Propose(Command),
    /// Confirm leadership and return the index a linearizable read must
    /// wait for.
    ReadIndex,
    /// Restart a lease's deadline (leader only).
    KeepAlive(u64),
    /// Who are you?
    Hello,
    /// Add a node to the cluster (leader only).
    Join {
        /// The new node's id.
        id: u64,
        /// Its advertised address.
        addr: String,
        /// Its cluster, as it knows it.
        cluster: ClusterTag,
    },
    /// Remove a node from the cluster (leader only).
    Leave {
        /// The leaving node's id.
        id: u64,
    },
    /// From a leader that just left: campaign once the followers' leader
    /// lease has run out, unless another leader has appeared.
    Campaign {
        /// The departed leader's id.
        departed: u64,
        /// When to campaign, in milliseconds from receipt.
        after_ms: u64,
    },
    // Added at the end: postcard numbers variants in order, so nodes of
    // older versions still read the ones above.
    /// A linearizable read of one key, from a client that is not a node
    /// (any node answers, routing to the leader).
    Read(String),
    /// A linearizable listing of the keys under a prefix (any node).
    List(String),
    /// A conditional write (any node).
    Write(WireWrite),
    /// The answering node's own state.
    Status,
}

/// Answers of the `Client` method.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ClientResponse {
    /// The proposal's result and the log index it was committed at.
    Applied(Applied, u64),
    /// The read index.
    ReadIndex(u64),
    /// Done.
    Done,
    /// The lease is gone.
    LeaseExpired,
    /// Answer to `Hello`.
    Hello(NodeInfo),
    /// The receiver is not the leader; where it believes the leader is.
    NotLeader(LeaderHint),
    /// The request failed for a reason the caller may retry.
    Failed(String),
    /// A leave refused: the node is the last voter.
    LastVoter,
    /// A join done: the node is a member of the cluster of this id.
    Joined(u64),
    /// A request refused for good (another cluster).
    Refused(String),
    /// Answer to `Read`.
    Record(Option<WireRecord>),
    /// Answer to `List`: the revision, and each key with its record.
    Listing(u64, Vec<(String, WireRecord)>),
    /// Answer to `Write`.
    Written(Applied),
    /// Answer to `Status`.
    Status(NodeStatus),
}

/// Answer of `Append` and `Vote`.
pub type RaftResult<T> = Result<T, RaftError<u64>>;
/// Answer of `Snapshot`.
pub type SnapshotResult =
    Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>;

/// One chunk of openraft's InstallSnapshot on the wire: the data travels
/// as one byte string (openraft's `Vec<u8>` would be encoded as a sequence
/// of numbers, byte by byte).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotChunk {
    vote: openraft::Vote<u64>,
    meta: openraft::SnapshotMeta<u64, openraft::BasicNode>,
    offset: u64,
    data: bytes::Bytes,
    done: bool,
}

impl From<InstallSnapshotRequest<TypeConfig>> for SnapshotChunk {
    fn from(req: InstallSnapshotRequest<TypeConfig>) -> Self {
        SnapshotChunk {
            vote: req.vote,
            meta: req.meta,
            offset: req.offset,
            data: bytes::Bytes::from(req.data),
            done: req.done,
        }
    }
}

impl From<SnapshotChunk> for InstallSnapshotRequest<TypeConfig> {
    fn from(chunk: SnapshotChunk) -> Self {
        InstallSnapshotRequest {
            vote: chunk.vote,
            meta: chunk.meta,
            offset: chunk.offset,
            data: Vec::from(chunk.data),
            done: chunk.done,
        }
    }
}

/// What serves the RPCs: the node.
pub trait Handler: Send + Sync + 'static {
    /// openraft's AppendEntries.
    fn append(
        &self,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> BoxFuture<'static, RaftResult<AppendEntriesResponse<u64>>>;
    /// openraft's Vote.
    fn vote(&self, req: VoteRequest<u64>) -> BoxFuture<'static, RaftResult<VoteResponse<u64>>>;
    /// openraft's InstallSnapshot (one chunk).
    fn snapshot(&self, req: SnapshotChunk) -> BoxFuture<'static, SnapshotResult>;
    /// Client and membership requests.
    fn client(&self, req: ClientRequest) -> BoxFuture<'static, ClientResponse>;
    /// The watch of a client that is not a node.
    fn watch(&self, req: WatchRequest) -> BoxStream<'static, WatchMessage>;
    /// The serving node's id, while it runs.
    fn node_id(&self) -> Option<u64>;
    /// Why a caller of cluster `caller` must be refused, if it must.
    fn refuses(&self, caller: &ClusterTag) -> Option<String>;
    /// Replication addressed to this node came from cluster `id`: a node
    /// that does not know its cluster's id yet learns it (only a member
    /// of this node's cluster knows its node id).
    fn replicated_by(&self, id: u64);
}

/// The tonic service of one node.
pub struct RaftService<H> {
    handler: Arc<H>,
}

impl<H> Clone for RaftService<H> {
    fn clone(&self) -> Self {
        RaftService {
            handler: self.handler.clone(),
        }
    }
}

impl<H: Handler> RaftService<H> {
    /// A service answering with `handler`.
    pub fn new(handler: Arc<H>) -> Self {
        RaftService { handler }
    }
}

impl<H> tonic::server::NamedService for RaftService<H> {
    const NAME: &'static str = SERVICE;
}

/// One unary method of the handler.
type HandlerFn<H, Req, Resp> = fn(&H, Req) -> BoxFuture<'static, Resp>;

/// One unary method bound to its handler: decode, call, encode.
struct Method<H, Req, Resp> {
    handler: Arc<H>,
    method: HandlerFn<H, Req, Resp>,
}

impl<H, Req, Resp> tonic::server::UnaryService<Req> for Method<H, Req, Resp>
where
    Resp: Send + 'static,
{
    type Response = Resp;
    type Future = BoxFuture<'static, Result<tonic::Response<Resp>, Status>>;

    fn call(&mut self, request: tonic::Request<Req>) -> Self::Future {
        let answer = (self.method)(&self.handler, request.into_inner());
        Box::pin(async move { Ok(tonic::Response::new(answer.await)) })
    }
}

async fn serve<H, Req, Resp, B>(
    handler: Arc<H>,
    method: HandlerFn<H, Req, Resp>,
    req: http::Request<B>,
) -> http::Response<tonic::body::Body>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let mut grpc = tonic::server::Grpc::new(Postcard::<Resp, Req>::default())
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    grpc.unary(Method { handler, method }, req).await
}

/// The `Watch` method bound to its handler.
struct WatchMethod<H> {
    handler: Arc<H>,
}

impl<H: Handler> tonic::server::ServerStreamingService<WatchRequest> for WatchMethod<H> {
    type Response = WatchMessage;
    type ResponseStream = BoxStream<'static, Result<WatchMessage, Status>>;
    type Future = BoxFuture<'static, Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<WatchRequest>) -> Self::Future {
        use futures_util::StreamExt;
        let stream = self.handler.watch(request.into_inner()).map(Ok).boxed();
        Box::pin(async move { Ok(tonic::Response::new(stream)) })
    }
}

async fn serve_watch<H, B>(
    handler: Arc<H>,
    req: http::Request<B>,
) -> http::Response<tonic::body::Body>
where
    H: Handler,
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let mut grpc = tonic::server::Grpc::new(Postcard::<WatchMessage, WatchRequest>::default())
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    grpc.server_streaming(WatchMethod { handler }, req).await
}

impl<H, B> tower_service::Service<http::Request<B>> for RaftService<H>
where
    H: Handler,
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let h = self.handler.clone();
        let caller = req
            .headers()
            .get(CLUSTER_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(ClusterTag::parse);
        let refusal = match &caller {
            None => Some("the call names no dref cluster".to_owned()),
            Some(caller) => h.refuses(caller),
        };
        if let Some(why) = refusal {
            tracing::warn!(caller = ?caller.map(|c| c.header()), %why, "refused a peer");
            let status = Status::permission_denied(format!("{REFUSAL}{why}"));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        if let Some(to) = req
            .headers()
            .get(TARGET_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if h.node_id() != Some(to) {
                let message = format!(
                    "this is node {:?}, not node {to} (it restarted or was replaced)",
                    h.node_id()
                );
                return Box::pin(
                    async move { Ok(Status::failed_precondition(message).into_http()) },
                );
            }
        }
        if req.uri().path() == APPEND {
            // A node whose join was answered too late to hear it (or
            // lost) is a member that never learnt the cluster's id: its
            // leader's appends tell it.
            if let Some(id) = caller.as_ref().and_then(|c| c.id) {
                h.replicated_by(id);
            }
        }
        match req.uri().path() {
            APPEND => Box::pin(async move { Ok(serve(h, H::append, req).await) }),
            VOTE => Box::pin(async move { Ok(serve(h, H::vote, req).await) }),
            SNAPSHOT => Box::pin(async move { Ok(serve(h, H::snapshot, req).await) }),
            CLIENT => Box::pin(async move { Ok(serve(h, H::client, req).await) }),
            WATCH => Box::pin(async move { Ok(serve_watch(h, req).await) }),
            _ => Box::pin(async move {
                Ok(Status::unimplemented(format!("no such method in {SERVICE}")).into_http())
            }),
        }
    }
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The fault injector cut this link.
    #[cfg(feature = "test-util")]
    #[error("the link to {0} is cut (fault injection)")]
    Cut(String),
    /// No connection could be made.
    #[error("cannot reach {addr}: {message}")]
    Unreachable {
        /// The peer.
        addr: String,
        /// Why.
        message: String,
    },
    /// The call did not finish in time.
    #[error("{addr} did not answer within {after:?}")]
    Timeout {
        /// The peer.
        addr: String,
        /// The deadline.
        after: Duration,
    },
    /// The peer refused this node (another cluster).
    #[error("{addr} refused this node: {why}")]
    Refused {
        /// The peer.
        addr: String,
        /// Why.
        why: String,
    },
    /// The peer answered with an error status (or garbage).
    #[error("{addr} failed the call: {status}")]
    Failed {
        /// The peer.
        addr: String,
        /// Its status.
        status: Status,
    },
}

/// Links cut by fault injection, for partition tests (feature
/// `test-util`).
#[cfg(feature = "test-util")]
#[derive(Default)]
pub struct Faults {
    cut: parking_lot::RwLock<std::collections::HashSet<String>>,
}

#[cfg(feature = "test-util")]
impl Faults {
    /// Cuts the links from this node to `addrs`.
    pub fn cut(&self, addrs: impl IntoIterator<Item = String>) {
        self.cut.write().extend(addrs);
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.cut.write().clear();
    }

    fn is_cut(&self, addr: &str) -> bool {
        let cut = self.cut.read();
        !cut.is_empty() && cut.contains(addr)
    }
}

/// Outgoing calls: one reused tonic channel (HTTP/2 connection) per peer.
#[derive(Clone)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    #[cfg(feature = "test-util")]
    faults: Arc<Faults>,
    connect_timeout: Duration,
    connector: Connector,
    cluster: Arc<Cluster>,
}

impl Peers {
    /// No connections yet; they are made on first use (over TLS with
    /// `tls`).
    pub fn new(connect_timeout: Duration, tls: Option<Arc<Tls>>, cluster: Arc<Cluster>) -> Self {
        Peers {
            connector: Connector::new(tls, cluster.clone()),
            channels: Arc::default(),
            #[cfg(feature = "test-util")]
            faults: Arc::default(),
            connect_timeout,
            cluster,
        }
    }

    /// The cluster this node's calls name.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The fault injector of outgoing links.
    #[cfg(feature = "test-util")]
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    fn channel(&self, addr: &str) -> Result<Channel, CallError> {
        let mut channels = self.channels.lock();
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| CallError::Unreachable {
                addr: addr.to_owned(),
                message: format!("not a valid address: {e}"),
            })?
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_with_connector_lazy(self.connector.clone());
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// A request carrying this node's cluster and, when given, the node
    /// it is meant for.
    fn request<Req>(&self, req: Req, to: Option<u64>) -> tonic::Request<Req> {
        let mut request = tonic::Request::new(req);
        let cluster = self.cluster.tag().header();
        match tonic::metadata::MetadataValue::try_from(cluster.as_str()) {
            Ok(value) => {
                request.metadata_mut().insert(CLUSTER_HEADER, value);
            }
            // Names are checked when the node starts.
            Err(_) => tracing::error!(%cluster, "the cluster name is not a valid header value"),
        }
        if let Some(to) = to {
            request
                .metadata_mut()
                .insert(TARGET_HEADER, tonic::metadata::MetadataValue::from(to));
        }
        request
    }

    /// The error of a call that `addr` answered with `status`.
    fn call_error(&self, addr: &str, status: Status) -> CallError {
        match status.code() {
            tonic::Code::PermissionDenied if status.message().starts_with(REFUSAL) => {
                let why = status.message()[REFUSAL.len()..].to_owned();
                self.cluster
                    .refused_by(addr, format!("{addr} refused this node: {why}"));
                CallError::Refused {
                    addr: addr.to_owned(),
                    why,
                }
            }
            tonic::Code::Unavailable => CallError::Unreachable {
                addr: addr.to_owned(),
                message: status.message().to_owned(),
            },
            _ => CallError::Failed {
                addr: addr.to_owned(),
                status,
            },
        }
    }

    /// A ready gRPC client of `addr`.
    async fn grpc(&self, addr: &str) -> Result<tonic::client::Grpc<Channel>, CallError> {
        let channel = self.channel(addr)?;
        let mut grpc =
            tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
        grpc.ready().await.map_err(|e| CallError::Unreachable {
            addr: addr.to_owned(),
            message: e.to_string(),
        })?;
        Ok(grpc)
    }

    /// Runs `call` within `timeout`, noting that `addr` accepted this node
    /// when it answers.
    async fn within<T>(
        &self,
        addr: &str,
        timeout: Duration,
        call: impl std::future::Future<Output = Result<T, CallError>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => {
                if result.is_ok() {
                    self.cluster.accepted_by(addr);
                }
                result
            }
            Err(_) => Err(CallError::Timeout {
                addr: addr.to_owned(),
                after: timeout,
            }),
        }
    }

    async fn call<Req, Resp>(
        &self,
        addr: &str,
        to: Option<u64>,
        path: &'static str,
        req: Req,
        timeout: Duration,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize + Send + Sync + 'static,
        Resp: DeserializeOwned + Send + Sync + 'static,
    {
        #[cfg(feature = "test-util")]
        if self.faults.is_cut(addr) {
            return Err(CallError::Cut(addr.to_owned()));
        }
        let call = async {
            let mut grpc = self.grpc(addr).await?;
            let path = http::uri::PathAndQuery::from_static(path);
            grpc.unary(
                self.request(req, to),
                path,
                Postcard::<Req, Resp>::default(),
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.call_error(addr, status))
        };
        self.within(addr, timeout, call).await
    }

    /// The `Watch` stream of `addr` (for a client that is not a node):
    /// opening it is bounded by `timeout`, the stream is not.
    pub async fn watch(
        &self,
        addr: &str,
        req: WatchRequest,
        timeout: Duration,
    ) -> Result<tonic::codec::Streaming<WatchMessage>, CallError> {
        let open = async {
            let mut grpc = self.grpc(addr).await?;
            let path = http::uri::PathAndQuery::from_static(WATCH);
            let codec = Postcard::<WatchRequest, WatchMessage>::default();
            grpc.server_streaming(self.request(req, None), path, codec)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| self.call_error(addr, status))
        };
        self.within(addr, timeout, open).await
    }

    /// openraft's AppendEntries to `addr`.
    pub async fn append(
        &self,
        addr: &str,
        to: u64,
        req: AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<RaftResult<AppendEntriesResponse<u64>>, CallError> {
        self.call(addr, Some(to), APPEND, req, timeout).await
    }

    /// openraft's Vote to `addr`.
    pub async fn vote(
        &self,
        addr: &str,
        to: u64,
        req: VoteRequest<u64>,
        timeout: Duration,
    ) -> Result<RaftResult<VoteResponse<u64>>, CallError> {
        self.call(addr, Some(to), VOTE, req, timeout).await
    }

    /// One snapshot chunk to `addr`.
    pub async fn snapshot(
        &self,
        addr: &str,
        to: u64,
        req: InstallSnapshotRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<SnapshotResult, CallError> {
        self.call(addr, Some(to), SNAPSHOT, SnapshotChunk::from(req), timeout)
            .await
    }

    /// A client or membership request to `addr`.
    pub async fn client(
        &self,
        addr: &str,
        req: ClientRequest,
        timeout: Duration,
    ) -> Result<ClientResponse, CallError> {
        self.call(addr, None, CLIENT, req, timeout).await
    }
}
