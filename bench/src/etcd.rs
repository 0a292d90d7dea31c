//! An etcd baseline: a local N-member etcd cluster and a minimal etcd v3 client.
//!
//! [`EtcdCluster`] runs Debian's `etcd` binary (package `etcd-server`, installed
//! with `apt-get` when missing) as child processes on 127.0.0.1, with data
//! under `/dev/shm` (the disk costs nothing: the figures measure consensus and
//! the network stack) or in a directory on a real disk (etcd fsyncs its WAL
//! as in production). [`EtcdClient`] speaks the etcd v3 gRPC API through
//! tonic with hand-written prost messages (no `protoc`), and offers exactly what
//! the benchmark needs: put, get, a compare-and-put transaction on the key's
//! `mod_revision`, an optimistic counter increment built from them, and
//! whether the connected member is the leader.
//!
//! This is run by hand, not by CI.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

/// The messages of etcd's `rpc.proto` (`etcdserverpb`, including
/// `Maintenance.Status`) and `kv.proto` (`mvccpb`) that the client uses, with
/// only the fields it needs (prost skips the others when decoding); the tags
/// are the real ones. The oneofs list only the variants used:
/// `RequestOp.request_put` = 2, `ResponseOp.response_range` = 1 and
/// `response_put` = 2, `Compare.mod_revision` = 6.
mod pb {
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct ResponseHeader {
        #[prost(uint64, tag = "2")]
        pub member_id: u64,
        #[prost(int64, tag = "3")]
        pub revision: i64,
    }

