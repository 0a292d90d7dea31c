//! The `dref` binary against a private Redis server, with refs, locks and
//! elections made by dref itself.

#[path = "../../tests/tests/support/raft_cluster.rs"]
#[allow(dead_code)]
mod raft_cluster;
#[path = "../../tests/tests/support/redis_server.rs"]
mod redis_server;

use std::process::Stdio;
use std::time::Duration;

use dref::{distributed, Codec, Context, ManualId};
use dref_backends::redis::{RedisBackend, RedisConfig};
use redis_server::RedisServer;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

#[distributed]
#[derive(Clone, Debug, PartialEq)]
struct Point {
    x: i32,
    y: i32,
}

/// What one run of the tool did.
struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs the tool on the Redis server at `url`.
async fn dref(url: &str, args: &[&str]) -> Run {
    run(&["--redis", url], args).await
}

/// Runs the tool with the store given by `store`, then `args`.
async fn run(store: &[&str], args: &[&str]) -> Run {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_dref"))
            .args(store)
            .args(args)
            .env_remove("DREF_REDIS_URL")
            .output(),
    )
    .await
    .expect("the tool answered in time")
    .expect("the tool ran");
    Run {
        status: output.status.code().expect("an exit status"),
        stdout: String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    }
}

async fn backend(server: &RedisServer) -> RedisBackend {
    RedisConfig::new(server.url())
        .connect()
        .await
        .expect("connect")
}

