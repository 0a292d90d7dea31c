//! dref's embedded Raft backend against etcd, in one run on one machine.
//!
//! - **dref**: three [`RaftBackend`] nodes in this process, each with its own
//!   gRPC server on a pre-bound loopback port, production timing (the default
//!   100 ms heartbeat and 600..1200 ms election timeout), and one
//!   [`dref::Context`] per node.
//! - **etcd**: a 3-member cluster of Debian's `etcd` on loopback, data on
//!   tmpfs (`/dev/shm`, and `--unsafe-no-fsync` where the binary has it), so
//!   that neither side pays for fsync; driven through the small gRPC client
//!   in `dref_bench::etcd`, one HTTP/2 channel per member.
//!
//! Operations: `set` is `DRef<u64>::set` against an etcd `Put`; `update` is
//! `DRef<u64>::update(|n| n + 1)` against an optimistic counter increment
//! (`Range` for the value and its `mod_revision`, then a `Txn` that puts
//! `n + 1` if the `mod_revision` is unchanged). dref's update takes the
//! current value from the ref's cache, so it is one write when uncontended;
//! the etcd loop is two requests.
//!
//! Placement ("spread", the target's figures): every client sends its
//! operations to the three nodes (members) in turn, with a key of its own on
//! each node, so exactly 2/3 of the operations enter at a follower and are
//! forwarded to the leader, as in real use, and no key is written through
//! two nodes. Keys are never shared between clients (uncontended: at
//! concurrency 64 this measures throughput, not compare-and-set conflicts),
//! on both sides. The "leader only" rows put every client on the leader
//! (for dref: no forwarding hop and no network between client and node;
//! for etcd: still a gRPC round trip to the member); they are for
//! information.
//!
//! Every figure follows a warm-up; latencies are recorded per operation,
//! throughput is successful operations over the measured window; errors are
//! counted, not fatal. dref and etcd run alternately, cell by cell.
//!
//! Two rounds, each on fresh clusters: **in memory** (dref's default, etcd
//! on tmpfs without fsync) and **durable** (dref with a data directory,
//! etcd with its data, both on the same real disk, fsync on). The durable
//! round also prints the disk's cost of one sync and how many log entries
//! dref's leader wrote per sync (its proposer gathers concurrent commands
//! into one entry).
//!
//! Targets (issues): in memory, at concurrency 64 at least etcd's
//! throughput; durable, at 64 at least 1.5x etcd's with a p99 no worse; at
//! concurrency 1 a p50 latency no worse than etcd's, for `set` and
//! `update`.
//!
//! A third round compares dref with mutual TLS on every connection against
//! dref in plain text (both in memory, `set`, 1 and 64 clients); target:
//! TLS costs at most 15% of throughput at 64 clients.
//!
//! Run with `cargo bench -p dref-bench --bench raft` (installs `etcd-server`
//! with `apt-get` if `etcd` is missing; about three minutes).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use dref::{Context, ManualId};
use dref_backends::raft::{RaftBackend, TlsConfig};
use dref_bench::cluster::{load_average, start_raft, NODES};
use dref_bench::etcd::{EtcdClient, EtcdCluster};

/// Warm-up before each measured run.
const WARMUP: Duration = Duration::from_secs(1);
/// Measured time of each "spread" figure.
const RUN: Duration = Duration::from_secs(5);
/// Measured time of each "leader only" figure.
const RUN_LEADER: Duration = Duration::from_secs(3);

type OpFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
/// One client's operation, called in a loop.
type Op = Box<dyn FnMut() -> OpFuture + Send>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Set,
    Update,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Set => "set",
            Kind::Update => "update",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Placement {
    /// Round-robin over the nodes (2/3 forwarded).
    Spread,
    /// Every client on the leader.
    Leader,
}

/// What one side did in one cell.
#[derive(Default)]
struct Sample {
    latencies: Vec<Duration>,
    /// Successful operations, warm-up included.
    done: u64,
    window: Duration,
    errors: u64,
    first_error: Option<String>,
}

impl Figures {
    /// Throughput and the median and tail latencies, for the console and
    /// the README table alike.
    fn summary(&self) -> String {
        format!(
            "{:.0} ops/s, p50 {}, p99 {}",
            self.rate,
            ms(self.p50),
            ms(self.p99)
        )
    }
}

