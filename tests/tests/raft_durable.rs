//! The Raft backend with data directories, in this process: restarts keep
//! a node's identity and membership, a whole cluster survives a full
//! restart with every acknowledged write, leases restart their TTL, and a
//! data directory of another cluster, or a damaged one, is refused.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use dref::{DRef, Error, ManualId};
use dref_backends::raft::{RaftBackend, RaftConfig};
use dref_tests::scratch::ScratchDir;
use dref_tests::{eventually, within};
use futures_util::future::join_all;
use support::raft_cluster::{test_config, wait_for_voters};

/// A fresh directory holding one data directory per node (kept if the
/// test fails).
fn data_root(test: &str) -> ScratchDir {
    ScratchDir::new(&format!("durable-{test}"))
}

/// Node `i`'s config: its port, its data directory under `root`.
fn config(root: &Path, i: usize, port: u16, addrs: &[String]) -> RaftConfig {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the node's port");
    test_config(listener, addrs).data_dir(root.join(format!("n{i}")))
}

/// Starts every node at `ports` at once with its data directory.
async fn start_all(root: &Path, ports: &[u16]) -> Vec<RaftBackend> {
    start_all_with(root, ports, |config| config).await
}

/// [`start_all`] with each node's config changed by `tune`.
async fn start_all_with(
    root: &Path,
    ports: &[u16],
    tune: impl Fn(RaftConfig) -> RaftConfig,
) -> Vec<RaftBackend> {
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let starts = ports
        .iter()
        .enumerate()
        .map(|(i, port)| tune(config(root, i, *port, &addrs)).connect());
    let nodes: Vec<RaftBackend> = join_all(starts)
        .await
        .into_iter()
        .map(|r| r.expect("start a durable raft node"))
        .collect();
    wait_for_voters(&nodes, ports.len()).await;
    nodes
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("an address").port())
        .collect()
}

