//! Nemesis runs against node processes: a workload on every node while
//! faults are applied at random (kills, pauses longer than the session TTL,
//! partitions, server restarts), then the histories are checked.

use std::time::{Duration, Instant};

use dref_tests::check::history::{Op, Phase};
use dref_tests::nemesis::{Command, NodeProcess, Recorder, Rng, WorkloadSpec};
use dref_tests::os::Signal;
use dref_tests::scratch::ScratchDir;

use super::netns::Network;
use super::nodes::{self, ANSWER};
use super::redis_server::RedisServer;

/// The faults a run may apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL a random node, restart it after a while.
    Kill,
    /// SIGKILL the Raft leader's node, restart it after a while.
    KillLeader,
    /// SIGSTOP a random node for longer than the session TTL, then SIGCONT.
    Pause,
    /// SIGSTOP the Raft leader's node (the stale leader).
    PauseLeader,
    /// Cut a random node off the others (Raft), then heal.
    Partition,
    /// Cut the Raft leader off the others, then heal.
    PartitionLeader,
    /// SIGKILL the Redis server and restart it on its data (AOF, fsync
    /// always: nothing acknowledged is lost).
    RestartServer,
    /// SIGKILL every node at once, then start them all again (on their
    /// data directories: a power cut).
    KillAll,
    /// SIGKILL each node in turn and restart it, waiting for it to be
    /// back before the next (a rolling restart).
    RollingRestart,
}

/// Where the nodes keep their state.
pub enum Backend {
    /// A Raft cluster of the node processes; in network namespaces when
    /// a network is given (partitions then drop packets for real).
    Raft {
        /// The namespaces, if any.
        network: Option<Network>,
        /// Whether every node has a data directory.
        durable: bool,
    },
    /// Clients of one Redis server.
    Redis {
        /// The server.
        server: RedisServer,
        /// The namespace.
        prefix: String,
    },
}

/// The cluster under test.
pub struct Cluster {
    /// The store.
    pub backend: Backend,
    /// The session TTL of every node.
    pub ttl: Duration,
    nodes: Vec<Option<NodeProcess>>,
    names: Vec<String>,
    addresses: Vec<String>,
    generations: Vec<u64>,
    spec: WorkloadSpec,
    nemesis: Recorder,
    /// The run's directory (histories). Last, so that it is removed after
    /// the processes that write there have been stopped.
    pub dir: ScratchDir,
}

/// The nemesis's process id in histories.
const NEMESIS: u64 = u64::MAX;

impl Cluster {
    /// A Raft cluster of `n` node processes.
    pub async fn raft(test: &str, n: usize, ttl: Duration) -> Cluster {
        Cluster::raft_with(test, n, ttl, false).await
    }

    /// A Raft cluster of `n` node processes, each with a data directory.
    pub async fn durable_raft(test: &str, n: usize, ttl: Duration) -> Cluster {
        Cluster::raft_with(test, n, ttl, true).await
    }

    async fn raft_with(test: &str, n: usize, ttl: Duration, durable: bool) -> Cluster {
        let dir = ScratchDir::new(test);
        let processes = nodes::raft_nodes(&dir, n, ttl, durable).await;
        let mut addresses = Vec::new();
        for node in &processes {
            let status = node.status().await.expect("status");
            addresses.push(status.address.expect("a raft address"));
        }
        let backend = Backend::Raft {
            network: None,
            durable,
        };
        Cluster::new(backend, dir, ttl, processes, addresses)
    }

    /// A Raft cluster of `n` node processes, each in a network namespace
    /// of its own (see [`Network`]), all on port 8082.
    pub async fn raft_in_namespaces(test: &str, n: usize, ttl: Duration) -> Cluster {
        let dir = ScratchDir::new(test);
        let network = Network::create(n);
        let addresses: Vec<String> = (0..n)
            .map(|i| format!("{}:8082", network.address(i)))
            .collect();
        let wrappers: Vec<Vec<String>> = (0..n).map(|i| network.wrapper(i)).collect();
        let processes = nodes::raft_nodes_at(&dir, &addresses, &wrappers, ttl).await;
        let backend = Backend::Raft {
            network: Some(network),
            durable: false,
        };
        Cluster::new(backend, dir, ttl, processes, addresses)
    }