    /// `Maintenance.Status` takes no arguments.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct StatusRequest {}

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct StatusResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// The member id of the current leader (0 if none is known).
        #[prost(uint64, tag = "4")]
        pub leader: u64,
    }

    /// `mvccpb.KeyValue`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct KeyValue {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(int64, tag = "3")]
        pub mod_revision: i64,
        #[prost(bytes = "vec", tag = "5")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct PutRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct PutResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct RangeRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct RangeResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(message, repeated, tag = "2")]
        pub kvs: Vec<KeyValue>,
    }

    /// `Compare.CompareResult.EQUAL`.
    pub const COMPARE_RESULT_EQUAL: i32 = 0;
    /// `Compare.CompareTarget.MOD`.
    pub const COMPARE_TARGET_MOD: i32 = 2;

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Compare {
        #[prost(int32, tag = "1")]
        pub result: i32,
        #[prost(int32, tag = "2")]
        pub target: i32,
        #[prost(bytes = "vec", tag = "3")]
        pub key: Vec<u8>,
        #[prost(oneof = "TargetUnion", tags = "6")]
        pub target_union: Option<TargetUnion>,
    }

    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum TargetUnion {
        #[prost(int64, tag = "6")]
        ModRevision(i64),
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct RequestOp {
        #[prost(oneof = "Request", tags = "2")]
        pub request: Option<Request>,
    }

    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Request {
        #[prost(message, tag = "2")]
        Put(PutRequest),
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct ResponseOp {
        #[prost(oneof = "Response", tags = "1, 2")]
        pub response: Option<Response>,
    }

    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Response {
        #[prost(message, tag = "1")]
        Range(RangeResponse),
        #[prost(message, tag = "2")]
        Put(PutResponse),
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct TxnRequest {
        #[prost(message, repeated, tag = "1")]
        pub compare: Vec<Compare>,
        #[prost(message, repeated, tag = "2")]
        pub success: Vec<RequestOp>,
        #[prost(message, repeated, tag = "3")]
        pub failure: Vec<RequestOp>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct TxnResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(bool, tag = "2")]
        pub succeeded: bool,
        #[prost(message, repeated, tag = "3")]
        pub responses: Vec<ResponseOp>,
    }
}

/// How long [`EtcdCluster::start`] waits for every member to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A local etcd cluster of child processes; dropping it kills the members and
/// removes their data (kept, with the logs, when start-up failed).
pub struct EtcdCluster {
    children: Vec<Child>,
    client_ports: Vec<u16>,
    base_dir: PathBuf,
    keep_dir: bool,
}

impl EtcdCluster {
    /// Starts a `members`-member cluster on 127.0.0.1 with free ports and data
    /// under `/dev/shm`, installing `etcd-server` first if `etcd` is missing,
    /// and waits (60 s at most) until every member serves requests.
    ///
    /// Panics with a message naming the member's log file if a member exits
    /// or does not become healthy in time.
    pub fn start(members: usize) -> EtcdCluster {
        EtcdCluster::start_in(members, Path::new("/dev/shm"), false)
    }

    /// [`start`](Self::start) with the data under `parent`; `durable`
    /// keeps etcd's fsyncs (else `--unsafe-no-fsync` where the binary has
    /// it).
    pub fn start_in(members: usize, parent: &Path, durable: bool) -> EtcdCluster {
        assert!(members > 0, "an etcd cluster needs at least one member");
        ensure_etcd_installed();
        let no_fsync = !durable && etcd_supports("--unsafe-no-fsync");
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let base_dir = parent.join(format!("dref-etcd-{}-{stamp}", std::process::id()));
        fs::create_dir_all(&base_dir).expect("create the etcd data directory");
        // Hold every listener until all ports are chosen, so none repeats.
        let listeners: Vec<TcpListener> = (0..2 * members)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port on 127.0.0.1"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("address of a bound port").port())
            .collect();
        drop(listeners);
        let (client_ports, peer_ports) = ports.split_at(members);
        let initial_cluster = peer_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            children: Vec::with_capacity(members),
            client_ports: client_ports.to_vec(),
            base_dir,
            keep_dir: false,
        };
        for i in 0..members {
            let log_path = cluster.log_path(i);
            let log = File::create(&log_path).expect("create an etcd member's log file");
            let client = format!("http://127.0.0.1:{}", client_ports[i]);
            let peer = format!("http://127.0.0.1:{}", peer_ports[i]);
            let mut cmd = Command::new("etcd");
            cmd.arg("--name")
                .arg(format!("m{i}"))
                .arg("--data-dir")
                .arg(cluster.base_dir.join(format!("m{i}")))
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-token", "dref-bench"])
                .args(["--initial-cluster-state", "new"]);
            if no_fsync {
                cmd.arg("--unsafe-no-fsync");
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("duplicate the log file handle"))
                .stderr(log)
                .spawn()
                .expect("spawn etcd");
            cluster.children.push(child);
        }
        cluster.wait_healthy();
        cluster
    }

    /// The client URLs of the members, `http://127.0.0.1:PORT`, one per member.
    pub fn client_urls(&self) -> Vec<String> {
        self.client_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect()
    }

    fn log_path(&self, member: usize) -> PathBuf {
        self.base_dir.join(format!("m{member}.log"))
    }

    /// Polls each member with a TCP connect and a real `GET /health`, which
    /// etcd answers `"health":"true"` only once the member has a leader.
    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        for i in 0..self.children.len() {
            loop {
                let failure = match self.children[i].try_wait() {
                    Ok(Some(status)) => Some(format!("exited with {status} during start-up")),
                    _ if health_ok(self.client_ports[i]) => break,
                    _ if Instant::now() > deadline => {
                        Some(format!("not healthy after {START_TIMEOUT:?}"))
                    }
                    _ => None,
                };
                if let Some(failure) = failure {
                    self.keep_dir = true;
                    let log = self.log_path(i);
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = &lines[lines.len().saturating_sub(15)..];
                    panic!(
                        "etcd member m{i} {failure}; log kept at {}, ending:\n{}",
                        log.display(),
                        tail.join("\n")
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.keep_dir {
            let _ = fs::remove_dir_all(&self.base_dir);
        }
    }
}

/// One `GET /health` over HTTP/1.0 to a member's client port.
fn health_ok(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut answer = String::new();
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.contains("\"health\":\"true\"")
}

/// Installs Debian's `etcd-server` if `etcd` is not on `PATH`.
fn ensure_etcd_installed() {
    let present = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return;
    }
    let apt = |args: &[&str]| {
        eprintln!("etcd not found; running: apt-get {}", args.join(" "));
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    let installed = apt(&["install", "-y", "etcd-server"])
        || (apt(&["update"]) && apt(&["install", "-y", "etcd-server"]));
    assert!(installed, "could not install etcd-server with apt-get");
}

/// Whether `etcd --help` mentions `flag`.
fn etcd_supports(flag: &str) -> bool {
    Command::new("etcd")
        .arg("--help")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).contains(flag)
                || String::from_utf8_lossy(&o.stderr).contains(flag)
        })
        .unwrap_or(false)
}

