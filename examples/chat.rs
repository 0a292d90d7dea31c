//! A chat cluster on the embedded Raft backend: every process is a replica
//! (a Raft node), and a line typed into one replica is printed by all the
//! others.
//!
//! Run three replicas on one machine, one per terminal:
//!
//! ```sh
//! DREF_PORT=8101 DREF_NODE_ADDRESSES=127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103 \
//!     cargo run -p dref-examples --example chat
//! DREF_PORT=8102 DREF_NODE_ADDRESSES=127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103 \
//!     cargo run -p dref-examples --example chat
//! DREF_PORT=8103 DREF_NODE_ADDRESSES=127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103 \
//!     cargo run -p dref-examples --example chat
//! ```
//!
//! (or `docker compose up --build --scale dref-example=3`, see the README).
//! The replicas find each other and form one cluster; then each one asks for
//! a user name (the first line of input). Every later line is a message:
//! it is `set` on one shared `DRef<Option<Message>>`, and every other
//! replica prints it from the ref's change stream as `name: text` on
//! stdout. `exit` (or the end of input) leaves the cluster and quits.
//!
//! Status lines go to stderr: `joined the cluster at ADDR` once this node is
//! a member, `leader is ADDR` whenever the leader this node knows of changes
//! (`leader is unknown` during an election), and the answer to the `/leader`
//! command (the leader, then the voting members).
//!
//! Configuration comes from the environment (`RaftConfig::from_env`):
//! `DREF_PORT` (default 8082), `DREF_NODE_ADDRESSES` (peers as
//! `host:port,...`), `DREF_NODE_SERVICES` (DNS names whose addresses are
//! peers, re-resolved periodically: the Docker Compose service name) and
//! `DREF_ADVERTISE_ADDRESS` (the `host:port` peers reach this node at, when
//! this host's resolved name is not it), `DREF_DATA_DIR` (where the node
//! keeps its log and snapshots: a replica restarted with it comes back as
//! the same member, and the chat's state survives a restart of every
//! replica) and `DREF_SESSION_TTL`.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::Duration;

use dref::{ChangeKind, Changes, DRef, ManualId};
use dref_backends::raft::{RaftBackend, RaftConfig};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// One chat message, the value of the shared ref.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Message {
    /// Unique per process (the context's random node id), so that a
    /// replica recognises its own messages even when two users pick the
    /// same name.
    sender: String,
    /// Counts the sender's messages: makes every message a distinct value,
    /// and lets a replica skip one it already printed (after a resync).
    seq: u64,
    /// The user name.
    author: String,
    text: String,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How often the leader this node knows of is checked for changes.
const LEADER_POLL: Duration = Duration::from_millis(100);
/// How long quitting waits for the session lease to be revoked.
const SESSION_CLOSE: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut input = spawn_stdin_reader()?;

    let backend = RaftConfig::from_env()?.connect().await?;
    let result = chat(&backend, &mut input).await;
    backend.shutdown().await;
    status(format_args!("left the cluster"));
    result
}

/// Joins the chat and runs it until `exit` or the end of input.
async fn chat(
    backend: &RaftBackend,
    input: &mut mpsc::Receiver<std::io::Result<String>>,
) -> Result<(), BoxError> {
    let ctx = backend.context_builder().connect().await?;
    let me = ctx.node_id().to_owned();
    let room = ctx
        .make(ManualId::<Option<Message>>::new("chat"), None)
        .await?;
    // Subscribed before announcing the join: every message sent after this
    // line is printed.
    let mut messages = room.changes();
    status(format_args!("joined the cluster at {}", backend.address()));
    let leader_reports = tokio::spawn(report_leader(backend.clone()));
    let result = converse(backend, input, &room, &mut messages, &me).await;

    leader_reports.abort();
    drop(messages);
    // Release the session lease now rather than when its TTL runs out.
    match tokio::time::timeout(SESSION_CLOSE, ctx.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => status(format_args!("closing the session: {e}")),
        Err(_) => status(format_args!(
            "closing the session: no answer within {SESSION_CLOSE:?}"
        )),
    }
    result
}