    /// `n` node processes on one Redis server (AOF, fsync on every write).
    pub async fn redis(test: &str, n: usize, ttl: Duration) -> Cluster {
        let dir = ScratchDir::new(test);
        let server = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
        let prefix = format!("{test}:");
        let processes = nodes::redis_nodes(&dir, n, &server.url(), &prefix, ttl).await;
        let addresses = vec![String::new(); n];
        Cluster::new(
            Backend::Redis { server, prefix },
            dir,
            ttl,
            processes,
            addresses,
        )
    }

    fn new(
        backend: Backend,
        dir: ScratchDir,
        ttl: Duration,
        processes: Vec<NodeProcess>,
        addresses: Vec<String>,
    ) -> Cluster {
        let nemesis =
            Recorder::create(&dir.join("nemesis.jsonl"), "nemesis").expect("the nemesis history");
        let names = processes.iter().map(|p| p.name.clone()).collect();
        let n = processes.len();
        Cluster {
            backend,
            dir,
            ttl,
            nodes: processes.into_iter().map(Some).collect(),
            names,
            addresses,
            generations: vec![0; n],
            spec: WorkloadSpec::default(),
            nemesis,
        }
    }

    /// The live node processes.
    pub fn live(&self) -> impl Iterator<Item = &NodeProcess> {
        self.nodes.iter().flatten()
    }

    fn spec_for(&self, i: usize) -> WorkloadSpec {
        let mut spec = self.spec.clone();
        // Every node and every incarnation of it gets its own process ids.
        spec.process_base = (self.generations[i] * 64 + i as u64 + 1) * 1_000;
        spec.seed = self.spec.seed ^ spec.process_base;
        spec
    }

    /// Starts `spec` on every node.
    pub async fn start_workload(&mut self, spec: WorkloadSpec) {
        self.spec = spec;
        for i in 0..self.nodes.len() {
            let spec = self.spec_for(i);
            if let Some(node) = &self.nodes[i] {
                node.ask(Command::StartWorkload(Box::new(spec)), ANSWER)
                    .await
                    .expect("start the workload");
            }
        }
    }

    fn record(&self, phase: Phase, action: &str, nodes: &[usize]) {
        let nodes = nodes.iter().map(|i| self.names[*i].clone()).collect();
        self.nemesis.emit(
            NEMESIS,
            phase,
            Op::Nemesis {
                action: action.to_owned(),
                nodes,
            },
        );
    }

    async fn leader(&self) -> Option<usize> {
        for node in self.live() {
            if let Ok(status) = node.status().await {
                if let Some(leader) = status.leader {
                    return self.addresses.iter().position(|a| *a == leader);
                }
            }
        }
        None
    }

    fn random_live(&self, rng: &mut Rng) -> Option<usize> {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect();
        (!live.is_empty()).then(|| *rng.pick(&live))
    }

    async fn kill(&mut self, i: usize) {
        self.record(Phase::Invoke, "kill", &[i]);
        if let Some(mut node) = self.nodes[i].take() {
            node.kill().await;
        }
        self.record(Phase::Ok, "kill", &[i]);
    }

