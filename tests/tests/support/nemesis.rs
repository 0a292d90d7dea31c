//! Nemesis runs against node processes: a workload on every node while
//! faults are applied at random (kills, pauses longer than the session TTL,
//! partitions, server restarts), then the histories are checked.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dref_tests::check::history::{Op, Phase};
use dref_tests::nemesis::{Command, NodeProcess, Recorder, Rng, WorkloadSpec};
use dref_tests::os::Signal;

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
}

/// Where the nodes keep their state.
pub enum Backend {
    /// A Raft cluster of the node processes; in network namespaces when
    /// a network is given (partitions then drop packets for real).
    Raft(Option<Network>),
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
    /// The run's directory (histories).
    pub dir: PathBuf,
    /// The session TTL of every node.
    pub ttl: Duration,
    nodes: Vec<Option<NodeProcess>>,
    names: Vec<String>,
    addresses: Vec<String>,
    generations: Vec<u64>,
    spec: WorkloadSpec,
    nemesis: Recorder,
}

/// The nemesis's process id in histories.
const NEMESIS: u64 = u64::MAX;

impl Cluster {
    /// A Raft cluster of `n` node processes.
    pub async fn raft(test: &str, n: usize, ttl: Duration) -> Cluster {
        let dir = nodes::run_dir(test);
        let processes = nodes::raft_nodes(&dir, n, ttl).await;
        let mut addresses = Vec::new();
        for node in &processes {
            let status = node.status().await.expect("status");
            addresses.push(status.address.expect("a raft address"));
        }
        Cluster::new(Backend::Raft(None), dir, ttl, processes, addresses)
    }

    /// A Raft cluster of `n` node processes, each in a network namespace
    /// of its own (see [`Network`]), all on port 8082.
    pub async fn raft_in_namespaces(test: &str, n: usize, ttl: Duration) -> Cluster {
        let dir = nodes::run_dir(test);
        let network = Network::create(n);
        let addresses: Vec<String> = (0..n)
            .map(|i| format!("{}:8082", network.address(i)))
            .collect();
        let wrappers: Vec<Vec<String>> = (0..n).map(|i| network.wrapper(i)).collect();
        let processes = nodes::raft_nodes_at(&dir, &addresses, &wrappers, ttl).await;
        Cluster::new(Backend::Raft(Some(network)), dir, ttl, processes, addresses)
    }

    /// `n` node processes on one Redis server (AOF, fsync on every write).
    pub async fn redis(test: &str, n: usize, ttl: Duration) -> Cluster {
        let dir = nodes::run_dir(test);
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
        dir: PathBuf,
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

    async fn restart(&mut self, i: usize) {
        self.record(Phase::Invoke, "start", &[i]);
        self.generations[i] += 1;
        let node = match &self.backend {
            Backend::Raft(network) => {
                let peers = self
                    .addresses
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i && self.nodes[*j].is_some())
                    .map(|(_, a)| a.clone())
                    .collect();
                let wrapper = network.as_ref().map(|n| n.wrapper(i)).unwrap_or_default();
                let (name, address) = (&self.names[i], &self.addresses[i]);
                nodes::restart_raft_node(&self.dir, name, address, peers, &wrapper, self.ttl).await
            }
            Backend::Redis { server, prefix } => {
                nodes::restart_redis_node(
                    &self.dir,
                    &self.names[i],
                    &server.url(),
                    prefix,
                    self.ttl,
                )
                .await
            }
        };
        let spec = self.spec_for(i);
        node.ask(Command::StartWorkload(Box::new(spec)), ANSWER)
            .await
            .expect("restart the workload");
        self.nodes[i] = Some(node);
        self.record(Phase::Ok, "start", &[i]);
    }

    fn signal(&self, i: usize, signal: Signal) {
        if let Some(node) = &self.nodes[i] {
            if let Err(e) = node.signal(signal) {
                panic!("cannot signal {}: {e}", self.names[i]);
            }
        }
    }

    async fn partition(&self, i: usize) {
        if let Backend::Raft(Some(network)) = &self.backend {
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
        if let Backend::Raft(Some(network)) = &self.backend {
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
            Fault::RestartServer => None,
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
