//! Runs every example binary, so that the recipes cannot rot: the
//! in-memory ones, the Redis one against a private server, and the Raft
//! chat as a cluster of three processes.
//!
//! `cargo test` builds the examples of this package before running its
//! tests; the binaries sit next to this test's own executable.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

mod support;

use support::example_path;

fn run(name: &str) {
    run_with(name, &[]);
}

fn run_with(name: &str, env: &[(&str, String)]) {
    let mut child = Command::new(example_path(name))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the example");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("poll the example") {
            let output = child.wait_with_output().expect("collect output");
            assert!(
                status.success(),
                "example {name} failed with {status}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("example {name} did not finish within 60s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn quickstart() {
    run("quickstart");
}

#[test]
fn leader_election() {
    run("leader_election");
}

#[test]
fn metrics() {
    run("metrics");
}

#[test]
fn throttled_job() {
    run("throttled_job");
}

#[test]
fn feature_flags() {
    run("feature_flags");
}

#[test]
fn throttled_job_attr() {
    run("throttled_job_attr");
}

#[path = "../../tests/tests/support/redis_server.rs"]
mod redis_server;

#[test]
fn redis_counter() {
    let server = redis_server::RedisServer::start(&[]);
    run_with("redis_counter", &[("DREF_REDIS_URL", server.url())]);
}

// The chat cluster: three `chat` processes on 127.0.0.1 form a Raft cluster.
// The tests synchronise only on the processes' output: a replica prints
// `joined the cluster at ADDR` on stderr once it is a member and subscribed
// to the chat, `leader is ADDR` whenever the leader it knows of changes, and
// every message of another replica as `name: text` on stdout.

/// How long the cluster may take to form, and a message to arrive.
const CHAT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the survivors may take to elect a leader and exchange a
/// message after the leader was killed.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a child wrote to one of its pipes so far.
type Output = Arc<Mutex<String>>;

/// Appends a child's pipe to a buffer, line by line, on a thread of its
/// own (so that the child never blocks on a full pipe). The thread ends at
/// the end of the pipe, once the child has exited.
fn capture(pipe: impl Read + Send + 'static) -> (Output, std::thread::JoinHandle<()>) {
    let output = Output::default();
    let sink = output.clone();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => sink
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push_str(&String::from_utf8_lossy(&line)),
            }
        }
    });
    (output, reader)
}

fn read(output: &Output) -> String {
    output
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// One `chat` process.
struct ChatNode {
    name: &'static str,
    addr: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Output,
    stderr: Output,
    /// The threads filling `stdout` and `stderr`.
    readers: Vec<std::thread::JoinHandle<()>>,
    /// Whether the test ended the process on purpose.
    stopped: bool,
}

impl ChatNode {
    /// Once the process has exited: waits until everything it wrote has
    /// been read (its pipes are closed, so the readers end).
    fn collect_last_words(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }

    fn start(name: &'static str, addr: &str, peers: &str) -> ChatNode {
        let port = addr.rsplit(':').next().expect("host:port");
        let mut child = Command::new(example_path("chat"))
            .env("DREF_PORT", port)
            .env("DREF_NODE_ADDRESSES", peers)
            .env("DREF_ADVERTISE_ADDRESS", addr)
            .env_remove("DREF_NODE_SERVICES")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a chat replica");
        let (stdout, out_reader) = capture(child.stdout.take().expect("the child's stdout"));
        let (stderr, err_reader) = capture(child.stderr.take().expect("the child's stderr"));
        let mut node = ChatNode {
            name,
            addr: addr.to_owned(),
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
            stopped: false,
        };
        // The user name is the first line of input; the replica reads it
        // once it has joined.
        node.send(name);
        node
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("the replica's stdin is open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("writing to {}'s stdin: {e}", self.name));
    }

    fn stdout(&self) -> String {
        read(&self.stdout)
    }

    fn stderr(&self) -> String {
        read(&self.stderr)
    }

    fn printed(&self, line: &str) -> bool {
        self.stdout().lines().any(|l| l == line)
    }

    fn joined(&self) -> bool {
        self.stderr().contains("joined the cluster at ")
    }

    /// The leader's address, as last reported by this replica.
    fn leader(&self) -> Option<String> {
        let stderr = self.stderr();
        let last = stderr
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("leader is "))?;
        let addr = last.split_whitespace().next()?;
        (addr != "unknown").then(|| addr.to_owned())
    }
}

/// Chat replicas, all killed when dropped (also when a test fails).
struct ChatCluster {
    nodes: Vec<ChatNode>,
}

impl Drop for ChatCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}