impl Sample {
    fn merge(&mut self, other: Sample) {
        self.latencies.extend(other.latencies);
        self.done += other.done;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn finish(mut self) -> Figures {
        self.latencies.sort_unstable();
        let pct = |p: f64| -> Duration {
            let n = self.latencies.len();
            if n == 0 {
                return Duration::ZERO;
            }
            let rank = ((n as f64 * p).ceil() as usize).clamp(1, n);
            self.latencies[rank - 1]
        };
        let total: Duration = self.latencies.iter().sum();
        Figures {
            rate: self.latencies.len() as f64 / self.window.as_secs_f64().max(1e-9),
            mean: total / (self.latencies.len().max(1) as u32),
            p50: pct(0.50),
            p99: pct(0.99),
            p999: pct(0.999),
            max: self.latencies.last().copied().unwrap_or_default(),
            errors: self.errors,
            first_error: self.first_error.take(),
        }
    }
}

struct Figures {
    rate: f64,
    mean: Duration,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
    errors: u64,
    first_error: Option<String>,
}

/// Runs every op in its own task for `warmup`, then for `run` recording
/// the latency of each operation that started inside the measured window.
async fn drive(ops: Vec<Op>, warmup: Duration, run: Duration) -> Sample {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + run;
    let tasks: Vec<_> = ops
        .into_iter()
        .map(|mut op| {
            tokio::spawn(async move {
                let mut sample = Sample::default();
                let mut last_done = measure_from;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let result = op().await;
                    let done = Instant::now();
                    if result.is_ok() {
                        sample.done += 1;
                    }
                    match result {
                        Ok(()) if t0 >= measure_from => {
                            sample.latencies.push(done - t0);
                            last_done = last_done.max(done);
                        }
                        Ok(()) => {}
                        Err(e) => {
                            sample.errors += 1;
                            sample.first_error.get_or_insert(e);
                        }
                    }
                }
                (sample, last_done)
            })
        })
        .collect();
    let mut total = Sample::default();
    let mut last_done = measure_from;
    for task in tasks {
        let (sample, done) = task.await.expect("a benchmark client task panicked");
        last_done = last_done.max(done);
        total.merge(sample);
    }
    total.window = last_done - measure_from;
    total
}

/// dref clients: client `t` owns one ref per node in `routes[t]`
/// (`{tag}-t{t}-n{node}`, made through that node's context) and sends its
/// operations to them in turn.
async fn dref_ops(contexts: &[Context], kind: Kind, routes: &[Vec<usize>], tag: &str) -> Vec<Op> {
    let mut ops: Vec<Op> = Vec::with_capacity(routes.len());
    for (t, route) in routes.iter().enumerate() {
        let mut refs = Vec::with_capacity(route.len());
        for &node in route {
            let id = ManualId::<u64>::new(format!("{tag}-t{t}-n{node}"));
            refs.push(
                contexts[node]
                    .make(id, 0)
                    .await
                    .expect("make a dref ref for the benchmark"),
            );
        }
        let mut i = 0usize;
        ops.push(Box::new(move || {
            let r = refs[i % refs.len()].clone();
            i += 1;
            let value = i as u64;
            Box::pin(async move {
                match kind {
                    Kind::Set => r.set(value).await,
                    Kind::Update => r.update(|n| n + 1).await,
                }
                .map_err(|e| e.to_string())
            })
        }));
    }
    ops
}

/// Every client visits the three nodes in turn, starting at its own
/// offset, so exactly 2/3 of its operations enter at a follower (whichever
/// node leads) and the load is even at any time.
fn spread(tasks: usize) -> Vec<Vec<usize>> {
    (0..tasks)
        .map(|t| (0..NODES).map(|k| (t + k) % NODES).collect())
        .collect()
}

/// The benchmark's two clusters and their clients.
struct Setup {
    contexts: Vec<Context>,
    etcd: Vec<EtcdClient>,
    /// Index (into `contexts` / `etcd`) of each side's leader at start.
    dref_leader: usize,
    etcd_leader: usize,
    /// The dref leader, for its log's counters (durable round only).
    leader_log: Option<RaftBackend>,
}

impl Setup {
    async fn dref_ops(&self, kind: Kind, routes: &[Vec<usize>], tag: &str) -> Vec<Op> {
        dref_ops(&self.contexts, kind, routes, tag).await
    }

