//! The dashboard example against a private Redis server: its metrics, its
//! event stream, and its page in headless Chromium showing a value changed
//! through the API within a second.

#[path = "../../tests/tests/support/redis_server.rs"]
mod redis_server;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dref::{Codec, Context, ManualId};
use dref_backends::redis::RedisConfig;
use redis_server::RedisServer;
use support::example_path;

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Err(e) = self.0.kill() {
            eprintln!("cannot kill a child process: {e}");
        }
        let _reaped = self.0.wait();
    }
}

/// Starts the dashboard with `env` on a port of its choosing; returns it
/// and the address it serves at (from its first line).
fn dashboard(env: &[(&str, &str)]) -> (Killed, String) {
    let mut command = Command::new(example_path("dashboard"));
    command
        .env_remove("DREF_REDIS_URL")
        .env("DASHBOARD_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(Stdio::piped());
    let mut dashboard = Killed(command.spawn().expect("start the dashboard"));
    let mut first = String::new();
    BufReader::new(dashboard.0.stdout.take().expect("its stdout"))
        .read_line(&mut first)
        .expect("its first line");
    let addr = first
        .trim()
        .strip_prefix("dashboard on http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("unexpected first line: {first:?}"))
        .to_owned();
    (dashboard, addr)
}

/// The body of one HTTP/1.1 request to the dashboard at `addr`.
fn http(addr: &str, method: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the dashboard");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{method} {path}: {head}");
    body.to_owned()
}

/// Waits (generously: a loaded machine) until `done` holds.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_dashboard_serves_metrics_events_and_a_live_page() {
    let server = RedisServer::start(&[]);
    let (_dashboard, addr) =
        dashboard(&[("DREF_REDIS_URL", &server.url()), ("DASHBOARD_DEMO", "1")]);

    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let ctx = runtime.block_on(async {
        let backend = RedisConfig::new(server.url()).connect().await.unwrap();
        Context::builder()
            .backend(backend)
            .codec(Codec::Json)
            .node_id("test-node")
            .build()
    });
    let visitors = runtime
        .block_on(ctx.make(ManualId::<u64>::new("visitors"), 1))
        .unwrap();

    // Prometheus text, with the metrics of the dashboard's own dref work
    // (its demo workload takes a lock and wins an election).
    wait_for("the dashboard's lock metrics", || {
        http(&addr, "GET", "/metrics").contains("dref_locks_acquired_total{backend=\"redis\"}")
    });
    let state = http(&addr, "GET", "/state");
    assert!(state.starts_with('{'), "{state}");

    // The event stream: the state now, then a message per change.
    let mut events = TcpStream::connect(&addr).unwrap();
    write!(
        events,
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(events).lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    runtime.block_on(visitors.set(2)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("an event with the new value");
        if line.starts_with("data: ") && line.contains(r#"{"key":"ref/visitors","value":2"#) {
            break;
        }
    }

    // The page in a real browser: it reports what it shows (`?report`).
    let profile = std::env::temp_dir().join(format!("dref-dashboard-{}", std::process::id()));
    let chromium = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://{addr}/?report"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let chromium = Killed(
        chromium
            .expect("chromium did not start: scripts/test installs it (scripts/ensure-chromium)"),
    );
    wait_for("the page to show the ref", || {
        http(&addr, "GET", "/seen").contains("ref/visitors")
    });
    let changed = Instant::now();
    runtime.block_on(visitors.set(777)).unwrap();
    wait_for("the page to show the new value", || {
        http(&addr, "GET", "/seen").contains("777")
    });
    let shown_after = changed.elapsed();
    assert!(
        shown_after < Duration::from_secs(1),
        "the page showed the new value {shown_after:?} after it was set"
    );
    drop(chromium);
    remove_profile(&profile);
}

/// Removes the browser's profile directory once its processes are gone:
/// the killed browser's helpers end after it, and write there until then.
fn remove_profile(profile: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match std::fs::remove_dir_all(profile) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if Instant::now() >= deadline => {
                eprintln!("cannot remove {}: {e}", profile.display());
                return;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// On Raft (a demo cluster of three in-process nodes) the state also
/// holds the cluster's members, one of them the leader.
#[test]
fn on_raft_the_dashboard_shows_the_members() {
    let (_dashboard, addr) = dashboard(&[("DASHBOARD_RAFT", "3")]);
    wait_for("three members, one leading", || {
        let state: serde_json::Value = serde_json::from_str(&http(&addr, "GET", "/state")).unwrap();
        let nodes = state["members"]["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let leaders = nodes.iter().filter(|n| n["state"] == "leader").count();
        nodes.len() == 3 && leaders == 1 && state["members"]["leader"].is_string()
    });
}