impl ChatCluster {
    /// Starts one replica per name on free ports of 127.0.0.1, each given
    /// all the addresses, and waits until every one has joined.
    fn start(names: &[&'static str]) -> ChatCluster {
        for attempt in 1.. {
            // Ports are found by binding port 0, then released for the
            // replicas: another process may take one in between, which
            // shows as a replica that cannot listen. Then start over.
            let listeners: Vec<TcpListener> = names
                .iter()
                .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
                .collect();
            let addrs: Vec<String> = listeners
                .iter()
                .map(|l| l.local_addr().expect("a bound address").to_string())
                .collect();
            drop(listeners);
            let peers = addrs.join(",");
            let mut cluster = ChatCluster {
                nodes: names
                    .iter()
                    .zip(&addrs)
                    .map(|(name, addr)| ChatNode::start(name, addr, &peers))
                    .collect(),
            };
            let deadline = Instant::now() + CHAT_TIMEOUT;
            loop {
                if cluster.nodes.iter().all(ChatNode::joined) {
                    return cluster;
                }
                let mut exited = false;
                for node in &mut cluster.nodes {
                    if matches!(node.child.try_wait(), Ok(Some(_))) {
                        node.collect_last_words();
                        exited = true;
                    }
                }
                let port_taken = || {
                    cluster
                        .nodes
                        .iter()
                        .any(|n| n.stderr().contains("cannot listen on"))
                };
                if exited && attempt < 3 && port_taken() {
                    break;
                }
                cluster.check(deadline, "every replica joined the cluster");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn node(&self, i: usize) -> &ChatNode {
        &self.nodes[i]
    }

    /// Everything the replicas wrote, for failure messages.
    fn dump(&self) -> String {
        let mut dump = String::new();
        for node in &self.nodes {
            dump.push_str(&format!(
                "--- {} ({}{}) stdout:\n{}--- {} stderr:\n{}",
                node.name,
                node.addr,
                if node.stopped { ", stopped" } else { "" },
                node.stdout(),
                node.name,
                node.stderr()
            ));
        }
        dump
    }

    /// Fails the test if a replica that should run has exited, or if the
    /// deadline has passed.
    fn check(&mut self, deadline: Instant, what: &str) {
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            if node.stopped {
                continue;
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                let name = node.name;
                node.collect_last_words();
                panic!(
                    "waiting until {what}: {name} exited with {status}\n{}",
                    self.dump()
                );
            }
        }
        if Instant::now() > deadline {
            panic!("{what}: not within the time allowed\n{}", self.dump());
        }
    }

    /// Polls the replicas' output until `done` holds.
    fn wait_until(&mut self, what: &str, timeout: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            self.check(deadline, what);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replica `from` says `text`; waits until every one of `to` prints it.
    fn say(&mut self, from: usize, text: &str, to: &[usize], timeout: Duration) {
        self.nodes[from].send(text);
        let line = format!("{}: {text}", self.nodes[from].name);
        let what = format!("{line:?} reached {:?}", self.names(to));
        self.wait_until(&what, timeout, |c| {
            to.iter().all(|&i| c.node(i).printed(&line))
        });
    }

    /// Waits until the replicas `among` name one leader, one of them, and
    /// returns its index.
    fn agreed_leader(&mut self, among: &[usize], timeout: Duration) -> usize {
        let agreed = |c: &Self| -> Option<usize> {
            let leader = c.node(among[0]).leader()?;
            let index = among.iter().copied().find(|&i| c.node(i).addr == leader)?;
            among
                .iter()
                .all(|&i| c.node(i).leader().as_deref() == Some(leader.as_str()))
                .then_some(index)
        };
        let what = format!("{:?} agree on a leader among them", self.names(among));
        self.wait_until(&what, timeout, |c| agreed(c).is_some());
        agreed(self).expect("agreed above")
    }

    /// Ends replica `i` the way `how` does, and waits until it has left
    /// the cluster and exited successfully.
    fn quit(&mut self, i: usize, how: Quit) {
        let node = &mut self.nodes[i];
        node.stopped = true;
        match how {
            Quit::Exit => node.send("exit"),
            Quit::EndOfInput => node.stdin = None,
        }
        let deadline = Instant::now() + CHAT_TIMEOUT;
        let status = loop {
            if let Some(status) = self.nodes[i].child.try_wait().expect("poll a replica") {
                break status;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not quit within {CHAT_TIMEOUT:?}\n{}",
                    self.nodes[i].name,
                    self.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let name = self.nodes[i].name;
        self.wait_until(&format!("{name} said goodbye"), CHAT_TIMEOUT, |c| {
            c.node(i).stderr().contains("left the cluster")
        });
        assert!(
            status.success(),
            "{name} exited with {status}\n{}",
            self.dump()
        );
        // Its session lease was revoked through the log: the cluster it
        // left still had a majority.
        assert!(
            !self.nodes[i].stderr().contains("closing the session"),
            "{name} could not close its session\n{}",
            self.dump()
        );
    }

    /// Kills replica `i` with SIGKILL (on Unix): no goodbye to the cluster.
    fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.stopped = true;
        node.child.kill().expect("kill a replica");
        node.child.wait().expect("reap a replica");
    }

    fn names(&self, which: &[usize]) -> Vec<&'static str> {
        which.iter().map(|&i| self.nodes[i].name).collect()
    }
}

/// How a replica is asked to quit.
enum Quit {
    /// The `exit` command.
    Exit,
    /// Its stdin is closed.
    EndOfInput,
}

#[test]
fn chat_three_processes() {
    let mut cluster = ChatCluster::start(&["alice", "bob", "carol"]);
    cluster.say(0, "hello from alice", &[1, 2], CHAT_TIMEOUT);
    cluster.say(1, "hi from bob", &[0, 2], CHAT_TIMEOUT);
    cluster.say(2, "hey from carol", &[0, 1], CHAT_TIMEOUT);

    // Each replica prints the others' messages in order, and never its own:
    // alice and bob have printed a message sent after theirs, so an echo of
    // their own would already show.
    let expected = [
        "bob: hi from bob\ncarol: hey from carol\n",
        "alice: hello from alice\ncarol: hey from carol\n",
        "alice: hello from alice\nbob: hi from bob\n",
    ];
    for (i, expected) in expected.iter().enumerate() {
        assert_eq!(
            cluster.node(i).stdout(),
            *expected,
            "{}'s messages\n{}",
            cluster.node(i).name,
            cluster.dump()
        );
    }

    // Graceful exits, one at a time, by `exit` or the end of input: each
    // time the leader leaves (it removes itself from the membership), the
    // others elect a new one, and the last replica stands alone.
    let mut remaining = vec![0, 1, 2];
    for how in [Quit::Exit, Quit::EndOfInput, Quit::Exit] {
        let leader = cluster.agreed_leader(&remaining, CHAT_TIMEOUT);
        cluster.quit(leader, how);
        remaining.retain(|&i| i != leader);
    }
}

#[test]
fn chat_survives_leader_sigkill() {
    let mut cluster = ChatCluster::start(&["alice", "bob", "carol"]);
    cluster.say(0, "before the failover", &[1, 2], CHAT_TIMEOUT);

    let leader = cluster.agreed_leader(&[0, 1, 2], CHAT_TIMEOUT);
    cluster.kill(leader);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (a, b) = (survivors[0], survivors[1]);

    // The two survivors are a majority of the three voters: they elect a
    // leader among themselves and go on chatting.
    cluster.agreed_leader(&survivors, FAILOVER_TIMEOUT);
    cluster.say(a, "after the failover", &[b], FAILOVER_TIMEOUT);
    cluster.say(b, "still here", &[a], FAILOVER_TIMEOUT);
}