    /// etcd clients: client `t` owns one key per member in `routes[t]`
    /// (`{tag}-t{t}-n{member}`, seeded with 0 as the dref refs are) and sends
    /// its operations to them in turn, each through its member's channel.
    async fn etcd_ops(&self, kind: Kind, routes: &[Vec<usize>], tag: &str) -> Vec<Op> {
        let mut ops: Vec<Op> = Vec::with_capacity(routes.len());
        for (t, route) in routes.iter().enumerate() {
            let mut targets = Vec::with_capacity(route.len());
            for &member in route {
                let client = self.etcd[member].clone();
                let key = format!("{tag}-t{t}-n{member}").into_bytes();
                client
                    .put(&key, &0u64.to_le_bytes())
                    .await
                    .expect("seed an etcd key for the benchmark");
                targets.push((client, key));
            }
            let mut i = 0usize;
            ops.push(Box::new(move || {
                let (client, key) = targets[i % targets.len()].clone();
                i += 1;
                let value = i as u64;
                Box::pin(async move {
                    match kind {
                        Kind::Set => client.put(&key, &value.to_le_bytes()).await,
                        Kind::Update => client.increment(&key).await.map(|_| ()),
                    }
                    .map_err(|e| e.to_string())
                })
            }));
        }
        ops
    }

    /// Measures one cell on both sides, dref first, then etcd.
    async fn cell(&self, kind: Kind, tasks: usize, placement: Placement) -> (Figures, Figures) {
        let (dref_routes, etcd_routes, run) = match placement {
            Placement::Spread => (spread(tasks), spread(tasks), RUN),
            Placement::Leader => (
                vec![vec![self.dref_leader]; tasks],
                vec![vec![self.etcd_leader]; tasks],
                RUN_LEADER,
            ),
        };
        let tag = format!("{}-c{tasks}-{placement:?}", kind.name());
        let ops = self.dref_ops(kind, &dref_routes, &tag).await;
        let before = self.leader_log.as_ref().and_then(|l| l.log_syncs());
        let dref = drive(ops, WARMUP, run).await;
        let after = self.leader_log.as_ref().and_then(|l| l.log_syncs());
        if let (Some((entries0, syncs0)), Some((entries, syncs))) = (before, after) {
            let (entries, syncs) = (entries - entries0, syncs - syncs0);
            println!(
                "    dref leader: {} commands in {entries} log entries ({:.1} per entry), {syncs} disk syncs",
                dref.done,
                dref.done as f64 / entries.max(1) as f64
            );
        }
        let ops = self.etcd_ops(kind, &etcd_routes, &tag).await;
        let etcd = drive(ops, WARMUP, run).await;
        (dref.finish(), etcd.finish())
    }
}

/// Prints one cell's comparison of side `a` against side `b` and returns
/// its README table row; `verdict` judges the throughput and p50 ratios
/// (a / b).
fn compare(
    label: &str,
    (a_name, a): (&str, &Figures),
    (b_name, b): (&str, &Figures),
    verdict: impl FnOnce(f64, f64) -> String,
) -> String {
    let rate_ratio = a.rate / b.rate.max(1e-9);
    let p50_ratio = a.p50.as_secs_f64() / b.p50.as_secs_f64().max(1e-12);
    println!(
        "{label:<30} {a_name} {} | {b_name} {} | ops/s {rate_ratio:.2}x p50 {p50_ratio:.2}x | \
         errors {a_name} {} {b_name} {}",
        a.summary(),
        b.summary(),
        a.errors,
        b.errors
    );
    format!(
        "| {label} | {} | {} | {rate_ratio:.2}x | {p50_ratio:.2}x | {} |",
        a.summary(),
        b.summary(),
        verdict(rate_ratio, p50_ratio)
    )
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    runtime
        .block_on(async { tokio::spawn(run()).await })
        .expect("the benchmark task panicked");
}

/// Where the durable round keeps both sides' data: the temporary
/// directory, on this machine's real disk.
fn durable_root() -> PathBuf {
    std::env::temp_dir().join(format!("dref-bench-raft-{}", std::process::id()))
}