    /// Starts killed node `i` again, without waiting for it to be ready
    /// (Raft nodes restarted together need each other to be).
    fn respawn(&mut self, i: usize) -> NodeProcess {
        self.record(Phase::Invoke, "start", &[i]);
        self.generations[i] += 1;
        let Backend::Raft { network, durable } = &self.backend else {
            unreachable!("only raft nodes are respawned");
        };
        let peers = self
            .addresses
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| a.clone())
            .collect();
        let wrapper = network.as_ref().map(|n| n.wrapper(i)).unwrap_or_default();
        let (name, address) = (&self.names[i], &self.addresses[i]);
        let data_dir = nodes::data_dir(&self.dir, name, *durable);
        nodes::respawn_raft_node(
            &self.dir, name, address, peers, &wrapper, data_dir, self.ttl,
        )
    }

    /// Waits for respawned node `i` and starts its workload.
    async fn resume_node(&mut self, i: usize, mut node: NodeProcess) {
        node.ready(nodes::START)
            .await
            .expect("the restarted node joins");
        let spec = self.spec_for(i);
        node.ask(Command::StartWorkload(Box::new(spec)), ANSWER)
            .await
            .expect("restart the workload");
        self.nodes[i] = Some(node);
        self.record(Phase::Ok, "start", &[i]);
    }

    async fn restart(&mut self, i: usize) {
        let redis = match &self.backend {
            Backend::Raft { .. } => None,
            Backend::Redis { server, prefix } => Some((server.url(), prefix.clone())),
        };
        let Some((url, prefix)) = redis else {
            let node = self.respawn(i);
            return self.resume_node(i, node).await;
        };
        self.record(Phase::Invoke, "start", &[i]);
        self.generations[i] += 1;
        let node =
            nodes::restart_redis_node(&self.dir, &self.names[i], &url, &prefix, self.ttl).await;
        let spec = self.spec_for(i);
        node.ask(Command::StartWorkload(Box::new(spec)), ANSWER)
            .await
            .expect("restart the workload");
        self.nodes[i] = Some(node);
        self.record(Phase::Ok, "start", &[i]);
    }

    /// Kills every node, waits `hold`, and starts them all again at once.
    async fn kill_all(&mut self, hold: Duration) {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.record(Phase::Invoke, "kill", &all);
        for node in self.nodes.iter_mut() {
            if let Some(mut node) = node.take() {
                node.kill().await;
            }
        }
        self.record(Phase::Ok, "kill", &all);
        tokio::time::sleep(hold).await;
        let respawned: Vec<NodeProcess> = all.iter().map(|i| self.respawn(*i)).collect();
        for (i, node) in all.into_iter().zip(respawned) {
            self.resume_node(i, node).await;
        }
    }

    /// Kills and restarts each node in turn, each back before the next.
    async fn rolling_restart(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i).await;
            self.restart(i).await;
        }
    }

    /// The voters' ids as every live node sees them, which must all agree.
    pub async fn voter_ids(&self) -> Vec<u64> {
        let mut seen = None;
        for node in self.live() {
            let status = node.status().await.expect("status");
            let mut ids = status.voter_ids;
            ids.sort_unstable();
            match &seen {
                None => seen = Some(ids),
                Some(first) => assert_eq!(first, &ids, "nodes disagree on the voters"),
            }
        }
        seen.unwrap_or_default()
    }

    fn signal(&self, i: usize, signal: Signal) {
        if let Some(node) = &self.nodes[i] {
            if let Err(e) = node.signal(signal) {
                panic!("cannot signal {}: {e}", self.names[i]);
            }
        }
    }

    async fn partition(&self, i: usize) {
        if let Backend::Raft {
            network: Some(network),
            ..
        } = &self.backend
        {
            let others: Vec<usize> = (0..self.nodes.len()).filter(|j| *j != i).collect();
            network.cut(i, &others);
            return;
        }
        let others: Vec<String> = (0..self.nodes.len())
            .filter(|j| *j != i)
            .map(|j| self.addresses[j].clone())
            .collect();
        if let Some(node) = &self.nodes[i] {
            let _ = node.ask(Command::Cut { peers: others }, ANSWER).await;
        }
        for (j, node) in self.nodes.iter().enumerate() {
            if let (true, Some(node)) = (j != i, node) {
                let _ = node
                    .ask(
                        Command::Cut {
                            peers: vec![self.addresses[i].clone()],
                        },
                        ANSWER,
                    )
                    .await;
            }
        }
    }

    async fn heal(&self) {
        if let Backend::Raft {
            network: Some(network),
            ..
        } = &self.backend
        {
            network.heal();
            return;
        }
        for node in self.live() {
            let _ = node.ask(Command::Heal, ANSWER).await;
        }
    }

    /// Applies one fault for `hold`, then repairs it.
    async fn apply(&mut self, fault: Fault, rng: &mut Rng, hold: Duration) {
        let target = match fault {
            Fault::KillLeader | Fault::PauseLeader | Fault::PartitionLeader => self.leader().await,
            Fault::RestartServer | Fault::KillAll | Fault::RollingRestart => None,
            _ => self.random_live(rng),
        };
        match (fault, target) {
            (Fault::Kill | Fault::KillLeader, Some(i)) => {
                self.kill(i).await;
                tokio::time::sleep(hold).await;
                self.restart(i).await;
            }
            (Fault::Pause | Fault::PauseLeader, Some(i)) => {
                self.record(Phase::Invoke, "pause", &[i]);
                self.signal(i, Signal::Stop);
                self.record(Phase::Ok, "pause", &[i]);
                tokio::time::sleep(hold).await;
                self.record(Phase::Invoke, "resume", &[i]);
                self.signal(i, Signal::Cont);
                self.record(Phase::Ok, "resume", &[i]);
            }
            (Fault::Partition | Fault::PartitionLeader, Some(i)) => {
                self.record(Phase::Invoke, "partition", &[i]);
                self.partition(i).await;
                self.record(Phase::Ok, "partition", &[i]);
                tokio::time::sleep(hold).await;
                self.record(Phase::Invoke, "heal", &[]);
                self.heal().await;
                self.record(Phase::Ok, "heal", &[]);
            }
            (Fault::KillAll, _) => self.kill_all(hold).await,
            (Fault::RollingRestart, _) => self.rolling_restart().await,
            (Fault::RestartServer, _) => {
                if let Backend::Redis { server, .. } = &mut self.backend {
                    self.nemesis.emit(
                        NEMESIS,
                        Phase::Invoke,
                        Op::Nemesis {
                            action: "restart".into(),
                            nodes: vec!["redis".into()],
                        },
                    );
                    server.kill();
                    tokio::time::sleep(hold).await;
                    server.launch();
                    self.nemesis.emit(
                        NEMESIS,
                        Phase::Ok,
                        Op::Nemesis {
                            action: "restart".into(),
                            nodes: vec!["redis".into()],
                        },
                    );
                }
            }
            _ => {}
        }
    }

    /// Applies faults drawn from `faults` for `length`, with quiet spells
    /// between them.
    pub async fn nemesis(&mut self, seed: u64, faults: &[Fault], length: Duration) {
        let mut rng = Rng::new(seed);
        let end = Instant::now() + length;
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(rng.between((500, 2_000)))).await;
            if faults.is_empty() || Instant::now() >= end {
                continue;
            }
            let fault = *rng.pick(faults);
            let hold = match fault {
                // Longer than the TTL: the stale holder and stale leader.
                Fault::Pause | Fault::PauseLeader => self.ttl * 5 / 2,
                Fault::Partition | Fault::PartitionLeader => self.ttl * 2,
                _ => Duration::from_millis(rng.between((500, 2_000))),
            };
            self.apply(fault, &mut rng, hold).await;
        }
    }

    /// Stops the workload on every node, then makes the final reads of
    /// the counters through the first node.
    pub async fn finish(&mut self) {
        for node in self.live() {
            node.ask(Command::StopWorkload, Duration::from_secs(120))
                .await
                .expect("stop the workload");
        }
        let counters = self.spec.counters.clone();
        let node = self.live().next().expect("a live node");
        node.ask(
            Command::FinalReads {
                counters,
                process: NEMESIS - 1,
            },
            Duration::from_secs(120),
        )
        .await
        .expect("the final reads");
        for node in self.live() {
            let _ = node.ask(Command::Shutdown, ANSWER).await;
        }
    }
}
