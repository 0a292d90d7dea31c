//! A client of a Raft cluster that is not one of its nodes, for operators'
//! tools such as the `dref` command-line tool: it reads, lists and writes
//! through any node (which routes to the leader, as for its own handle)
//! and asks nodes for their state. It never joins the cluster and holds no
//! copy of the data.

use std::sync::Arc;
use std::time::Duration;

use dref::engine::{Key, Listing, PrefixItem, PrefixStream, Record, Write, WriteOutcome};
use dref::{Error, Result};
use futures_util::StreamExt;

use super::cluster::{Cluster, ClusterTag};
use super::config::DEFAULT_CLUSTER_NAME;
use super::node::BACKEND;
use super::rpc::{
    CallError, ClientRequest, ClientResponse, NodeStatus, Peers, WatchMessage, WatchRequest,
};
use super::tls::{Tls, TlsConfig};
use super::types::{listing_from_wire, WireWrite};

pub use super::rpc::NodeStatus as RaftNodeStatus;

/// How a [`RaftClient`] reaches a cluster.
#[derive(Clone, Debug)]
pub struct RaftClientConfig {
    addr: String,
    cluster_name: String,
    tls: Option<TlsConfig>,
    timeout: Duration,
}

impl RaftClientConfig {
    /// A client of the node at `addr` (`host:port`), of the cluster named
    /// `dref` (see [`RaftConfig::cluster_name`](super::RaftConfig::cluster_name)),
    /// over plain text, waiting up to 5 s for each answer.
    pub fn new(addr: impl Into<String>) -> Self {
        RaftClientConfig {
            addr: addr.into(),
            cluster_name: DEFAULT_CLUSTER_NAME.to_owned(),
            tls: None,
            timeout: Duration::from_secs(5),
        }
    }

    /// The cluster's name: nodes refuse calls that name another.
    pub fn cluster_name(mut self, name: impl Into<String>) -> Self {
        self.cluster_name = name.into();
        self
    }

    /// Calls over mutual TLS with these settings (the cluster's CA and a
    /// certificate it signed), as the nodes' own calls.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The TLS settings of the `DREF_TLS_*` variables, when set (see
    /// [`RaftConfig::from_env`](super::RaftConfig::from_env)).
    pub fn tls_from_env(mut self) -> Result<Self> {
        self.tls = TlsConfig::from_env()?;
        Ok(self)
    }

    /// How long to wait for each answer (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Makes the client and checks that the node answers.
    pub async fn connect(self) -> Result<RaftClient> {
        let tls = self.tls.map(Tls::load).transpose()?;
        let tag = ClusterTag {
            name: self.cluster_name,
            id: None,
        };
        let cluster = Arc::new(Cluster::new(tag, None, 0));
        let client = RaftClient {
            peers: Peers::new(self.timeout, tls, cluster),
            addr: self.addr,
            timeout: self.timeout,
        };
        client.node_status(&client.addr).await?;
        Ok(client)
    }
}

/// A client of a Raft cluster that is not one of its nodes, for operators'
/// tools such as the `dref` command-line tool: it reads, lists and writes
/// through any node (which routes to the leader, as for its own handle)
/// and asks nodes for their state. It never joins the cluster and holds no
/// copy of the data. Made by [`RaftClientConfig::connect`].
pub struct RaftClient {
    peers: Peers,
    addr: String,
    timeout: Duration,
}

/// A cluster's state as its nodes tell it, from [`RaftClient::status`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RaftClusterStatus {
    /// The leader, as the node asked first knows it.
    pub leader: Option<u64>,
    /// That node's term.
    pub term: u64,
    /// The last log index of the leader (of the node asked first when no
    /// leader answers): a member's lag is this minus its applied index.
    pub last_log_index: u64,
    /// Every member the node asked first knows of, with what it says of
    /// itself.
    pub members: Vec<RaftMember>,
}

/// One member of a cluster, from [`RaftClient::status`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RaftMember {
    /// Its node id.
    pub id: u64,
    /// Its address.
    pub addr: String,
    /// Whether it votes.
    pub voter: bool,
    /// What it says of itself, or why it did not answer.
    pub status: std::result::Result<RaftNodeStatus, String>,
}

impl RaftClient {
    fn call_failed(&self, e: CallError) -> Error {
        match e {
            // A node of another cluster, or a certificate it does not
            // trust: trying again will not help.
            CallError::Refused { addr, why } => Error::Refused {
                backend: BACKEND,
                message: format!("node {addr} refused this client: {why}"),
            },
            e => Error::Unavailable {
                backend: BACKEND,
                message: e.to_string(),
            },
        }
    }