fn context(backend: RedisBackend, codec: Codec) -> Context {
    Context::builder()
        .backend(backend)
        .node_id("node-a")
        .codec(codec)
        .session_ttl(Duration::from_secs(10))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_set_read_and_write_json_refs() {
    let server = RedisServer::start(&[]);
    let url = server.url();
    let ctx = context(backend(&server).await, Codec::Json);
    let counter = ctx.make(ManualId::<u64>::new("counter"), 41).await.unwrap();
    let point = ctx
        .make(ManualId::<Point>::new("point"), Point { x: 1, y: 2 })
        .await
        .unwrap();

    let got = dref(&url, &["get", "ref/counter"]).await;
    assert_eq!(
        (got.status, got.stdout.as_str()),
        (0, "41"),
        "{}",
        got.stderr
    );
    let got = dref(&url, &["--json", "get", "ref/counter"]).await;
    let record = got.json();
    assert_eq!(record["value"], json!(41));
    assert_eq!(record["version"], json!(1));
    assert!(record["type"].as_str().unwrap().starts_with("json:"));
    let got = dref(&url, &["get", "ref/point"]).await;
    assert_eq!(got.json(), json!({"x": 1, "y": 2}));

    let set = dref(&url, &["set", "ref/counter", "42"]).await;
    assert_eq!(set.status, 0, "{}", set.stderr);
    assert_eq!(counter.get().await.unwrap(), 42);
    let set = dref(&url, &["set", "ref/point", r#"{"x": 5, "y": -6}"#]).await;
    assert_eq!(set.status, 0, "{}", set.stderr);
    assert_eq!(point.get().await.unwrap(), Point { x: 5, y: -6 });

    // Bad input: exit status 2 and a message that says what is wrong;
    // nothing written.
    for (args, says) in [
        (
            &["set", "ref/point", r#"{"x": 5}"#][..],
            "lacks the field `y`",
        ),
        (
            &["set", "ref/point", r#"{"x": 1, "y": 2, "z": 3}"#],
            "no field `z`",
        ),
        (&["set", "ref/counter", "{not json"], "not JSON"),
    ] {
        let run = dref(&url, args).await;
        assert_eq!(run.status, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
    assert_eq!(point.get().await.unwrap(), Point { x: 5, y: -6 });
    let missing = dref(&url, &["get", "ref/nothing"]).await;
    assert_eq!(missing.status, 1);
    assert!(
        missing.stderr.contains("no record under `ref/nothing`"),
        "{}",
        missing.stderr
    );
    let missing = dref(&url, &["set", "ref/nothing", "1"]).await;
    assert_eq!(missing.status, 1, "{}", missing.stderr);

    // A ref of another codec is shown but not written.
    let other = context(backend(&server).await, Codec::Postcard);
    other.make(ManualId::<u8>::new("byte"), 7).await.unwrap();
    let got = dref(&url, &["get", "ref/byte"]).await;
    assert_eq!(got.json(), json!({"$bytes": "07"}));
    let set = dref(&url, &["set", "ref/byte", "8"]).await;
    assert_eq!(set.status, 2);
    assert!(set.stderr.contains("postcard"), "{}", set.stderr);

    let list = dref(&url, &["list", "ref/"]).await;
    let keys: Vec<&str> = list
        .stdout
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(keys, ["ref/byte", "ref/counter", "ref/point"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_leader_and_status_show_who_holds_what() {
    let server = RedisServer::start(&[]);
    let url = server.url();
    let ctx = context(backend(&server).await, Codec::Json);
    let guard = ctx.acquire("nightly-report").await.unwrap();
    let leadership = ctx.campaign("scheduler").await.unwrap();

    let locks = dref(&url, &["--json", "locks"]).await;
    assert_eq!(locks.status, 0, "{}", locks.stderr);
    let locks = locks.json();
    let [lock] = locks["locks"].as_array().unwrap().as_slice() else {
        panic!("expected one lock: {locks}");
    };
    assert_eq!(lock["name"], json!("nightly-report"));
    assert_eq!(lock["holder"], json!("node-a"));
    assert_eq!(lock["token"], json!(guard.token().0));
    assert!(
        lock["session"].is_u64() && lock["age_ms"].is_u64(),
        "{lock}"
    );
    let text = dref(&url, &["locks"]).await;
    assert!(
        text.stdout
            .starts_with("nightly-report  holder node-a  token "),
        "{}",
        text.stdout
    );

    let leader = dref(&url, &["--json", "leader", "scheduler"]).await;
    assert_eq!(leader.json()["holder"], json!("node-a"));
    assert_eq!(leader.json()["token"], json!(leadership.token().0));
    let nobody = dref(&url, &["leader", "nobody"]).await;
    assert_eq!(nobody.status, 1);
    assert!(nobody.stderr.contains("no leader"), "{}", nobody.stderr);

    let status = dref(&url, &["--json", "status"]).await;
    let status = status.json();
    assert_eq!(status["namespace"], json!("dref:"));
    assert!(status["revision"].as_u64().unwrap() >= leadership.token().0);
    assert!(status["server_version"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));

    leadership.resign().await.unwrap();
    guard.release().await.unwrap();
    let locks = dref(&url, &["--json", "locks"]).await;
    assert_eq!(locks.json()["locks"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_a_line_per_change() {
    let server = RedisServer::start(&[]);
    let ctx = context(backend(&server).await, Codec::Json);
    let counter = ctx.make(ManualId::<u64>::new("watched"), 1).await.unwrap();
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_dref"))
        .args([
            "--redis",
            &server.url(),
            "--json",
            "watch",
            "--prefix",
            "ref/",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the tool ran");
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // The watch prints the changes after it started (it lists what is
    // there first): set values until lines come, then each set is a line.
    let mut value = 1;
    let mut seen: Vec<Value> = Vec::new();
    let deleted = tokio::time::timeout(Duration::from_secs(60), async {
        while seen.len() < 3 {
            value += 1;
            counter.set(value).await.unwrap();
            // (`next_line` is cancel-safe: a line is never lost.)
            let waited = if seen.is_empty() { 2 } else { 30 };
            if let Ok(line) =
                tokio::time::timeout(Duration::from_secs(waited), lines.next_line()).await
            {
                let line = line.unwrap().expect("a line");
                seen.push(serde_json::from_str(&line).unwrap());
            }
        }
        counter.delete().await.unwrap();
        lines.next_line().await.unwrap().expect("a line")
    })
    .await
    .expect("the changes were printed in time");
    for change in &seen {
        assert_eq!(change["event"], json!("put"), "{change}");
        assert_eq!(change["key"], json!("ref/watched"), "{change}");
    }
    let values: Vec<u64> = seen.iter().map(|c| c["value"].as_u64().unwrap()).collect();
    assert!(values.windows(2).all(|w| w[1] == w[0] + 1), "{values:?}");
    assert_eq!(values.last(), Some(&value));
    let deleted: Value = serde_json::from_str(&deleted).unwrap();
    assert_eq!(deleted["event"], json!("delete"));
    assert_eq!(deleted["key"], json!("ref/watched"));
}

/// Wrong credentials: a configuration error naming the problem, without
/// the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_clear_error() {
    let server = RedisServer::start(&["--requirepass", "s3cret"]);
    let wrong = format!("redis://:nope@127.0.0.1:{}/0", server.port);
    let run = dref(&wrong, &["get", "ref/x"]).await;
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("credentials"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("nope"),
        "the password leaked: {}",
        run.stderr
    );
    let right = format!("redis://:s3cret@127.0.0.1:{}/0", server.port);
    let run = dref(&right, &["list"]).await;
    assert_eq!(run.status, 0, "{}", run.stderr);
}

/// Bad arguments: clap's usage errors, exit status 2, before any store is
/// asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_usage_errors() {
    for args in [
        &["get"][..],
        &["set", "ref/x"],
        &["frobnicate"],
        &["--timeout", "soon", "status"],
        &[
            "--redis",
            "redis://127.0.0.1:1/0",
            "--raft",
            "127.0.0.1:1",
            "status",
        ],
    ] {
        let run = run(&[], args).await;
        assert_eq!(run.status, 2, "{args:?}: {}", run.stderr);
        assert!(!run.stderr.is_empty(), "{args:?}");
    }
    let zero = dref("redis://127.0.0.1:1/0", &["--timeout", "0", "status"]).await;
    assert_eq!(zero.status, 2, "{}", zero.stderr);
    assert!(zero.stderr.contains("--timeout"), "{}", zero.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_missing_store_is_a_clear_error() {
    let gone = dref("redis://127.0.0.1:1/0", &["--timeout", "2", "status"]).await;
    assert_eq!(gone.status, 3, "{}", gone.stderr);
    assert!(!gone.stderr.is_empty());
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_dref"))
        .arg("status")
        .env_remove("DREF_REDIS_URL")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("DREF_REDIS_URL"));
}

/// On a Raft cluster the tool is a client of any node, never a member:
/// it reads and writes through a follower, lists locks and leaders, and
/// shows every member with its applied index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_raft_the_tool_is_a_client_of_any_node() {
    let nodes = raft_cluster::start(3, |c| c).await;
    let follower = raft_cluster::follower_of(&nodes);
    let addr = nodes[follower].address().to_owned();
    let raft = ["--raft", addr.as_str()];
    let leader = raft_cluster::leader_of(&nodes);
    let ctx = nodes[leader]
        .context_builder()
        .codec(Codec::Json)
        .node_id("node-a")
        .connect()
        .await
        .unwrap();
    let counter = ctx.make(ManualId::<u64>::new("counter"), 41).await.unwrap();
    let guard = ctx.acquire("nightly-report").await.unwrap();

    let got = run(&raft, &["get", "ref/counter"]).await;
    assert_eq!(
        (got.status, got.stdout.as_str()),
        (0, "41"),
        "{}",
        got.stderr
    );
    let set = run(&raft, &["set", "ref/counter", "42"]).await;
    assert_eq!(set.status, 0, "{}", set.stderr);
    assert_eq!(counter.get().await.unwrap(), 42);
    let list = run(&raft, &["list", "ref/"]).await;
    assert!(
        list.stdout.starts_with("ref/counter  version 2"),
        "{}",
        list.stdout
    );
    let leadership = ctx.campaign("scheduler").await.unwrap();
    let leader_now = run(&raft, &["--json", "leader", "scheduler"]).await.json();
    assert_eq!(leader_now["holder"], json!("node-a"));
    assert_eq!(leader_now["token"], json!(leadership.token().0));
    let locks = run(&raft, &["--json", "locks"]).await.json();
    assert_eq!(locks["locks"][0]["holder"], json!("node-a"));
    assert_eq!(locks["locks"][0]["token"], json!(guard.token().0));

    let status = run(&raft, &["--json", "status"]).await;
    assert_eq!(status.status, 0, "{}", status.stderr);
    let status = status.json();
    assert_eq!(status["leader"], json!(nodes[leader].node_id().to_string()));
    let members = status["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{status}");
    for member in members {
        assert_eq!(member["voter"], json!(true), "{member}");
        assert!(member["applied_index"].is_u64(), "{member}");
    }
    let leaders = members
        .iter()
        .filter(|m| m["state"] == json!("leader"))
        .count();
    assert_eq!(leaders, 1, "{status}");

    // A watch through the follower: a line per change, from the node's
    // own copy of the state.
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_dref"))
        .args(["--raft", addr.as_str(), "--json", "watch", "ref/counter"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the tool ran");
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut value = 42;
    let shown = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            value += 1;
            counter.set(value).await.unwrap();
            let waited = Duration::from_secs(2);
            if let Ok(line) = tokio::time::timeout(waited, lines.next_line()).await {
                break line.unwrap().expect("a line");
            }
        }
    })
    .await
    .expect("a change was printed in time");
    let change: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(change["key"], json!("ref/counter"), "{change}");
    assert_eq!(change["event"], json!("put"), "{change}");
    assert!(change["value"].as_u64().unwrap() > 42, "{change}");
    // A cluster of another name refuses the tool.
    let other = run(
        &["--raft", addr.as_str(), "--cluster", "other"],
        &["status"],
    )
    .await;
    assert_eq!(other.status, 2, "{}", other.stderr);
    assert!(
        other.stderr.contains("refused this client"),
        "{}",
        other.stderr
    );
    guard.release().await.unwrap();
}
