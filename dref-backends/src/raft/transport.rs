//! The byte streams under the gRPC service: TCP, or TLS over TCP when the
//! node has TLS settings. Incoming connections are accepted here (with the
//! TLS handshake off the accept loop, so a slow or hostile client stalls
//! nobody), and outgoing ones are made by [`Connector`], tonic's connector
//! for every peer channel.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::Stream;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::codegen::http::Uri;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::cluster::Cluster;
use super::tls::Tls;

/// Longest a TLS handshake may take, either way.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Incoming handshakes in progress at once; beyond it, new connections
/// wait in the listen queue.
const MAX_HANDSHAKES: usize = 256;

/// How often one client's same refusal is logged again.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Refusals being counted; beyond it the record starts over (a scan from
/// many addresses must not grow it without bound).
const REFUSAL_LOG_ENTRIES: usize = 1024;

/// Refused handshakes, logged once per client address and reason per
/// [`REFUSAL_LOG_INTERVAL`], with the number of the same refusals in
/// between: a misconfigured node retries several times a second, and a new
/// reason is always shown.
struct RefusalLog {
    node: String,
    seen: Mutex<HashMap<(IpAddr, String), (Instant, u64)>>,
}

impl RefusalLog {
    fn refused(&self, peer: SocketAddr, why: String) {
        let now = Instant::now();
        let repeated = {
            let mut seen = self.seen.lock();
            if seen.len() >= REFUSAL_LOG_ENTRIES {
                seen.clear();
            }
            let (since, count) = seen.entry((peer.ip(), why.clone())).or_insert((now, 0));
            if *count > 0 && now.duration_since(*since) < REFUSAL_LOG_INTERVAL {
                *count += 1;
                return;
            }
            let repeated = count.saturating_sub(1);
            *since = now;
            *count = 1;
            repeated
        };
        tracing::warn!(node = %self.node, %peer, error = %why, repeated, "refused a raft connection: the TLS handshake failed");
    }
}

/// One connection, as the gRPC server and client see it.
pub enum Conn {
    /// Plain text, accepted by this node.
    Plain(TcpStream),
    /// Plain text, made by this node.
    PlainClient(Box<PlainClient>),
    /// TLS, accepted by this node.
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS, made by this node.
    Client(Box<ClientTls>),
}

/// An outgoing plain-text connection. A peer with TLS settings answers
/// the HTTP/2 preface with a TLS alert record: seen on the first read, it
/// is noted as a refusal (this node would otherwise take the peer for a
/// dead one, and could form a cluster of its own).
pub struct PlainClient {
    tcp: TcpStream,
    peer: String,
    cluster: Arc<Cluster>,
    first_read: bool,
}

/// The first byte of a TLS alert record.
const TLS_ALERT: u8 = 0x15;

impl PlainClient {
    fn note(&mut self, filled: &[u8]) {
        if !self.first_read || filled.is_empty() {
            return;
        }
        self.first_read = false;
        if filled[0] == TLS_ALERT {
            let why = format!(
                "{} speaks TLS, and this node has no TLS settings (see RaftConfig::tls)",
                self.peer
            );
            self.cluster.refused_by(&self.peer, why);
        }
    }
}

/// An outgoing TLS connection. Under TLS 1.3 the peer checks this node's
/// certificate after the client side has finished its handshake, so a
/// refusal arrives as an alert on the first read: it is noted there.
pub struct ClientTls {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    peer: String,
    cluster: Arc<Cluster>,
}

