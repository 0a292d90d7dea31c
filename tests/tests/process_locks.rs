//! Locks across real OS processes (`dref-test-node`), on Redis and on a
//! Raft cluster whose members are the processes: what no single process
//! can show, such as two processes drawing the same "unique" claim.

mod support;

use std::time::Duration;

use dref_tests::nemesis::{Command, NodeProcess};
use dref_tests::scratch::ScratchDir;
use support::nodes::{self, ANSWER};
use support::redis_server::RedisServer;

const TTL: Duration = Duration::from_secs(2);

/// The first acquisition of each of two processes, the second dropped
/// while its write is in flight (polled once, then dropped, as a
/// `select!` or a timeout would): the first process keeps its lock.
/// (Claims once came from a per-process counter starting at 1, and the
/// clean-up of a dropped acquisition deleted the record with "its" claim:
/// the other process's.)
async fn dropped_acquisition_keeps_the_other_process_lock(
    holder: &NodeProcess,
    other: &NodeProcess,
) {
    let token: u64 = holder
        .ask_as(
            Command::Acquire {
                lock: "shared".into(),
            },
            ANSWER,
        )
        .await
        .expect("the first process takes the lock");
    for polls in [1, 1, 2, 3] {
        let finished: bool = other
            .ask_as(
                Command::DropAcquire {
                    lock: "shared".into(),
                    polls,
                },
                ANSWER,
            )
            .await
            .expect("the second process drops its acquisition");
        assert!(!finished, "a held lock was acquired");
    }
    // The clean-up of a dropped acquisition takes a round trip or two;
    // give it ample time to do harm before looking.
    tokio::time::sleep(TTL).await;
    let released: String = holder
        .ask_as(
            Command::Release {
                lock: "shared".into(),
            },
            ANSWER,
        )
        .await
        .expect("release");
    assert_eq!(
        released, "ok",
        "the holder (token {token}) lost its lock to another process's clean-up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_dropped_acquisition_never_releases_another_process_lock() {
    let server = RedisServer::start(&[]);
    let dir = ScratchDir::new("redis-claims");
    let nodes = nodes::redis_nodes(&dir, 2, &server.url(), "claims:", TTL).await;
    dropped_acquisition_keeps_the_other_process_lock(&nodes[0], &nodes[1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_a_dropped_acquisition_never_releases_another_process_lock() {
    let dir = ScratchDir::new("raft-claims");
    let nodes = nodes::raft_nodes(&dir, 3, TTL, false).await;
    dropped_acquisition_keeps_the_other_process_lock(&nodes[0], &nodes[1]).await;
}
