//! A TCP proxy between a client and a server that a test can cut and heal,
//! to take a real connection away from one node; it can also hold back
//! what the server sends to pub/sub connections, and lose the reply to a
//! chosen request (the server executes it, the client never hears back).

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; dropped, it stops accepting.
pub struct Proxy {
    pub port: u16,
    faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

/// What the test has asked the proxy to do.
struct Faults {
    cut: AtomicBool,
    /// Bumped by every cut: open connections watch it and close.
    generation: watch::Sender<u64>,
    /// While true, bytes from the server to pub/sub connections wait.
    hold_subscribers: watch::Sender<bool>,
    /// The next request containing these bytes is forwarded, and its
    /// connection closed as soon as the server answers, unanswered.
    lose_reply_to: Mutex<Option<Vec<u8>>>,
    /// Replies lost that way so far.
    replies_lost: AtomicU64,
    /// Script calls still to be answered `-LOADING`, as a server that is
    /// reading its data set back after a restart answers.
    loading: AtomicU64,
}

/// State shared by the two directions of one proxied connection.
#[derive(Default)]
struct Link {
    /// The client subscribed: this is a pub/sub connection.
    subscriber: AtomicBool,
    /// The server's next bytes answer a request whose reply is lost.
    lose_next_reply: AtomicBool,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

impl Proxy {
    /// Proxies a loopback port to `target` on loopback.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let faults = Arc::new(Faults {
            cut: AtomicBool::new(false),
            generation: watch::channel(0).0,
            hold_subscribers: watch::channel(false).0,
            lose_reply_to: Mutex::new(None),
            replies_lost: AtomicU64::new(0),
            loading: AtomicU64::new(0),
        });
        let task = {
            let faults = faults.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    // Subscribed before the check: a cut that comes while
                    // this connection is still being set up closes it too.
                    // (Subscribed later, it would mark that cut as seen,
                    // and the connection would outlive it.)
                    let cut = faults.generation.subscribe();
                    if faults.cut.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let faults = faults.clone();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                            return;
                        };
                        relay(client, server, faults, cut).await;
                    });
                }
            })
        };
        Proxy { port, faults, task }
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.faults.cut.store(true, Ordering::SeqCst);
        self.faults.generation.send_modify(|g| *g += 1);
    }

    /// Accepts connections again.
    pub fn heal(&self) {
        self.faults.cut.store(false, Ordering::SeqCst);
    }

    /// While `hold` is true, what the server sends to pub/sub connections
    /// (those on which the client sent `SUBSCRIBE` or `PSUBSCRIBE`) waits
    /// in the proxy; other connections flow as usual.
    pub fn hold_subscribers(&self, hold: bool) {
        self.faults.hold_subscribers.send_replace(hold);
    }

    /// Arms a one-shot fault: the next request whose bytes contain
    /// `needle` reaches the server, and when the server answers, the
    /// answer is dropped and the connection closed.
    pub fn lose_reply_to(&self, needle: &[u8]) {
        *self.faults.lose_reply_to.lock().unwrap() = Some(needle.to_vec());
    }

    /// The next `calls` requests that run a script (`EVALSHA`) are
    /// answered `-LOADING ...` by the server instead (the proxy swaps each
    /// for a script that answers so), as while a restarted server loads its
    /// data set.
    pub fn answer_loading(&self, calls: u64) {
        self.faults.loading.store(calls, Ordering::SeqCst);
    }

    /// How many of [`answer_loading`](Self::answer_loading)'s calls are
    /// still to come.
    pub fn loading_left(&self) -> u64 {
        self.faults.loading.load(Ordering::SeqCst)
    }

    /// How many replies [`lose_reply_to`](Self::lose_reply_to) has lost.
    pub fn replies_lost(&self) -> u64 {
        self.faults.replies_lost.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relays one connection until either side closes, a cut (a change of
/// `cut`), or a lost reply.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    faults: Arc<Faults>,
    mut cut: watch::Receiver<u64>,
) {
    let link = Arc::new(Link::default());
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = requests(client_read, server_write, &link, &faults) => {}
        _ = replies(server_read, client_write, &link, &faults) => {}
        _ = cut.changed() => {}
    }
}

/// Client to server.
async fn requests(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    link: &Link,
    faults: &Faults,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes of a command that has not arrived whole yet.
    let mut pending = Vec::new();
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&buf[..n]);
        // Commands one by one: a client pipelines several into one chunk
        // (more so on a loaded machine), and each must get its own answer.
        while let Some(len) = command_len(&pending) {
            let command: Vec<u8> = pending.drain(..len).collect();
            relay_command(&command, &mut to, link, faults).await?;
        }
    }
}

/// Passes one whole command on to the server, or answers it in the
/// server's place.
async fn relay_command(
    command: &[u8],
    to: &mut OwnedWriteHalf,
    link: &Link,
    faults: &Faults,
) -> std::io::Result<()> {
    let upper = command.to_ascii_uppercase();
    if contains(&upper, b"SUBSCRIBE") {
        link.subscriber.store(true, Ordering::SeqCst);
    }
    if contains(&upper, b"EVALSHA")
        && faults
            .loading
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        // The server answers this script in place of the real call.
        const LOADING: &[u8] = b"*3\r\n$4\r\nEVAL\r\n$74\r\nreturn redis.error_reply('LOADING Redis is loading the dataset in memory')\r\n$1\r\n0\r\n";
        return to.write_all(LOADING).await;
    }
    {
        let mut armed = faults.lose_reply_to.lock().unwrap();
        if armed
            .as_deref()
            .is_some_and(|needle| contains(command, needle))
        {
            *armed = None;
            link.lose_next_reply.store(true, Ordering::SeqCst);
        }
    }
    to.write_all(command).await
}

/// The length of the first whole command in `bytes` (a RESP array of bulk
/// strings, as clients send them, or an inline command line), or `None`
/// while it is incomplete.
fn command_len(bytes: &[u8]) -> Option<usize> {
    let line = |from: usize| {
        bytes[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|at| (from + at, from + at + 2))
    };
    let number = |from: usize, to: usize| -> Option<usize> {
        std::str::from_utf8(&bytes[from..to]).ok()?.parse().ok()
    };
    if bytes.first() != Some(&b'*') {
        // An inline command: up to the end of its line.
        return line(0).map(|(_, next)| next);
    }
    let (end, mut at) = line(0)?;
    let items = number(1, end)?;
    for _ in 0..items {
        if bytes.get(at) != Some(&b'$') {
            // Not a bulk string: pass the rest on as it is.
            return Some(bytes.len());
        }
        let (end, next) = line(at)?;
        let len = number(at + 1, end)?;
        at = next + len + 2;
        if at > bytes.len() {
            return None;
        }
    }
    Some(at)
}

/// Server to client.
async fn replies(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    link: &Link,
    faults: &Faults,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut hold = faults.hold_subscribers.subscribe();
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if link.lose_next_reply.load(Ordering::SeqCst) {
            // The server has executed the request: close without passing
            // its answer on.
            faults.replies_lost.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        if link.subscriber.load(Ordering::SeqCst) {
            // Held while the test says so (a closed channel means the
            // proxy is going away: pass everything on).
            let _ = hold.wait_for(|held| !*held).await;
        }
        to.write_all(&buf[..n]).await?;
    }
}