/// A minimal etcd v3 client over one tonic channel; clones share the channel.
#[derive(Clone)]
pub struct EtcdClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl EtcdClient {
    /// Connects to one member's client URL, e.g. `http://127.0.0.1:2379`.
    pub async fn connect(url: &str) -> Result<EtcdClient, tonic::transport::Error> {
        let channel = Endpoint::from_shared(url.to_owned())?.connect().await?;
        Ok(EtcdClient {
            grpc: tonic::client::Grpc::new(channel),
        })
    }

    async fn call<Req, Resp>(&self, path: &'static str, req: Req) -> Result<Resp, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("etcd channel not ready: {e}")))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let response = grpc
            .unary(
                tonic::Request::new(req),
                PathAndQuery::from_static(path),
                codec,
            )
            .await?;
        Ok(response.into_inner())
    }

    /// Sets `key` to `value`.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), Status> {
        let req = pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        let _: pb::PutResponse = self.call("/etcdserverpb.KV/Put", req).await?;
        Ok(())
    }

    /// The value of `key` and its `mod_revision`, or `None` if it is absent.
    /// The read is linearizable (etcd's default).
    pub async fn get(&self, key: &[u8]) -> Result<Option<(Vec<u8>, i64)>, Status> {
        let req = pb::RangeRequest { key: key.to_vec() };
        let resp: pb::RangeResponse = self.call("/etcdserverpb.KV/Range", req).await?;
        Ok(resp
            .kvs
            .into_iter()
            .next()
            .map(|kv| (kv.value, kv.mod_revision)))
    }

    /// Whether the member this client is connected to is the cluster's
    /// leader now (`Maintenance.Status`: its own id against the leader's).
    pub async fn is_leader(&self) -> Result<bool, Status> {
        let resp: pb::StatusResponse = self
            .call("/etcdserverpb.Maintenance/Status", pb::StatusRequest {})
            .await?;
        let member = resp.header.map_or(0, |h| h.member_id);
        Ok(member != 0 && member == resp.leader)
    }

    /// Sets `key` to `value` only if its `mod_revision` is still
    /// `expected_mod_revision` (0 for an absent key); returns whether it did.
    pub async fn txn_put_if_mod_revision(
        &self,
        key: &[u8],
        expected_mod_revision: i64,
        value: &[u8],
    ) -> Result<bool, Status> {
        let req = pb::TxnRequest {
            compare: vec![pb::Compare {
                result: pb::COMPARE_RESULT_EQUAL,
                target: pb::COMPARE_TARGET_MOD,
                key: key.to_vec(),
                target_union: Some(pb::TargetUnion::ModRevision(expected_mod_revision)),
            }],
            success: vec![pb::RequestOp {
                request: Some(pb::Request::Put(pb::PutRequest {
                    key: key.to_vec(),
                    value: value.to_vec(),
                })),
            }],
            failure: Vec::new(),
        };
        let resp: pb::TxnResponse = self.call("/etcdserverpb.KV/Txn", req).await?;
        Ok(resp.succeeded)
    }

    /// Adds one to the counter at `key` (a `u64` as 8 little-endian bytes,
    /// absent meaning 0) by an optimistic get / compare-and-put loop, and
    /// returns the new value.
    pub async fn increment(&self, key: &[u8]) -> Result<u64, Status> {
        loop {
            let (current, revision) = match self.get(key).await? {
                None => (0, 0),
                Some((value, revision)) => {
                    let bytes: [u8; 8] = value.as_slice().try_into().map_err(|_| {
                        Status::data_loss(format!("counter value is {} bytes, not 8", value.len()))
                    })?;
                    (u64::from_le_bytes(bytes), revision)
                }
            };
            let next = current + 1;
            if self
                .txn_put_if_mod_revision(key, revision, &next.to_le_bytes())
                .await?
            {
                return Ok(next);
            }
        }
    }
}