impl ClientTls {
    fn note(&self, result: &io::Result<()>) {
        let Err(e) = result else { return };
        let alert = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .filter(|tls| matches!(tls, rustls::Error::AlertReceived(_)));
        if let Some(alert) = alert {
            let why = format!("{} refused this node's TLS certificate: {alert}", self.peer);
            self.cluster.refused_by(&self.peer, why);
        }
    }
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(tcp) => tcp,
            Conn::PlainClient(plain) => &plain.tcp,
            Conn::Server(tls) => tls.get_ref().0,
            Conn::Client(tls) => tls.stream.get_ref().0,
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.tcp().local_addr().ok(),
            remote_addr: self.tcp().peer_addr().ok(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::PlainClient(s) => {
                let before = buf.filled().len();
                let result = Pin::new(&mut s.tcp).poll_read(cx, buf);
                s.note(&buf.filled()[before..]);
                result
            }
            Conn::Server(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Client(s) => {
                let result = Pin::new(&mut s.stream).poll_read(cx, buf);
                if let Poll::Ready(result) = &result {
                    s.note(result);
                }
                result
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::PlainClient(s) => Pin::new(&mut s.tcp).poll_write(cx, buf),
            Conn::Server(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Client(s) => Pin::new(&mut s.stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::PlainClient(s) => Pin::new(&mut s.tcp).poll_write_vectored(cx, bufs),
            Conn::Server(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Client(s) => Pin::new(&mut s.stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::PlainClient(s) => s.tcp.is_write_vectored(),
            Conn::Server(s) => s.is_write_vectored(),
            Conn::Client(s) => s.stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::PlainClient(s) => Pin::new(&mut s.tcp).poll_flush(cx),
            Conn::Server(s) => Pin::new(s).poll_flush(cx),
            Conn::Client(s) => Pin::new(&mut s.stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::PlainClient(s) => Pin::new(&mut s.tcp).poll_shutdown(cx),
            Conn::Server(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Client(s) => Pin::new(&mut s.stream).poll_shutdown(cx),
        }
    }
}

/// The connections `listener` accepts until `stopped`, handshaken when
/// `tls` is given. A client that fails the handshake (no certificate, one
/// of another CA, an expired one, plain text, garbage) is logged and
/// dropped; it never reaches the gRPC service. Also returns the task that
/// owns the listener: the socket is closed once it has ended.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> (
    impl Stream<Item = io::Result<Conn>> + Send + 'static,
    tokio::task::JoinHandle<()>,
) {
    let (ready, accepted) = tokio::sync::mpsc::channel::<Conn>(64);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let refusals = Arc::new(RefusalLog {
        node: listener
            .local_addr()
            .map_or_else(|e| format!("(unknown: {e})"), |a| a.to_string()),
        seen: Mutex::default(),
    });
    let accepting = tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                () = until_stopped(&mut stopped) => return,
                permit = handshakes.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let (tcp, peer) = tokio::select! {
                () = until_stopped(&mut stopped) => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: pause
                        // rather than spin; the listener itself lives on.
                        tracing::warn!(error = %e, "the raft listener cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // Nagle's algorithm would hold replies for the peer's delayed
            // ACK (40 ms stalls).
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
            }
            let ready = ready.clone();
            match &tls {
                None => {
                    drop(permit);
                    if ready.send(Conn::Plain(tcp)).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let acceptor = tls.acceptor();
                    let refusals = refusals.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                // The server is gone when this fails.
                                let _gone = ready.send(Conn::Server(Box::new(stream))).await;
                            }
                            Ok(Err(e)) => refusals.refused(peer, e.to_string()),
                            Err(_) => refusals.refused(
                                peer,
                                format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
                            ),
                        }
                    });
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(accepted, |mut accepted| async move {
        accepted.recv().await.map(|conn| (Ok(conn), accepted))
    });
    (stream, accepting)
}

/// Returns once the node stops (or is gone).
async fn until_stopped(stopped: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard that wait_for returns is not Send: drop it here.
    let _stopped = stopped.wait_for(|s| *s).await.is_ok();
}

/// Makes the connections of peer channels: TCP, then the TLS handshake
/// when the node has TLS settings. A handshake the peer refuses is noted as
/// a refusal of this node (it is named in the error of a start that finds
/// no cluster).
#[derive(Clone)]
pub struct Connector {
    tls: Option<Arc<Tls>>,
    cluster: Arc<Cluster>,
}

impl Connector {
    /// Plain text without `tls`.
    pub fn new(tls: Option<Arc<Tls>>, cluster: Arc<Cluster>) -> Self {
        Connector { tls, cluster }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<Conn>;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<Self::Response>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (tls, cluster) = (self.tls.clone(), self.cluster.clone());
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_owned();
            let port = uri.port_u16().unwrap_or(super::DEFAULT_PORT);
            // As Peers names the peer: `host:port`.
            let peer = format!("{host}:{port}");
            let ip_or_name = host.trim_start_matches('[').trim_end_matches(']');
            let tcp = TcpStream::connect((ip_or_name, port)).await?;
            tcp.set_nodelay(true)?;
            let Some(tls) = tls else {
                let conn = PlainClient {
                    tcp,
                    peer,
                    cluster,
                    first_read: true,
                };
                return Ok(hyper_util::rt::TokioIo::new(Conn::PlainClient(Box::new(
                    conn,
                ))));
            };
            let (connector, name) = tls.connector(&host)?;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp)).await {
                Ok(Ok(stream)) => {
                    let conn = ClientTls {
                        stream,
                        peer,
                        cluster,
                    };
                    Ok(hyper_util::rt::TokioIo::new(Conn::Client(Box::new(conn))))
                }
                Ok(Err(e)) => {
                    let why = format!("the TLS handshake with {peer} failed: {e}");
                    cluster.refused_by(&peer, why.clone());
                    Err(io::Error::new(io::ErrorKind::PermissionDenied, why))
                }
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no TLS handshake with {peer} within {HANDSHAKE_TIMEOUT:?}"),
                )),
            }
        })
    }
}