/// Mean time of a 4 KiB write plus `fdatasync` in `dir`: what one sync
/// costs on that disk.
fn fsync_cost(dir: &Path) -> Duration {
    use std::io::Write as _;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).expect("create the fsync probe");
    let block = [0u8; 4096];
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        file.write_all(&block).expect("write the fsync probe");
        file.sync_data().expect("fdatasync the fsync probe");
    }
    let cost = started.elapsed() / rounds;
    drop(file);
    std::fs::remove_file(&path).ok();
    cost
}

/// The device behind `dir`, as `df` names it.
fn device_of(dir: &Path) -> String {
    std::process::Command::new("df")
        .arg("--output=source,fstype")
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| {
            t.lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "unknown".into())
}

async fn run() {
    println!("load average at start: {}", load_average());
    let mut rows = Vec::new();
    rows.extend(round(None).await);
    let root = durable_root();
    std::fs::create_dir_all(&root).expect("create the durable round's directory");
    println!(
        "durable round: data in {} ({}), one 4 KiB write + fdatasync there: {}",
        root.display(),
        device_of(&root),
        ms(fsync_cost(&root))
    );
    rows.extend(round(Some(&root)).await);
    std::fs::remove_dir_all(&root).ok();
    let tls_rows = tls_round().await;
    println!("load average at end: {}", load_average());
    println!();
    println!("| operation | dref | etcd | ops/s dref/etcd | p50 dref/etcd | target |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    println!();
    println!("| operation | dref, mutual TLS | dref, plain text | ops/s TLS/plain | p50 TLS/plain | target |");
    println!("|---|---|---|---|---|---|");
    for row in tls_rows {
        println!("{row}");
    }
}

/// A throw-away CA and one node certificate for 127.0.0.1, shared by the
/// three nodes of the TLS round.
fn throwaway_tls() -> TlsConfig {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("a CA key");
    let ca_pem = ca.self_signed(&ca_key).expect("a CA certificate").pem();
    let issuer = Issuer::new(ca, ca_key);
    let node = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("node names");
    let key = KeyPair::generate().expect("a node key");
    let cert = node.signed_by(&key, &issuer).expect("a node certificate");
    TlsConfig::from_pem(cert.pem(), key.serialize_pem(), ca_pem)
}

/// The TLS round: two in-memory clusters side by side, one in plain text
/// and one with mutual TLS on every connection; `set` spread over the
/// nodes (2/3 forwarded, so most operations cross two TLS links), the two
/// measured alternately. Target: TLS costs at most 15% of throughput at 64
/// clients.
async fn tls_round() -> Vec<String> {
    let plain = start_raft(None, None).await;
    let secure = start_raft(None, Some(&throwaway_tls())).await;
    let mut plain_contexts = Vec::with_capacity(NODES);
    let mut tls_contexts = Vec::with_capacity(NODES);
    for (backends, contexts) in [(&plain, &mut plain_contexts), (&secure, &mut tls_contexts)] {
        for backend in backends {
            contexts.push(
                backend
                    .context_builder()
                    .connect()
                    .await
                    .expect("a dref context on a raft node"),
            );
        }
    }
    println!(
        "TLS round: 3 in-process raft nodes in memory with mutual TLS (TLS 1.3, ECDSA P-256) vs 3 in plain text, loopback; warm-up {WARMUP:?}, {RUN:?} per figure"
    );
    let mut rows = Vec::new();
    for tasks in [1, 64] {
        let tag = format!("tls-c{tasks}");
        let ops = dref_ops(&plain_contexts, Kind::Set, &spread(tasks), &tag).await;
        let plain_figures = drive(ops, WARMUP, RUN).await.finish();
        let ops = dref_ops(&tls_contexts, Kind::Set, &spread(tasks), &tag).await;
        let tls_figures = drive(ops, WARMUP, RUN).await.finish();
        let label = format!(
            "set, {tasks} {}",
            if tasks == 1 { "client" } else { "clients" }
        );
        rows.push(compare(
            &label,
            ("TLS", &tls_figures),
            ("plain", &plain_figures),
            |rate, _| match tasks {
                1 => "for information".to_owned(),
                _ if rate >= 0.85 => "TLS costs ≤ 15%: met".to_owned(),
                _ => "TLS costs ≤ 15%: **missed**".to_owned(),
            },
        ));
    }
    rows
}

/// One round of cells on fresh clusters: in memory against etcd on tmpfs
/// without fsync (`durable = None`), or on disk against etcd with its data
/// on the same disk.
async fn round(durable: Option<&Path>) -> Vec<String> {
    let etcd_cluster = {
        let parent = durable.map_or_else(|| PathBuf::from("/dev/shm"), Path::to_path_buf);
        tokio::task::spawn_blocking(move || {
            EtcdCluster::start_in(NODES, &parent, parent != Path::new("/dev/shm"))
        })
    };
    let backends = start_raft(durable, None).await;
    let etcd_cluster = etcd_cluster.await.expect("the etcd start-up task panicked");
    let mut contexts = Vec::with_capacity(NODES);
    for backend in &backends {
        contexts.push(
            backend
                .context_builder()
                .connect()
                .await
                .expect("a dref context on a raft node"),
        );
    }
    let mut etcd = Vec::with_capacity(NODES);
    for url in etcd_cluster.client_urls() {
        etcd.push(
            EtcdClient::connect(&url)
                .await
                .expect("connect to an etcd member"),
        );
    }
    let dref_leader = backends
        .iter()
        .position(RaftBackend::is_leader)
        .expect("the settled raft cluster has a leader among the three nodes");
    let mut etcd_leader = None;
    for (i, client) in etcd.iter().enumerate() {
        if client.is_leader().await.expect("etcd member status") {
            etcd_leader = Some(i);
        }
    }
    let etcd_leader = etcd_leader.expect("the etcd cluster has a leader among its members");
    let setup = Setup {
        contexts,
        etcd,
        dref_leader,
        etcd_leader,
        leader_log: durable.map(|_| backends[dref_leader].clone()),
    };
    let mode = if durable.is_some() {
        "durable"
    } else {
        "in memory"
    };
    println!(
        "dref (3 in-process raft nodes, {mode}) vs etcd (3 members, {}), loopback; warm-up \
         {WARMUP:?}, {RUN:?} per spread figure, {RUN_LEADER:?} per leader-only figure",
        if durable.is_some() {
            "same disk, fsync"
        } else {
            "tmpfs"
        }
    );

    let cells = [
        (Kind::Set, 1, Placement::Spread),
        (Kind::Set, 64, Placement::Spread),
        (Kind::Update, 1, Placement::Spread),
        (Kind::Update, 64, Placement::Spread),
        (Kind::Set, 1, Placement::Leader),
        (Kind::Set, 64, Placement::Leader),
        (Kind::Update, 1, Placement::Leader),
        (Kind::Update, 64, Placement::Leader),
    ];
    let mut rows = Vec::new();
    for (kind, tasks, placement) in cells {
        let (dref, etcd) = setup.cell(kind, tasks, placement).await;
        let label = format!(
            "{}{}, {tasks} {}{}",
            if durable.is_some() { "durable " } else { "" },
            kind.name(),
            if tasks == 1 { "client" } else { "clients" },
            match placement {
                Placement::Spread => "",
                Placement::Leader => ", leader only",
            }
        );
        // The durable target is 1.5x etcd at 64 clients; in memory, 1x.
        let target = if durable.is_some() { 1.5 } else { 1.0 };
        let row = compare(
            &label,
            ("dref", &dref),
            ("etcd", &etcd),
            |rate, p50| match (placement, tasks) {
                (Placement::Leader, _) => "for information".to_owned(),
                (Placement::Spread, 1) if p50 <= 1.0 => "p50 ≤ etcd: met".into(),
                (Placement::Spread, 1) => "p50 ≤ etcd: **missed**".into(),
                (Placement::Spread, _) if rate >= target => format!("ops/s ≥ {target}x etcd: met"),
                (Placement::Spread, _) => format!("ops/s ≥ {target}x etcd: **missed**"),
            },
        );
        for (side, figures) in [("dref", &dref), ("etcd", &etcd)] {
            println!(
                "    {side}: mean {}, p99.9 {}, max {}",
                ms(figures.mean),
                ms(figures.p999),
                ms(figures.max)
            );
            if let Some(e) = &figures.first_error {
                println!("    first {side} error: {e}");
            }
        }
        rows.push(row);
    }

    if !setup.etcd[setup.etcd_leader]
        .is_leader()
        .await
        .unwrap_or(false)
        || !backends[setup.dref_leader].is_leader()
    {
        println!("note: a leader changed during the run; the leader-only rows are mixed");
    }
    drop(setup);
    drop(backends);
    drop(etcd_cluster);
    rows
}
