//! Faults on real three-node Raft clusters over loopback: a leader killed
//! under load, a lock holder's node killed, a partitioned minority, and a
//! follower that can only catch up from a snapshot.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dref::{current_fencing_token, Context, DRef, Error, ManualId};
use dref_backends::raft::RaftBackend;
use dref_tests::{eventually, wait_until, within};
use support::raft_cluster::{self, leader_of, port, start, ELECTION_TIMEOUT_MAX};

/// Short sessions, so that a dead node's leases expire quickly.
const SESSION_TTL: Duration = Duration::from_secs(2);

async fn contexts(nodes: &[RaftBackend]) -> Vec<Context> {
    raft_cluster::contexts(nodes, Some(SESSION_TTL)).await
}

/// Cuts every link between `nodes[alone]` and the rest, both ways.
fn isolate(nodes: &[RaftBackend], alone: usize) {
    let others: Vec<String> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != alone)
        .map(|(_, n)| n.address().to_owned())
        .collect();
    nodes[alone].faults().cut(others);
    for (i, node) in nodes.iter().enumerate() {
        if i != alone {
            node.faults().cut([nodes[alone].address().to_owned()]);
        }
    }
}

fn heal(nodes: &[RaftBackend]) {
    for node in nodes {
        node.faults().heal();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_loses_no_acknowledged_update() {
    let nodes = start(3, |c| c).await;
    let contexts = contexts(&nodes).await;
    let leader = leader_of(&nodes);
    let id = ManualId::<u64>::new("failover-counter");

    // Two writers on each surviving node; every acknowledged increment is
    // counted and timestamped.
    let acked = Arc::new(AtomicU64::new(0));
    let acks = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (i, ctx) in contexts.iter().enumerate() {
        if i == leader {
            continue;
        }
        let counter = ctx.make(id.clone(), 0).await.expect("make the counter");
        for _ in 0..2 {
            let (counter, acked, acks, stop) =
                (counter.clone(), acked.clone(), acks.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    counter
                        .update(|n| n + 1)
                        .await
                        .expect("an update through a surviving node failed");
                    acked.fetch_add(1, Ordering::Relaxed);
                    acks.lock().unwrap().push(Instant::now());
                }
            }));
        }
    }
    wait_until("50 updates before the kill", || {
        acked.load(Ordering::Relaxed) >= 50
    })
    .await;

    // An uncontended write started right at the kill (the counter's
    // writers contend, and a loser may retry for a while): it completes
    // once a new leader is elected and has committed it.
    let probe = contexts[(leader + 1) % 3]
        .make(ManualId::<u64>::new("failover-probe"), 0)
        .await
        .expect("make the probe");
    let killed_at = Instant::now();
    nodes[leader].kill().await;
    let probe_started = Instant::now();
    probe.set(1).await.expect("the first write after the kill");
    let resumed_after = probe_started.elapsed();
    eprintln!("writes resumed {resumed_after:?} after the leader was killed");

    wait_until("100 updates after the kill", || {
        acks.lock()
            .unwrap()
            .iter()
            .filter(|t| **t > killed_at)
            .count()
            >= 100
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        within("a writer to stop", writer)
            .await
            .expect("a writer task panicked");
    }

    // Two election timeouts, plus a second of slack for a loaded machine.
    let bound = ELECTION_TIMEOUT_MAX * 2 + Duration::from_secs(1);
    assert!(
        resumed_after < bound,
        "writes resumed {resumed_after:?} after the leader was killed (bound {bound:?})"
    );
    let survivor = &contexts[(leader + 2) % 3];
    let counter = survivor.make(id, 0).await.expect("make the counter");
    assert_eq!(
        counter.get().await.expect("read the counter"),
        acked.load(Ordering::Relaxed),
        "the counter must equal the number of acknowledged increments"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_of_a_killed_node_passes_to_a_waiter_with_a_higher_token() {
    let nodes = start(3, |c| c).await;
    let contexts = contexts(&nodes).await;
    // The holder sits on the leader: its death also moves the lease
    // deadlines to a new leader.
    let holder_node = leader_of(&nodes);
    let waiter_node = (holder_node + 1) % 3;

    let (entered, holder_token) = tokio::sync::oneshot::channel();
    let holder_ctx = contexts[holder_node].clone();
    let holder = tokio::spawn(async move {
        holder_ctx
            .lock("handover", async move {
                let _ = entered.send(current_fencing_token().expect("a token inside the lock"));
                std::future::pending::<()>().await
            })
            .await
    });
    let holder_token = within("the holder to enter", holder_token)
        .await
        .expect("the holder entered");

    let waiter_ctx = contexts[waiter_node].clone();
    let waiter = tokio::spawn(async move {
        waiter_ctx
            .lock("handover", async { current_fencing_token() })
            .await
    });

    nodes[holder_node].kill().await;

    let waiter_token = within("the waiter to take over the dead holder's lock", waiter)
        .await
        .expect("the waiter task panicked")
        .expect("the waiter acquires the lock")
        .expect("a token inside the lock");
    assert!(
        waiter_token > holder_token,
        "fencing tokens must increase across the handover: {holder_token:?} then {waiter_token:?}"
    );
    let holder_outcome = within("the dead holder's body to be cancelled", holder)
        .await
        .expect("the holder task panicked");
    assert!(
        matches!(holder_outcome, Err(Error::LockLost { .. })),
        "the holder on the killed node must get LockLost, got {holder_outcome:?}"
    );
}

/// A lock held through the Raft leader's node while that node is cut off
/// from the others (both ways): the holder is told `LockLost` before a
/// waiter on the majority side enters, never after. (An isolated openraft
/// leader keeps believing it leads; keep-alives it vouched for without a
/// majority once let two bodies run at once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_behind_a_partitioned_leader_loses_the_lock_before_a_waiter_enters() {
    let nodes = start(3, |c| c.request_timeout(Duration::from_secs(3))).await;
    let contexts = contexts(&nodes).await;
    let holder_node = leader_of(&nodes);
    let waiter_node = (holder_node + 1) % 3;

    let (entered, holder_token) = tokio::sync::oneshot::channel();
    let holder_ctx = contexts[holder_node].clone();
    let holder = tokio::spawn(async move {
        let outcome = holder_ctx
            .lock("partitioned", async move {
                let _ = entered.send(current_fencing_token().expect("a token inside the lock"));
                std::future::pending::<()>().await
            })
            .await;
        (outcome, Instant::now())
    });
    let holder_token = within("the holder to enter", holder_token)
        .await
        .expect("the holder entered");
    let waiter_ctx = contexts[waiter_node].clone();
    let waiter = tokio::spawn(async move {
        let token = waiter_ctx
            .lock("partitioned", async { current_fencing_token() })
            .await;
        (token, Instant::now())
    });

    isolate(&nodes, holder_node);
    let (waiter_token, entered_at) = within("the waiter to enter on the majority side", waiter)
        .await
        .expect("the waiter task panicked");
    let waiter_token = waiter_token.expect("the waiter acquires").expect("a token");
    assert!(
        waiter_token > holder_token,
        "{holder_token:?} then {waiter_token:?}"
    );
    let (holder_outcome, lost_at) = within("the isolated holder to be told", holder)
        .await
        .expect("the holder task panicked");
    assert!(
        matches!(holder_outcome, Err(Error::LockLost { .. })),
        "the isolated holder must get LockLost, got {holder_outcome:?}"
    );
    assert!(
        lost_at < entered_at,
        "two holders at once: the waiter entered {:?} before the isolated holder was told",
        lost_at - entered_at
    );
    heal(&nodes);
}

/// The documented failover bound of elections, measured where it is
/// longest: the winner's node is also the Raft leader, so its death costs
/// an election before the next leader starts the lease's TTL afresh.
/// Failover must come within one session TTL plus one election timeout
/// (plus a heartbeat, and slack for a loaded machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_failover_from_a_dead_raft_leader_is_within_ttl_plus_an_election_timeout() {
    let nodes = start(3, |c| c).await;
    let contexts = contexts(&nodes).await;
    let winner_node = leader_of(&nodes);
    let lead = contexts[winner_node].campaign("failover").await.unwrap();
    let candidate_ctx = contexts[(winner_node + 1) % 3].clone();
    let candidate = tokio::spawn(async move { candidate_ctx.campaign("failover").await });
    // The candidate is waiting before the leader dies.
    tokio::task::yield_now().await;
    assert!(!candidate.is_finished());
    let died = Instant::now();
    nodes[winner_node].kill().await;
    let next = within("the failover", candidate)
        .await
        .expect("the candidate task panicked")
        .expect("the candidate wins");
    let took = died.elapsed();
    assert!(next.token() > lead.token());
    let bound = SESSION_TTL + ELECTION_TIMEOUT_MAX + Duration::from_millis(50);
    eprintln!(
        "election failover after the death of the Raft leader's node: {took:?} (bound {bound:?})"
    );
    assert!(
        took < bound + Duration::from_secs(1),
        "failover took {took:?}, over the documented {bound:?} (plus 1 s of slack)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_cannot_write_or_read_and_converges_on_heal() {
    let nodes = start(3, |c| c.request_timeout(Duration::from_secs(3))).await;
    let contexts = contexts(&nodes).await;
    let alone = leader_of(&nodes);
    let id = ManualId::<u64>::new("partitioned");
    let minority = contexts[alone].make(id.clone(), 0).await.expect("make");
    let majority: Vec<DRef<u64>> = {
        let mut refs = Vec::new();
        for (i, ctx) in contexts.iter().enumerate() {
            if i != alone {
                refs.push(ctx.make(id.clone(), 0).await.expect("make"));
            }
        }
        refs
    };

    isolate(&nodes, alone);

    let write = minority.set(1).await;
    assert!(
        matches!(write, Err(Error::Unavailable { .. })),
        "a write on the isolated old leader must fail, got {write:?}"
    );
    let read = minority.get().await;
    assert!(
        matches!(read, Err(Error::Unavailable { .. })),
        "a linearizable read on the isolated old leader must fail, got {read:?}"
    );

    eventually("the majority to elect a leader and commit", || {
        majority[0].set(2)
    })
    .await;
    let seen = eventually("a linearizable read on the majority", || majority[1].get()).await;
    assert_eq!(seen, 2);

    heal(&nodes);
    let converged = eventually("the healed node to serve the majority's value", || {
        minority.get()
    })
    .await;
    assert_eq!(
        converged, 2,
        "the old leader's unacknowledged write must be gone"
    );
    wait_until("the healed node's local copy to converge", || {
        minority.peek() == Some(2)
    })
    .await;
    eventually("a write through the healed node", || minority.set(3)).await;
    let seen = eventually("the majority to see it", || majority[0].get()).await;
    assert_eq!(seen, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_behind_the_compacted_log_catches_up_by_snapshot() {
    // Snapshots every 20 entries, sent in 64 KiB chunks, so that the ~4 MB
    // state below crosses the wire in many chunks.
    let nodes = start(3, |c| {
        c.snapshot_after(20)
            .snapshot_transfer(64 * 1024, Duration::from_secs(30))
    })
    .await;
    let contexts = contexts(&nodes).await;
    let leader = leader_of(&nodes);
    let behind = (leader + 1) % 3;
    isolate(&nodes, behind);

    let blob = |i: usize| -> Vec<u8> { (0..100 * 1024).map(|b| (b * 7 + i) as u8).collect() };
    for i in 0..40 {
        let id = ManualId::<Vec<u8>>::new(format!("blob-{i}"));
        let r = eventually("make a blob", || {
            contexts[leader].make(id.clone(), Vec::new())
        })
        .await;
        eventually("write a blob", || r.set(blob(i))).await;
    }
    let counter_id = ManualId::<u64>::new("snapshot-counter");
    let counter = eventually("make the counter", || {
        contexts[leader].make(counter_id.clone(), 0)
    })
    .await;
    for _ in 0..60 {
        eventually("an increment", || counter.update(|n| n + 1)).await;
    }

    let lagging_at = nodes[behind].applied_index();
    wait_until(
        "the leader to compact its log past the lagging node",
        || nodes[leader].purged_index().is_some_and(|p| p > lagging_at),
    )
    .await;

    heal(&nodes);
    let target = nodes[leader].applied_index();
    wait_until("the lagging node to catch up", || {
        nodes[behind].applied_index() >= target
    })
    .await;
    assert!(
        nodes[behind]
            .snapshot_index()
            .is_some_and(|s| s > lagging_at),
        "the lagging node must hold a snapshot past where it stopped ({lagging_at}), has {:?}",
        nodes[behind].snapshot_index()
    );

    let on_behind = &contexts[behind];
    let counter = eventually("make the counter on the caught-up node", || {
        on_behind.make(counter_id.clone(), 0)
    })
    .await;
    assert_eq!(counter.peek(), Some(60));
    for i in [0, 17, 39] {
        let id = ManualId::<Vec<u8>>::new(format!("blob-{i}"));
        let r = eventually("make a blob on the caught-up node", || {
            on_behind.make(id.clone(), Vec::new())
        })
        .await;
        assert!(
            r.peek() == Some(blob(i)),
            "blob {i} differs on the caught-up node"
        );
    }
}

/// A gRPC codec that sends raw bytes, to speak garbage to a node.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_speaking_garbage_gets_an_error_and_the_cluster_carries_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let nodes = start(3, |c| c).await;
    let target = nodes[leader_of(&nodes)].address().to_owned();

    // Not even HTTP/2: the connection is dropped.
    let mut raw = tokio::net::TcpStream::connect(&target)
        .await
        .expect("connect to the node");
    raw.write_all(b"\x00\xffthis is not a gRPC peer\r\n\r\n")
        .await
        .expect("send garbage");
    let mut sink = Vec::new();
    let _ = within(
        "the node to drop the connection",
        raw.read_to_end(&mut sink),
    )
    .await;

    // Well-formed gRPC carrying malformed messages: a typed status, no panic.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{target}"))
        .expect("an endpoint")
        .connect()
        .await
        .expect("a gRPC connection");
    for method in [
        "/dref.Raft/Append",
        "/dref.Raft/Vote",
        "/dref.Raft/Snapshot",
        "/dref.Raft/Client",
    ] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.expect("the channel is ready");
        // A caller that names no cluster is refused before anything else.
        let answer = grpc
            .unary(
                tonic::Request::new(vec![0xff; 64]),
                tonic::codegen::http::uri::PathAndQuery::from_static(method),
                RawCodec,
            )
            .await;
        let status = answer.expect_err("a caller of no cluster must be refused");
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{method}: {status:?}"
        );
        let mut request = tonic::Request::new(vec![0xff; 64]);
        request.metadata_mut().insert(
            "dref-cluster",
            tonic::metadata::MetadataValue::from_static("dref"),
        );
        grpc.ready().await.expect("the channel is ready");
        let answer = grpc
            .unary(
                request,
                tonic::codegen::http::uri::PathAndQuery::from_static(method),
                RawCodec,
            )
            .await;
        let status = answer.expect_err("garbage must be refused");
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{method}: {status:?}"
        );
        assert!(
            status.message().contains("malformed dref.Raft message"),
            "{method}: {status:?}"
        );
    }

    let ctx = contexts(&nodes).await;
    let r = ctx[0]
        .make(ManualId::<u64>::new("after-garbage"), 0)
        .await
        .expect("make");
    r.update(|n| n + 1)
        .await
        .expect("the cluster still commits");
    assert_eq!(r.get().await.expect("read"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_kept_alive_survives_a_change_of_leader() {
    // Deadlines live on the leader only; the next leader starts each one
    // afresh, so a holder that keeps its session alive through the
    // election keeps its lock.
    let ttl = Duration::from_secs(4);
    let nodes = start(3, |c| c).await;
    let old_leader = leader_of(&nodes);
    let holder_node = (old_leader + 1) % 3;
    let ctx = raft_cluster::context(&nodes[holder_node], Some(ttl)).await;

    let (entered, token) = tokio::sync::oneshot::channel();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn(async move {
        ctx.lock("steady", async move {
            let _ = entered.send(current_fencing_token());
            let _ = released.await;
            current_fencing_token()
        })
        .await
    });
    let token = within("the holder to enter", token).await.expect("entered");

    nodes[old_leader].kill().await;
    let survivors = [
        nodes[holder_node].clone(),
        nodes[(old_leader + 2) % 3].clone(),
    ];
    let old_address = nodes[old_leader].address().to_owned();
    wait_until("a new leader", || {
        survivors
            .iter()
            .all(|n| n.leader().is_some_and(|l| l != old_address))
    })
    .await;
    // Hold on for longer than a TTL under the new leader: the lease must
    // neither expire nor be cut short.
    tokio::time::sleep(ttl + ttl / 2).await;
    // The cluster still counts the lock as held, not only the holder.
    let rival = raft_cluster::context(&survivors[1], Some(ttl)).await;
    let busy = rival.try_lock("steady", async {}).await;
    assert!(
        matches!(busy, Err(Error::LockBusy { .. })),
        "another node must find the lock held, got {busy:?}"
    );
    assert!(
        !holder.is_finished(),
        "the holder lost its lock: {:?}",
        holder.await
    );
    let _ = release.send(());
    let outcome = within("the holder to finish", holder)
        .await
        .expect("the holder task panicked");
    assert_eq!(
        outcome.expect("the lock was held throughout"),
        token,
        "the same token before and after the change of leader"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_large_writes_trigger_a_snapshot_by_size() {
    let nodes = start(3, |c| {
        c.snapshot_after(1_000_000).snapshot_after_bytes(256 * 1024)
    })
    .await;
    let contexts = contexts(&nodes).await;
    let blob = ManualId::<Vec<u8>>::new("large");
    let r = contexts[0].make(blob, Vec::new()).await.expect("make");
    assert!(nodes.iter().all(|n| n.snapshot_index().is_none()));
    for i in 0..4u8 {
        r.set(vec![i; 100 * 1024]).await.expect("a large write");
    }
    // Every node applies the same writes and snapshots on its own.
    wait_until("every node to snapshot by size", || {
        nodes.iter().all(|n| n.snapshot_index().is_some())
    })
    .await;
}

/// Established TCP connections whose local port is `port` (Linux
/// `/proc/net/tcp*`): the connections a node has accepted.
fn accepted_connections(port: u16) -> usize {
    let port = format!("{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| table.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            // local_address is "IP:PORT" in hex; state 01 is ESTABLISHED.
            columns.len() > 3
                && columns[1].rsplit(':').next() == Some(port.as_str())
                && columns[3] == "01"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_reuse_one_connection_each() {
    let nodes = start(3, |c| c).await;
    let contexts = contexts(&nodes).await;
    let leader = leader_of(&nodes);
    let port = port(&nodes[leader]);
    let mut refs = Vec::new();
    for (i, ctx) in contexts.iter().enumerate() {
        if i != leader {
            refs.push(
                ctx.make(ManualId::<u64>::new(format!("reuse-{i}")), 0)
                    .await
                    .expect("make"),
            );
        }
    }
    let before = accepted_connections(port);
    // Forwarded writes, replication, heartbeats: hundreds of RPCs.
    for _ in 0..200 {
        for r in &refs {
            r.update(|n| n + 1).await.expect("a forwarded write");
        }
    }
    let after = accepted_connections(port);
    // Each follower holds one channel to the leader (a reconnect may add
    // one); a connection per RPC would show hundreds.
    assert!(
        (1..=4).contains(&after) && after <= before + 2,
        "connections accepted by the leader: {before} before, {after} after 400 forwarded writes"
    );
}

/// A write whose revision condition this cluster has already moved past
/// costs no log entry; the record it is answered with is as current as a
/// linearizable read, even on a node that lags behind: it waits for the
/// commits it is missing (or fails as unavailable), never answering with
/// its own older copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_must_fail_takes_no_log_entry_and_answers_fresh() {
    use bytes::Bytes;
    use dref::engine::{Backend, Condition, FieldName, Key, Op, Write, WriteOutcome};

    let nodes = start(3, |c| c.request_timeout(Duration::from_secs(2))).await;
    let leader = leader_of(&nodes);
    let follower = (leader + 1) % 3;
    let key = Key::new("doomed");
    let put = |value: &'static [u8]| {
        Write::new(
            key.clone(),
            Op::Put(vec![(FieldName::from("value"), Bytes::from_static(value))]),
        )
    };
    let committed = |outcome: WriteOutcome| match outcome {
        WriteOutcome::Committed { revision, .. } => revision,
        other => panic!("not committed: {other:?}"),
    };
    let through = &nodes[follower];
    let first = committed(through.write(put(b"1")).await.expect("a write"));
    let second = committed(through.write(put(b"2")).await.expect("a write"));
    let target = nodes[leader].applied_index();
    wait_until("every node to apply the writes", || {
        nodes.iter().all(|n| n.applied_index() >= target)
    })
    .await;

    let applied: Vec<u64> = nodes.iter().map(RaftBackend::applied_index).collect();
    let stale = put(b"3").when(Condition::ModRevision(first));
    match through
        .write(stale.clone())
        .await
        .expect("a rejected write")
    {
        WriteOutcome::Rejected { current: Some(r) } => assert_eq!(r.mod_revision, second),
        other => panic!("a stale condition was not rejected: {other:?}"),
    }
    let after: Vec<u64> = nodes.iter().map(RaftBackend::applied_index).collect();
    assert_eq!(after, applied, "a write that must fail took a log entry");

    // The leader stops sending to the follower; a newer write commits
    // through the other two.
    nodes[leader].faults().cut([through.address().to_owned()]);
    let fourth = committed(nodes[leader].write(put(b"4")).await.expect("a write"));
    match through.write(stale.clone()).await {
        Ok(WriteOutcome::Rejected { current: Some(r) }) if r.mod_revision < fourth => {
            panic!("a lagging node answered with its own older record (revision {}, the latest is {fourth})", r.mod_revision)
        }
        Ok(WriteOutcome::Rejected { current: Some(r) }) => assert_eq!(r.mod_revision, fourth),
        Ok(other) => panic!("a stale condition was not rejected: {other:?}"),
        Err(e) => assert!(e.is_transient(), "{e}"),
    }
    heal(&nodes);
    let answer = eventually("the healed follower to answer", || {
        through.write(stale.clone())
    })
    .await;
    match answer {
        WriteOutcome::Rejected { current: Some(r) } => assert_eq!(r.mod_revision, fourth),
        other => panic!("a stale condition was not rejected: {other:?}"),
    }
}

/// A stopped node has closed its listening socket by the time `kill` (or
/// `shutdown`) returns, so a restart at the same address can bind it at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_frees_its_address_before_kill_returns() {
    for _ in 0..10 {
        let nodes = start(1, |c| c).await;
        let port = port(&nodes[0]);
        nodes[0].kill().await;
        let rebound = std::net::TcpListener::bind(("127.0.0.1", port));
        assert!(rebound.is_ok(), "port {port} still taken: {rebound:?}");
    }
}
