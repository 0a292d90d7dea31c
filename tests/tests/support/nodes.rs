//! Groups of `dref-test-node` processes on one store, for process tests:
//! Redis clients of one server, or the members of a Raft cluster.

use std::time::Duration;

use dref_tests::nemesis::{Command, NodeArgs, NodeProcess, Store};

/// How long a node may take to start (a Raft member joining through a
/// loaded machine's cluster included).
pub const START: Duration = Duration::from_secs(90);
/// How long a node may take to answer a request.
pub const ANSWER: Duration = Duration::from_secs(60);

/// The node executable, built by cargo for this package's tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_dref-test-node")
}

fn args(dir: &std::path::Path, name: &str, ttl: Duration, store: Store) -> NodeArgs {
    NodeArgs {
        name: name.to_owned(),
        history: dir.join(format!("{name}.jsonl")).display().to_string(),
        session_ttl_ms: ttl.as_millis() as u64,
        store,
    }
}

/// Starts `n` nodes on the Redis server at `url`, under `prefix`.
pub async fn redis_nodes(
    dir: &std::path::Path,
    n: usize,
    url: &str,
    prefix: &str,
    ttl: Duration,
) -> Vec<NodeProcess> {
    let mut nodes = Vec::new();
    for i in 1..=n {
        let store = Store::Redis {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
        };
        let mut node = NodeProcess::spawn(binary(), args(dir, &format!("n{i}"), ttl, store))
            .expect("start a node process");
        node.ready(START).await.expect("the node starts");
        nodes.push(node);
    }
    nodes
}

/// The Raft timing of process tests: quick elections that a loaded
/// two-core machine does not flap between.
pub fn raft_store(peers: Vec<String>, data_dir: Option<String>) -> Store {
    Store::Raft {
        listen: "127.0.0.1:0".into(),
        peers,
        heartbeat_ms: 50,
        election_ms: (500, 1000),
        request_timeout_ms: 5_000,
        data_dir,
    }
}

/// Where node `name` of the run in `dir` keeps its data, when durable.
pub fn data_dir(dir: &std::path::Path, name: &str, durable: bool) -> Option<String> {
    durable.then(|| dir.join("data").join(name).display().to_string())
}

/// Starts a Raft cluster of `n` node processes: the first forms it, the
/// others join (each binds a port of its own choosing, so no two runs can
/// draw the same port).
pub async fn raft_nodes(
    dir: &std::path::Path,
    n: usize,
    ttl: Duration,
    durable: bool,
) -> Vec<NodeProcess> {
    let mut nodes: Vec<NodeProcess> = Vec::new();
    let mut addresses = Vec::new();
    for i in 1..=n {
        let name = format!("n{i}");
        let store = raft_store(addresses.clone(), data_dir(dir, &name, durable));
        let mut node = NodeProcess::spawn(binary(), args(dir, &name, ttl, store))
            .expect("start a node process");
        let status = node.ready(START).await.expect("the node starts");
        addresses.push(status.address.expect("a raft node has an address"));
        nodes.push(node);
    }
    wait_for_voters(&nodes, n).await;
    nodes
}

/// Starts a Raft cluster of node processes at fixed `addresses`, each
/// through its `wrappers` entry (a network namespace), all at once: they
/// bootstrap from the full list.
pub async fn raft_nodes_at(
    dir: &std::path::Path,
    addresses: &[String],
    wrappers: &[Vec<String>],
    ttl: Duration,
) -> Vec<NodeProcess> {
    let mut nodes = Vec::new();
    for (i, address) in addresses.iter().enumerate() {
        let mut store = raft_store(addresses.to_vec(), None);
        if let Store::Raft { listen, .. } = &mut store {
            *listen = address.clone();
        }
        let args = args(dir, &format!("n{}", i + 1), ttl, store);
        let node =
            NodeProcess::spawn_in(&wrappers[i], binary(), args).expect("start a node process");
        nodes.push(node);
    }
    for node in &mut nodes {
        node.ready(START).await.expect("the node starts");
    }
    wait_for_voters(&nodes, addresses.len()).await;
    nodes
}

/// Starts a Raft node again after it was killed, without waiting for it:
/// at the same address (in-memory members are known by their address when
/// they come back), with its data directory if it had one, joining through
/// the addresses of the others. Its history is appended to the same file.
pub fn respawn_raft_node(
    dir: &std::path::Path,
    name: &str,
    address: &str,
    peers: Vec<String>,
    wrapper: &[String],
    data_dir: Option<String>,
    ttl: Duration,
) -> NodeProcess {
    let mut store = raft_store(peers, data_dir);
    if let Store::Raft { listen, .. } = &mut store {
        *listen = address.to_owned();
    }
    NodeProcess::spawn_in(wrapper, binary(), args(dir, name, ttl, store))
        .expect("restart a node process")
}

/// Starts a Redis node again after it was killed (its history is
/// appended to the same file).
pub async fn restart_redis_node(
    dir: &std::path::Path,
    name: &str,
    url: &str,
    prefix: &str,
    ttl: Duration,
) -> NodeProcess {
    let store = Store::Redis {
        url: url.to_owned(),
        prefix: prefix.to_owned(),
    };
    let mut node =
        NodeProcess::spawn(binary(), args(dir, name, ttl, store)).expect("restart a node process");
    node.ready(START)
        .await
        .expect("the restarted node connects");
    node
}

/// Waits until every node sees `voters` voters and the same leader.
pub async fn wait_for_voters(nodes: &[NodeProcess], voters: usize) {
    dref_tests::within("the cluster of processes to settle", async {
        loop {
            let mut statuses = Vec::new();
            for node in nodes {
                statuses.push(node.status().await.ok());
            }
            let first = statuses[0].as_ref().and_then(|s| s.leader.clone());
            let settled = first.is_some()
                && statuses.iter().all(|s| {
                    s.as_ref()
                        .is_some_and(|s| s.leader == first && s.voters.len() == voters)
                });
            if settled {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// The index of the node that leads now, as the first node that knows
/// one says.
pub async fn raft_leader(nodes: &[NodeProcess]) -> usize {
    dref_tests::within("a leader", async {
        loop {
            for node in nodes {
                if let Ok(status) = node.status().await {
                    if let Some(leader) = status.leader {
                        for (i, n) in nodes.iter().enumerate() {
                            if n.status().await.ok().and_then(|s| s.address) == Some(leader.clone())
                            {
                                return i;
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Cuts every link between `nodes[alone]` and the others, both ways.
pub async fn isolate(nodes: &[NodeProcess], alone: usize) {
    let mut addresses = Vec::new();
    for node in nodes {
        addresses.push(node.status().await.ok().and_then(|s| s.address));
    }
    let others: Vec<String> = addresses
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != alone)
        .filter_map(|(_, a)| a.clone())
        .collect();
    let _ = nodes[alone]
        .ask(Command::Cut { peers: others }, ANSWER)
        .await;
    if let Some(lonely) = addresses[alone].clone() {
        for (i, node) in nodes.iter().enumerate() {
            if i != alone {
                let _ = node
                    .ask(
                        Command::Cut {
                            peers: vec![lonely.clone()],
                        },
                        ANSWER,
                    )
                    .await;
            }
        }
    }
}

/// Heals every cut link.
pub async fn heal(nodes: &[NodeProcess]) {
    for node in nodes {
        let _ = node.ask(Command::Heal, ANSWER).await;
    }
}
