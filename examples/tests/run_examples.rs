//! Runs every in-memory example binary, so that the recipes cannot rot.
//!
//! `cargo test` builds the examples of this package before running its
//! tests; the binaries sit next to this test's own executable.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/run_examples-<hash> -> target/<profile>/examples/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a target directory")
        .join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "example binary {} is missing: run the tests with `cargo test --workspace` \
         (or `-p dref-examples`), which builds the examples first",
        path.display()
    );
    path
}

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