/// The index of the node that leads, once one does.
async fn leader_of(nodes: &[RaftBackend]) -> usize {
    within("a leader", async {
        loop {
            if let Some(i) = nodes.iter().position(RaftBackend::is_leader) {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// The counter `key` through a new context on `node`.
async fn counter_on(node: &RaftBackend, key: &str) -> DRef<u64> {
    let ctx = node.context_builder().connect().await.unwrap();
    ctx.make(ManualId::<u64>::new(key), 0).await.unwrap()
}

fn ids(nodes: &[RaftBackend]) -> Vec<u64> {
    let mut ids: Vec<u64> = nodes.iter().map(RaftBackend::node_id).collect();
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_restarts_with_every_acknowledged_write_and_the_same_members() {
    let root = data_root("full-restart");
    let ports = free_ports(3);
    let nodes = start_all(&root, &ports).await;
    let members = ids(&nodes);
    let ctx = nodes[0].context_builder().connect().await.unwrap();
    let counter = ctx.make(ManualId::<u64>::new("counter"), 0).await.unwrap();
    for _ in 0..50 {
        counter.update(|n| n + 1).await.unwrap();
    }
    let text = ctx
        .make(ManualId::<String>::new("text"), String::new())
        .await
        .unwrap();
    text.set("kept".into()).await.unwrap();
    let before = counter.get().await.unwrap();
    // A lock held across the restart must not be immortal.
    let held = ctx.acquire("across").await.unwrap();
    std::mem::forget(held);
    for node in &nodes {
        node.kill().await;
    }
    drop((counter, text, ctx, nodes));

    let nodes = start_all(&root, &ports).await;
    assert_eq!(ids(&nodes), members, "the same members came back");
    let ctx = nodes[1].context_builder().connect().await.unwrap();
    let counter = ctx.make(ManualId::<u64>::new("counter"), 0).await.unwrap();
    assert_eq!(counter.get().await.unwrap(), before);
    assert_eq!(before, 50);
    let text = ctx
        .make(ManualId::<String>::new("text"), String::new())
        .await
        .unwrap();
    assert_eq!(text.get().await.unwrap(), "kept");
    // The cluster accepts writes, and a change stream sees them.
    let mut changes = counter.changes();
    counter.update(|n| n + 1).await.unwrap();
    let change = within(
        "a change after the restart",
        futures_util::StreamExt::next(&mut changes),
    )
    .await
    .expect("a change")
    .expect("no error");
    assert!(change.revision > 0);
    // The lock of the dead session expires within its TTL (plus an
    // election), counted afresh by the new leader.
    let ttl = ctx.session_ttl();
    let guard = tokio::time::timeout(ttl * 3 + Duration::from_secs(2), ctx.acquire("across"))
        .await
        .expect("a lock held when the cluster went down is free after a TTL")
        .unwrap();
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_identity_and_catches_up_from_its_log() {
    let root = data_root("rolling");
    let ports = free_ports(3);
    let mut nodes = start_all(&root, &ports).await;
    let members = ids(&nodes);
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let ctx = nodes[0].context_builder().connect().await.unwrap();
    let counter = ctx.make(ManualId::<u64>::new("rolling"), 0).await.unwrap();
    let mut acknowledged = 0;
    // Each node in turn: killed, then restarted with its directory while
    // the others take writes.
    for i in [2, 1, 0] {
        let id = nodes[i].node_id();
        nodes[i].kill().await;
        let r = counter_on(&nodes[(i + 1) % 3], "rolling").await;
        for _ in 0..20 {
            eventually("an update while a node is down", || r.update(|n| n + 1)).await;
            acknowledged += 1;
        }
        let node = config(&root, i, ports[i], &addrs)
            .connect()
            .await
            .expect("restart");
        assert_eq!(node.node_id(), id, "a restarted node keeps its id");
        nodes[i] = node;
        wait_for_voters(&nodes, 3).await;
        assert_eq!(ids(&nodes), members, "no member added or lost");
        for node in &nodes {
            let mut voters = node.voter_ids();
            voters.sort_unstable();
            assert_eq!(voters, members);
        }
    }
    drop((counter, ctx));
    let reader = nodes[0].context_builder().connect().await.unwrap();
    let r = reader
        .make(ManualId::<u64>::new("rolling"), 0)
        .await
        .unwrap();
    assert_eq!(eventually("the final read", || r.get()).await, acknowledged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_cluster_is_refused() {
    let root = data_root("foreign");
    // Made by a node of cluster "orders".
    let port = free_ports(1)[0];
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let addrs = vec![format!("127.0.0.1:{port}")];
    let orders = test_config(listener, &addrs)
        .cluster_name("orders")
        .data_dir(root.join("n0"))
        .connect()
        .await
        .unwrap();
    orders.kill().await;
    drop(orders);
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let err = test_config(listener, &addrs)
        .cluster_name("payments")
        .data_dir(root.join("n0"))
        .connect()
        .await
        .unwrap_err();
    match &err {
        Error::Config(message) => {
            assert!(
                message.contains("orders") && message.contains("payments"),
                "{err}"
            )
        }
        other => panic!("expected a configuration error, got {other}"),
    }

    // Two clusters of one name: the first's members are stopped, a second
    // cluster starts at two of their addresses, and one of the first comes
    // back at the third. Its log points it at the second's nodes, which
    // refuse it (another cluster id): it says so, and changes nothing.
    let ports = free_ports(3);
    let first = start_all(&root.join("first"), &ports).await;
    for node in &first {
        node.kill().await;
    }
    drop(first);
    let second = start_all(&root.join("second"), &ports[..2]).await;
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let err = config(&root.join("first"), 2, ports[2], &addrs)
        .join_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect_err("a node of another cluster finds none to be part of");
    assert!(err.to_string().contains("another cluster"), "{err}");
    for node in &second {
        assert_eq!(
            node.voters().len(),
            2,
            "the other cluster took in a foreign node"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_log_is_refused_and_an_emptied_directory_rejoins_with_everything() {
    let root = data_root("damaged");
    let ports = free_ports(3);
    let mut nodes = start_all(&root, &ports).await;
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let ctx = nodes[0].context_builder().connect().await.unwrap();
    let counter = ctx.make(ManualId::<u64>::new("damaged"), 0).await.unwrap();
    for _ in 0..30 {
        counter.update(|n| n + 1).await.unwrap();
    }
    let victim = 2;
    nodes[victim].kill().await;
    // Flip a byte in the middle of the victim's log.
    let log_dir = root.join(format!("n{victim}")).join("log");
    let chunk = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a log chunk");
    let mut bytes = std::fs::read(&chunk).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&chunk, &bytes).unwrap();
    let err = config(&root, victim, ports[victim], &addrs)
        .connect()
        .await
        .expect_err("a damaged log is refused");
    assert!(
        matches!(&err, Error::Config(m) if m.contains("log")),
        "{err}"
    );

    // Emptied, the directory makes a new member, which is sent the state.
    std::fs::remove_dir_all(root.join(format!("n{victim}"))).unwrap();
    nodes[victim] = config(&root, victim, ports[victim], &addrs)
        .connect()
        .await
        .expect("an emptied directory rejoins");
    wait_for_voters(&nodes, 3).await;
    let ctx = nodes[victim].context_builder().connect().await.unwrap();
    let r = ctx.make(ManualId::<u64>::new("damaged"), 0).await.unwrap();
    assert_eq!(r.get().await.unwrap(), 30);
}

/// A leader replicates its own entries while its disk syncs, so a
/// majority can count a commit while the leader's copy is only in memory.
/// Nothing of such a write may be seen until that copy is on disk: not the
/// caller's answer, and no follower may apply it (the leader could still
/// lose it in a crash, and Raft could then replace it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_seen_only_once_the_leader_has_it_on_disk() {
    let root = data_root("leader-disk");
    let ports = free_ports(3);
    let nodes = start_all(&root, &ports).await;
    let leader = leader_of(&nodes).await;
    let ctx = nodes[leader].context_builder().connect().await.unwrap();
    let r = ctx.make(ManualId::<u64>::new("held"), 0).await.unwrap();
    r.set(1).await.unwrap();
    // Every node has applied everything so far.
    let settled = nodes[leader].applied_index();
    within("every node applies the first writes", async {
        while nodes.iter().any(|n| n.applied_index() < settled) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let applied: Vec<u64> = nodes.iter().map(RaftBackend::applied_index).collect();

    nodes[leader].stall_log_syncs(true);
    let write = tokio::spawn({
        let r = r.clone();
        async move { r.set(2).await }
    });
    // Time is what this is about: for a second (many heartbeats, each
    // telling the followers the leader's commit index), nothing is seen.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !write.is_finished(),
        "the write was answered while the leader's copy was not on disk"
    );
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(
            node.applied_index(),
            applied[i],
            "node {i} applied an entry the leader does not have on disk"
        );
    }

    nodes[leader].stall_log_syncs(false);
    within("the write, once the leader's disk syncs", write)
        .await
        .expect("the write task")
        .expect("the write succeeds");
    let follower = (leader + 1) % 3;
    let reader = nodes[follower].context_builder().connect().await.unwrap();
    let seen = reader.make(ManualId::<u64>::new("held"), 0).await.unwrap();
    assert_eq!(
        eventually("a read through a follower", || seen.get()).await,
        2
    );
}

/// Followers learn a commit that waited for the leader's disk as soon as
/// the disk has it, not at the next heartbeat: a write through a follower
/// is answered once its follower has applied it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_held_back_for_the_leader_s_disk_reaches_followers_without_a_heartbeat() {
    // Without its own heartbeat, a held-back commit reaches a follower
    // with the leader's next message: a heartbeat, or the read round of a
    // session keep-alive (every third of the TTL). Both are made rare, so
    // that the bound below leaves a loaded machine seconds, while a write
    // that waited for the next message would break it in about 0.4 of
    // the eight tries (checked: without the heartbeat of its own, the
    // test fails).
    const HEARTBEAT: Duration = Duration::from_secs(10);
    const SESSION_TTL: Duration = Duration::from_secs(60);
    const BOUND: Duration = Duration::from_secs(3);
    let root = data_root("no-heartbeat-wait");
    let ports = free_ports(3);
    let nodes = start_all_with(&root, &ports, |config| {
        config
            .heartbeat(HEARTBEAT)
            .election_timeout(Duration::from_secs(25), Duration::from_secs(30))
    })
    .await;
    let leader = leader_of(&nodes).await;
    let ctx = nodes[(leader + 1) % 3]
        .context_builder()
        .session_ttl(SESSION_TTL)
        .connect()
        .await
        .unwrap();
    let r = ctx
        .make(ManualId::<u64>::new("forwarded"), 0)
        .await
        .unwrap();
    r.set(1).await.unwrap();
    for n in 2..=9u64 {
        // The followers acknowledge the write while the leader's disk is
        // held back: the commit is counted, and held back from them.
        let before = nodes[leader].last_log_index().unwrap_or(0);
        nodes[leader].stall_log_syncs(true);
        let write = tokio::spawn({
            let r = r.clone();
            async move { r.set(n).await }
        });
        assert!(
            nodes[leader]
                .wait_followers_matched_beyond(before, Duration::from_secs(30))
                .await,
            "the followers did not acknowledge write {n} while the leader's disk was held back"
        );
        nodes[leader].stall_log_syncs(false);
        // Time is what this is about (see above).
        let started = std::time::Instant::now();
        within("the write", write)
            .await
            .expect("the write task")
            .expect("the write succeeds");
        let took = started.elapsed();
        assert!(
            took < BOUND,
            "write {n} was answered {took:?} after the leader's disk synced (heartbeat {HEARTBEAT:?})"
        );
    }
}
