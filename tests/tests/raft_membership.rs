//! Membership of real Raft clusters over loopback: bootstrap of replicas
//! started together, replicas joining later (voters up to the maximum,
//! learners beyond), a replica restarted with an empty memory, and
//! graceful departure.

mod support;

use std::net::TcpListener;
use std::time::Duration;

use dref::{Context, ManualId};
use dref_backends::raft::RaftBackend;
use dref_tests::{wait_until, within};
use futures_util::StreamExt;
use support::raft_cluster::{
    self, follower_of, leader_of, listeners, port, start, test_config, wait_for_voters,
};

async fn context(node: &RaftBackend) -> Context {
    raft_cluster::context(node, None).await
}

/// Starts one more node that knows the given peers.
async fn join(
    peers: &[String],
    tune: impl Fn(dref_backends::raft::RaftConfig) -> dref_backends::raft::RaftConfig,
) -> RaftBackend {
    let listener = listeners(1).0.remove(0);
    tune(test_config(listener, peers))
        .connect()
        .await
        .expect("a late node joins")
}

fn addresses(nodes: &[RaftBackend]) -> Vec<String> {
    nodes.iter().map(|n| n.address().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_replicas_started_together_form_one_cluster() {
    let nodes = start(5, |c| c).await;
    let leaders: Vec<Option<String>> = nodes.iter().map(RaftBackend::leader).collect();
    assert!(leaders.iter().all(|l| l.is_some() && *l == leaders[0]));
    assert_eq!(nodes.iter().filter(|n| n.is_leader()).count(), 1);
    let mut voters = nodes[0].voters();
    voters.sort();
    let mut all = addresses(&nodes);
    all.sort();
    assert_eq!(voters, all, "every replica is a voter of the one cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_replicas_join_as_voters_up_to_the_maximum_then_as_learners() {
    let max_voters = 3;
    let mut nodes = start(2, |c| c.max_voters(max_voters)).await;
    let peers = addresses(&nodes);
    nodes.push(join(&peers, |c| c.max_voters(max_voters)).await);
    wait_for_voters(&nodes, 3).await;
    let learner = join(&peers, |c| c.max_voters(max_voters)).await;
    assert_eq!(
        learner.voters().len(),
        max_voters,
        "a fourth replica stays a learner when the maximum is three voters"
    );
    assert!(!learner.voters().contains(&learner.address().to_owned()));

    // The learner serves watches from its own state and forwards writes.
    let on_learner = context(&learner).await;
    let on_voter = context(&nodes[0]).await;
    let id = ManualId::<u64>::new("learner-visible");
    let learner_ref = on_learner
        .make(id.clone(), 0)
        .await
        .expect("make on the learner");
    let mut changes = learner_ref.values();
    let voter_ref = on_voter.make(id, 0).await.expect("make on a voter");
    voter_ref.set(7).await.expect("a write on a voter");
    let seen = within("the learner's watch to see the voter's write", async {
        loop {
            match changes.next().await {
                Some(Ok(Some(7))) => return 7,
                Some(Ok(_)) => continue,
                other => panic!("the learner's value stream ended or failed: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(seen, 7);
    learner_ref
        .set(8)
        .await
        .expect("a write through the learner");
    assert_eq!(voter_ref.get().await.expect("read on a voter"), 8);
    assert_eq!(learner_ref.get().await.expect("read on the learner"), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_restarted_with_empty_memory_rejoins_under_a_fresh_identity() {
    let nodes = start(3, |c| c).await;
    let restarted = follower_of(&nodes);
    let addr = nodes[restarted].address().to_owned();
    let old_id = nodes[restarted].node_id();
    let ctx = context(&nodes[(restarted + 1) % 3]).await;
    let counter = ctx
        .make(ManualId::<u64>::new("survives-restart"), 0)
        .await
        .expect("make");
    counter.set(41).await.expect("write before the restart");

    nodes[restarted].kill().await;
    // The same address, an empty memory: a new process in the same place.
    let listener = within("the old port to be free again", async {
        loop {
            match TcpListener::bind(&addr) {
                Ok(listener) => return listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    let fresh = test_config(listener, &addresses(&nodes))
        .connect()
        .await
        .expect("the restarted replica rejoins");
    assert_ne!(fresh.node_id(), old_id, "a restart gets a fresh identity");

    let survivors: Vec<RaftBackend> = (0..3)
        .filter(|i| *i != restarted)
        .map(|i| nodes[i].clone())
        .chain([fresh.clone()])
        .collect();
    wait_for_voters(&survivors, 3).await;
    // The address is the same before and after: only the ids tell the
    // stale member from the fresh one.
    wait_until("the stale member to be replaced by the fresh one", || {
        survivors.iter().all(|n| {
            let ids = n.voter_ids();
            ids.len() == 3 && ids.contains(&fresh.node_id()) && !ids.contains(&old_id)
        })
    })
    .await;

    counter
        .update(|n| n + 1)
        .await
        .expect("the cluster keeps writing");
    // No node's Raft core died on the way (openraft panics if a follower's
    // log goes backwards, which a restarted replica answering for its
    // predecessor would look like): each one still commits writes.
    for node in &survivors {
        let ctx = context(node).await;
        let probe = ctx
            .make(ManualId::<u64>::new(format!("alive-{}", node.node_id())), 0)
            .await
            .expect("make through every node");
        probe.set(1).await.expect("a write through every node");
    }
    let on_fresh = context(&fresh).await;
    let seen = on_fresh
        .make(ManualId::<u64>::new("survives-restart"), 0)
        .await
        .expect("make on the restarted replica");
    assert_eq!(seen.get().await.expect("read on the restarted replica"), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_replicas_are_removed_and_the_rest_keep_working() {
    let nodes = start(3, |c| c).await;
    let leader = leader_of(&nodes);
    let follower = (leader + 1) % 3;
    let last = (leader + 2) % 3;
    let ctx = context(&nodes[last]).await;
    let counter = ctx
        .make(ManualId::<u64>::new("after-leave"), 0)
        .await
        .expect("make");

    nodes[follower].shutdown().await;
    wait_until("the follower to leave the membership", || {
        nodes[last].voters().len() == 2
    })
    .await;
    counter.set(1).await.expect("a write after a follower left");

    // The leader leaves too: the last node goes on alone.
    nodes[leader].shutdown().await;
    wait_until("the leader to leave the membership", || {
        nodes[last].voters() == vec![nodes[last].address().to_owned()]
    })
    .await;
    counter
        .update(|n| n + 1)
        .await
        .expect("a write on the last node");
    assert_eq!(counter.get().await.expect("read"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_leader_hands_over_to_an_up_to_date_follower() {
    // Long election timeouts keep the two outcomes seconds apart: with the
    // hand-over, a new leader once the followers' leader lease (max / 2 =
    // 3 s) has run out; without it, not before the lease plus a random
    // election timeout ((min + max) / 2 = 4.5 s at the earliest).
    let (min, max) = (Duration::from_secs(3), Duration::from_secs(6));
    let nodes = start(3, |c| c.election_timeout(min, max)).await;
    let leader = leader_of(&nodes);
    let rest: Vec<RaftBackend> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| nodes[i].clone())
        .collect();
    let ctx = context(&rest[0]).await;
    let counter = ctx
        .make(ManualId::<u64>::new("hand-over"), 0)
        .await
        .expect("make");
    counter
        .set(1)
        .await
        .expect("a write before the leader leaves");

    nodes[leader].shutdown().await;
    let left_at = std::time::Instant::now();
    wait_for_voters(&rest, 2).await;
    let elected_after = left_at.elapsed();
    let natural = (min + max) / 2;
    assert!(
        elected_after < natural,
        "the survivors took {elected_after:?} to elect a leader, as long as without a \
         hand-over (at least {natural:?})"
    );
    counter
        .update(|n| n + 1)
        .await
        .expect("a write after the hand-over");
    assert_eq!(counter.get().await.expect("read"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_of_a_node_leaves_the_cluster() {
    let mut nodes = start(3, |c| c).await;
    let follower = follower_of(&nodes);
    let dropped = nodes.remove(follower);
    let ctx = context(&dropped).await;
    let r = ctx
        .make(ManualId::<u64>::new("before-drop"), 0)
        .await
        .expect("make");
    r.set(1).await.expect("write");
    drop((r, ctx, dropped));
    wait_until("the dropped node to leave the membership", || {
        nodes.iter().all(|n| n.voters().len() == 2)
    })
    .await;
    let ctx = context(&nodes[0]).await;
    let r = ctx
        .make(ManualId::<u64>::new("before-drop"), 0)
        .await
        .expect("make");
    r.update(|n| n + 1)
        .await
        .expect("the two left keep writing");
    assert_eq!(r.get().await.expect("read"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_finds_the_cluster_through_a_dns_name() {
    let nodes = start(1, |c| c).await;
    let port = port(&nodes[0]);
    // No static peers: only a name to resolve, and the port peers use.
    let listener = listeners(1).0.remove(0);
    let late = test_config(listener, &[])
        .services(["localhost"])
        .service_port(port)
        .connect()
        .await
        .expect("the replica joins through DNS discovery");
    let all = [nodes[0].clone(), late];
    wait_for_voters(&all, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_leaving_a_two_voter_cluster_leaves_a_working_leader() {
    // Removing one of two voters needs the leaving node's own
    // acknowledgement: it keeps answering replication until it is out.
    let nodes = start(2, |c| c).await;
    let leader = leader_of(&nodes);
    let follower = 1 - leader;
    nodes[follower].shutdown().await;
    wait_until("the leader to be the only voter", || {
        nodes[leader].voters() == vec![nodes[leader].address().to_owned()]
    })
    .await;
    let ctx = context(&nodes[leader]).await;
    let r = ctx
        .make(ManualId::<u64>::new("alone"), 0)
        .await
        .expect("make on the last node");
    r.update(|n| n + 1).await.expect("the last node writes");
    assert_eq!(r.get().await.expect("read"), 1);
}
