//! The `dref` tool against a Raft cluster of node processes: a client of
//! any node, it shows the cluster's locks and members, and a member that
//! is gone as unreachable.

mod support;

use std::time::Duration;

use dref_tests::nemesis::Command;
use dref_tests::scratch::ScratchDir;
use serde_json::Value;
use support::nodes::{raft_nodes, ANSWER};
use support::tool::dref_binary;

/// Runs the tool against the node at `addr`; its exit status and JSON.
async fn dref(addr: &str, args: &[&str]) -> (i32, Value, String) {
    let output = tokio::time::timeout(
        ANSWER,
        tokio::process::Command::new(dref_binary())
            .args(["--raft", addr, "--json", "--timeout", "10"])
            .args(args)
            .output(),
    )
    .await
    .expect("the tool answered in time")
    .expect("the tool ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code().expect("an exit status"), json, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tool_reads_a_cluster_of_processes() {
    let dir = ScratchDir::new("cli-processes");
    let mut nodes = raft_nodes(&dir, 3, Duration::from_secs(10), false).await;
    let second = nodes[1]
        .status()
        .await
        .expect("a status")
        .address
        .expect("a raft node has an address");
    let holder = nodes[0].status().await.expect("a status").node_id;
    let token = nodes[0]
        .ask(
            Command::Acquire {
                lock: "jobs".into(),
            },
            ANSWER,
        )
        .await
        .expect("the first node takes the lock");

    let (status, locks, stderr) = dref(&second, &["locks"]).await;
    assert_eq!(status, 0, "{stderr}");
    let lock = &locks["locks"][0];
    assert_eq!(lock["name"], "jobs", "{locks}");
    assert_eq!(lock["holder"], holder.as_str(), "{locks}");
    assert_eq!(lock["token"], token, "{locks}");

    let (status, cluster, stderr) = dref(&second, &["status"]).await;
    assert_eq!(status, 0, "{stderr}");
    let members = cluster["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{cluster}");
    assert!(members.iter().all(|m| m["state"].is_string()), "{cluster}");

    let (status, _, stderr) = dref(&second, &["get", "ref/nothing"]).await;
    assert_eq!(status, 1, "{stderr}");
    let (status, _, stderr) = dref(&second, &["set", "ref/nothing", "1"]).await;
    assert_eq!(status, 1, "{stderr}");
    let (status, _, stderr) = dref(&second, &["leader", "nobody"]).await;
    assert_eq!(status, 1, "{stderr}");
    let (status, listed, stderr) = dref(&second, &["list", "lock/"]).await;
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(listed["records"][0]["key"], "lock/jobs", "{listed}");

    // A watch through the second node sees the first node's locks.
    let mut watch = tokio::process::Command::new(dref_binary())
        .args(["--raft", &second, "--json", "watch", "--prefix", "lock/"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the tool ran");
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(watch.stdout.take().unwrap()));
    // The first node takes and gives back another lock until the watch,
    // which prints the changes after it started, shows one.
    let line = tokio::time::timeout(ANSWER, async {
        loop {
            for command in [
                Command::Acquire {
                    lock: "cycle".into(),
                },
                Command::Release {
                    lock: "cycle".into(),
                },
            ] {
                nodes[0]
                    .ask(command, ANSWER)
                    .await
                    .expect("the first node answers");
            }
            // (`next_line` is cancel-safe: a line is never lost.)
            if let Ok(line) = tokio::time::timeout(Duration::from_secs(2), lines.next_line()).await
            {
                break line.unwrap().expect("a line");
            }
        }
    })
    .await
    .expect("a change was printed in time");
    let change: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(change["key"], "lock/cycle", "{change}");
    assert!(
        change["event"] == "put" || change["event"] == "delete",
        "{change}"
    );

    // A member that is gone: still listed, as unreachable; the tool
    // still answers through the others.
    nodes[2].kill().await;
    let (status, cluster, stderr) = dref(&second, &["status"]).await;
    assert_eq!(status, 0, "{stderr}");
    let unreachable = cluster["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["error"].is_string())
        .count();
    assert_eq!(unreachable, 1, "{cluster}");
}