/// Reads the user name, then sends the lines typed and prints the messages
/// of the others, until `exit` or the end of input.
async fn converse(
    backend: &RaftBackend,
    input: &mut mpsc::Receiver<std::io::Result<String>>,
    room: &DRef<Option<Message>>,
    messages: &mut Changes<Option<Message>>,
    me: &str,
) -> Result<(), BoxError> {
    let Some(name) = read_name(input).await? else {
        return Ok(());
    };
    status(format_args!(
        "hello {name}: type a message and press enter; `exit` quits, `/leader` shows the leader and voters"
    ));
    let mut seq = 0;
    let mut printed: HashMap<String, u64> = HashMap::new();
    loop {
        tokio::select! {
            line = input.recv() => {
                let line = match line {
                    None => return Ok(()),
                    Some(line) => line?,
                };
                match line.trim() {
                    "" => {}
                    "exit" => return Ok(()),
                    "/leader" => {
                        status(format_args!("{}", leader_line(backend)));
                        status(format_args!("voters: {}", backend.voters().join(", ")));
                    }
                    text => {
                        seq += 1;
                        let message = Message {
                            sender: me.to_owned(),
                            seq,
                            author: name.clone(),
                            text: text.to_owned(),
                        };
                        // A failure (no leader within the request
                        // timeout) loses this message, not the chat.
                        if let Err(e) = room.set(Some(message)).await {
                            status(format_args!("could not send {text:?}: {e}"));
                        }
                    }
                }
            }
            change = messages.next() => {
                let change = match change {
                    None => return Err("the chat's change stream ended".into()),
                    Some(Err(e)) => {
                        status(format_args!("change stream: {e}"));
                        continue;
                    }
                    Some(Ok(change)) => change,
                };
                let message = match change.kind {
                    ChangeKind::Updated(Some(message))
                    | ChangeKind::Resync(Some(Some(message))) => message,
                    _ => continue,
                };
                if message.sender == me {
                    continue;
                }
                let last = printed.entry(message.sender.clone()).or_insert(0);
                if message.seq > *last {
                    *last = message.seq;
                    print_message(&message)?;
                }
            }
        }
    }
}

/// The user name: the first non-empty line. `None` at the end of input or
/// on `exit`.
async fn read_name(
    input: &mut mpsc::Receiver<std::io::Result<String>>,
) -> Result<Option<String>, BoxError> {
    status(format_args!("your name: "));
    while let Some(line) = input.recv().await {
        match line?.trim() {
            "" => status(format_args!("your name: ")),
            "exit" => return Ok(None),
            name => return Ok(Some(name.to_owned())),
        }
    }
    Ok(None)
}

/// Reads stdin on a plain thread (a blocking read cannot be cancelled, so
/// it must not hold up the runtime's shutdown). The channel closes at the
/// end of input.
fn spawn_stdin_reader() -> std::io::Result<mpsc::Receiver<std::io::Result<String>>> {
    let (lines, rx) = mpsc::channel(64);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let line = match stdin.read_until(b'\n', &mut buf) {
                    Ok(0) => return,
                    Ok(_) => Ok(String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_owned()),
                    Err(e) => Err(e),
                };
                let failed = line.is_err();
                if lines.blocking_send(line).is_err() || failed {
                    return;
                }
            }
        })?;
    Ok(rx)
}

/// Prints `leader is ADDR` whenever the leader this node knows of changes.
async fn report_leader(backend: RaftBackend) {
    let mut last = None;
    let mut tick = tokio::time::interval(LEADER_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let line = leader_line(&backend);
        if last.as_ref() != Some(&line) {
            status(format_args!("{line}"));
            last = Some(line);
        }
    }
}

fn leader_line(backend: &RaftBackend) -> String {
    match backend.leader() {
        Some(addr) if backend.is_leader() => format!("leader is {addr} (this node)"),
        Some(addr) => format!("leader is {addr}"),
        None => "leader is unknown".to_owned(),
    }
}

/// A received message, on stdout.
fn print_message(message: &Message) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: {}", message.author, message.text)?;
    out.flush()
}

/// A status line, on stderr. A failure to write it is not worth stopping
/// the chat for.
fn status(line: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
    let _ = err.flush();
}