    async fn call(&self, addr: &str, request: ClientRequest) -> Result<ClientResponse> {
        let answer = self
            .peers
            .client(addr, request, self.timeout)
            .await
            .map_err(|e| self.call_failed(e))?;
        match answer {
            ClientResponse::Failed(message) => Err(Error::Unavailable {
                backend: BACKEND,
                message: format!("node {addr}: {message}"),
            }),
            ClientResponse::Refused(message) => Err(Error::Config(format!(
                "node {addr} refused the request: {message}"
            ))),
            answer => Ok(answer),
        }
    }

    fn unexpected(&self, answer: &ClientResponse) -> Error {
        Error::Protocol {
            backend: BACKEND,
            message: format!("node {} answered {answer:?}", self.addr),
        }
    }

    /// A linearizable read of `key`.
    pub async fn read(&self, key: &Key) -> Result<Option<Record>> {
        match self
            .call(&self.addr, ClientRequest::Read(key.as_str().to_owned()))
            .await?
        {
            ClientResponse::Record(record) => Ok(record.map(Record::from)),
            other => Err(self.unexpected(&other)),
        }
    }

    /// A linearizable listing of the keys under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Listing> {
        match self
            .call(&self.addr, ClientRequest::List(prefix.to_owned()))
            .await?
        {
            ClientResponse::Listing(revision, records) => Ok(listing_from_wire(revision, records)),
            other => Err(self.unexpected(&other)),
        }
    }

    /// A conditional write. As for every write whose answer is lost, a
    /// failure after it was sent leaves its outcome unknown.
    pub async fn write(&self, write: &Write) -> Result<WriteOutcome> {
        let wire = WireWrite::from_engine(write).ok_or_else(|| {
            Error::Config(format!(
                "the raft backend does not support this write: {write:?}"
            ))
        })?;
        match self.call(&self.addr, ClientRequest::Write(wire)).await? {
            ClientResponse::Written(applied) => applied.into_write_outcome(&write.key),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Watches every key under `prefix` through the node (its own copy of
    /// the state: a node that lags delivers later), with the contract's
    /// `since` semantics (see [`Backend::watch_prefix`](dref::engine::Backend::watch_prefix)).
    /// The stream ends, after an error item, when the node goes away.
    pub async fn watch_prefix(&self, prefix: &str, since: Option<u64>) -> Result<PrefixStream> {
        let request = WatchRequest {
            prefix: prefix.to_owned(),
            since,
        };
        let addr = self.addr.clone();
        let messages = self
            .peers
            .watch(&addr, request, self.timeout)
            .await
            .map_err(|e| self.call_failed(e))?;
        let items = messages.map(move |message| match message {
            Ok(WatchMessage::Event(key, event)) => {
                Ok(PrefixItem::Event(Key::new(key), event.into_engine()))
            }
            Ok(WatchMessage::Resync(revision, records)) => {
                Ok(PrefixItem::Resync(listing_from_wire(revision, records)))
            }
            Ok(WatchMessage::Failed(message)) => Err(Error::Unavailable {
                backend: BACKEND,
                message: format!("node {addr}: {message}"),
            }),
            Err(status) => Err(Error::Unavailable {
                backend: BACKEND,
                message: format!("node {addr}: the watch broke: {status}"),
            }),
        });
        // An error ends the stream, as the contract says.
        let mut failed = false;
        let items = items.take_while(move |item| {
            let go_on = !failed;
            failed |= item.is_err();
            std::future::ready(go_on)
        });
        Ok(Box::pin(items))
    }

    async fn node_status(&self, addr: &str) -> Result<NodeStatus> {
        match self.call(addr, ClientRequest::Status).await? {
            ClientResponse::Status(status) => Ok(status),
            other => Err(self.unexpected(&other)),
        }
    }

    /// The cluster's state: the node asked first names the members and the
    /// leader, and every member is asked for its own state.
    pub async fn status(&self) -> Result<RaftClusterStatus> {
        let first = self.node_status(&self.addr).await?;
        let first = &first;
        let asked = first.members.iter().map(|(id, addr, voter)| async move {
            let status = match *id == first.id {
                true => Ok(first.clone()),
                false => self.node_status(addr).await.map_err(|e| e.to_string()),
            };
            RaftMember {
                id: *id,
                addr: addr.clone(),
                voter: *voter,
                status,
            }
        });
        let members = futures_util::future::join_all(asked).await;
        let leader_log = members
            .iter()
            .filter_map(|m| m.status.as_ref().ok())
            .find(|s| Some(s.id) == first.leader)
            .map_or(first.last_log_index, |s| s.last_log_index);
        Ok(RaftClusterStatus {
            leader: first.leader,
            term: first.term,
            last_log_index: leader_log,
            members,
        })
    }
}
