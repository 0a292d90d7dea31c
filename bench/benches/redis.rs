//! dref on Redis against raw Redis commands doing the same job, in one run
//! against one private redis-server.
//!
//! - `update` of a `u64` vs `INCR` (one round trip each when uncontended);
//! - lock acquire + release vs `SET NX PX` + a compare-and-delete script.
//!
//! Each task works on its own key (the contended case is printed too), at
//! concurrency 1 and 64. Each cell also prints the CPU time per operation
//! of the benchmark process (the client) and of the server, which depend
//! less than the rates on what else the machine runs (they still grow on a
//! loaded machine: caches and context switches). Run with
//! `cargo bench -p dref-bench --bench redis`.

#[path = "../../tests/tests/support/redis_server.rs"]
mod redis_server;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dref::{Context, ManualId};
use dref_backends::redis::RedisConfig;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;

/// Targets, as fractions of the raw baseline's rate: for one task an
/// earlier issue's, for 64 tasks the hot-keys issue's (which replaced the
/// earlier one there).
const UPDATE_TARGET_ONE_TASK: f64 = 0.7;
const UPDATE_TARGET_64_TASKS: f64 = 0.5;
const LOCK_TARGET_ONE_TASK: f64 = 1.0 / 1.2;
const LOCK_TARGET_64_TASKS: f64 = 0.5;

/// Length of one measured round.
const RUN: Duration = Duration::from_secs(1);
/// Rounds per figure: dref and the baseline alternate round by round, so a
/// drift in the machine's speed hits both, and the medians are reported.
const ROUNDS: usize = 5;

/// One round's figures.
#[derive(Clone, Copy)]
struct Round {
    /// Operations per second.
    rate: f64,
    /// CPU time per operation of this process, in microseconds.
    client_us: f64,
    /// CPU time per operation of the server, in microseconds.
    server_us: f64,
}

/// CPU time used so far by this process (utime + stime in
/// `/proc/self/stat`, clock ticks of 10 ms) and by the server (`INFO cpu`),
/// in seconds.
async fn cpu(server: &mut MultiplexedConnection) -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name in parentheses start with the
    // third (state): utime and stime are the 14th and 15th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let client = (ticks(11) + ticks(12)) / 100.0;
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(server)
        .await
        .expect("INFO cpu");
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (client, field("used_cpu_user:") + field("used_cpu_sys:"))
}

/// The figures of `tasks` tasks each running `op(task)` in a loop for one
/// round; `server` reads the server's CPU time.
async fn rate<F, Fut>(tasks: usize, op: &Arc<F>, server: &mut MultiplexedConnection) -> Round
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let (client_before, server_before) = cpu(server).await;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (op, done) = (op.clone(), done.clone());
            tokio::spawn(async move {
                while start.elapsed() < RUN {
                    op(t).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("bench task");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (client_after, server_after) = cpu(server).await;
    let ops = done.load(Ordering::Relaxed) as f64;
    Round {
        rate: ops / elapsed,
        client_us: (client_after - client_before) * 1e6 / ops,
        server_us: (server_after - server_before) * 1e6 / ops,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Medians of alternating rounds of `dref` and `raw`: of each one's
/// figures, and of the per-round ratios of their rates.
async fn compare<D, DF, R, RF>(
    tasks: usize,
    dref: D,
    raw: R,
    server: &mut MultiplexedConnection,
) -> Comparison
where
    D: Fn(usize) -> DF + Send + Sync + 'static,
    DF: Future<Output = ()> + Send,
    R: Fn(usize) -> RF + Send + Sync + 'static,
    RF: Future<Output = ()> + Send,
{
    let (dref, raw) = (Arc::new(dref), Arc::new(raw));
    let (mut d, mut r) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        d.push(rate(tasks, &dref, server).await);
        r.push(rate(tasks, &raw, server).await);
    }
    Comparison::of(&d, &r)
}

/// As [`compare`], with a third op in every round: `off`, the same as
/// `dref` on a handle whose writes do not share script calls. Returns the
/// comparisons of `dref` and of `off` with `raw`, and the median of the
/// per-round ratios of `dref`'s rate to `off`'s.
async fn compare_batching<D, DF, O, OF, R, RF>(
    tasks: usize,
    dref: D,
    off: O,
    raw: R,
    server: &mut MultiplexedConnection,
) -> (Comparison, Comparison, f64)
where
    D: Fn(usize) -> DF + Send + Sync + 'static,
    DF: Future<Output = ()> + Send,
    O: Fn(usize) -> OF + Send + Sync + 'static,
    OF: Future<Output = ()> + Send,
    R: Fn(usize) -> RF + Send + Sync + 'static,
    RF: Future<Output = ()> + Send,
{
    let (dref, off, raw) = (Arc::new(dref), Arc::new(off), Arc::new(raw));
    let (mut d, mut o, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        d.push(rate(tasks, &dref, server).await);
        o.push(rate(tasks, &off, server).await);
        r.push(rate(tasks, &raw, server).await);
    }
    let gain = median(d.iter().zip(&o).map(|(d, o)| d.rate / o.rate).collect());
    (Comparison::of(&d, &r), Comparison::of(&o, &r), gain)
}

/// A cell's medians.
struct Comparison {
    dref: Round,
    raw: Round,
    ratio: f64,
}

impl Comparison {
    /// The medians of rounds `d` of dref and `r` of the baseline, taken in
    /// turn.
    fn of(d: &[Round], r: &[Round]) -> Comparison {
        let medians = |rounds: &[Round]| Round {
            rate: median(rounds.iter().map(|r| r.rate).collect()),
            client_us: median(rounds.iter().map(|r| r.client_us).collect()),
            server_us: median(rounds.iter().map(|r| r.server_us).collect()),
        };
        Comparison {
            dref: medians(d),
            raw: medians(r),
            ratio: median(d.iter().zip(r).map(|(d, r)| d.rate / r.rate).collect()),
        }
    }
}

fn report(what: &str, c: Comparison, raw_name: &str, target: f64) {
    let verdict = if c.ratio >= target { "meets" } else { "MISSES" };
    let (dref, raw, ratio) = (c.dref.rate, c.raw.rate, c.ratio);
    println!(
        "{what:<30} dref {dref:>9.0} ops/s   {raw_name:<26} {raw:>9.0} ops/s   ratio {ratio:>4.2}x ({verdict} target {target:.2}x)"
    );
    println!(
        "{:<30} CPU per op: dref client {:>5.1} µs, server {:>5.1} µs; {raw_name} client {:>5.1} µs, server {:>5.1} µs",
        "", c.dref.client_us, c.dref.server_us, c.raw.client_us, c.raw.server_us
    );
}

/// A cell's figures on the handle whose writes do not share calls, and
/// `gain`, the rate with batching over the rate without.
fn report_off(what: &str, c: Comparison, raw_name: &str, gain: f64) {
    let (dref, raw, ratio) = (c.dref.rate, c.raw.rate, c.ratio);
    println!(
        "{what:<30} dref {dref:>9.0} ops/s   {raw_name:<26} {raw:>9.0} ops/s   ratio {ratio:>4.2}x (batching on: {gain:.2}x this)"
    );
    println!(
        "{:<30} CPU per op: dref client {:>5.1} µs, server {:>5.1} µs",
        "", c.dref.client_us, c.dref.server_us
    );
}

fn main() {
    let server = redis_server::RedisServer::start(&[]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(async { tokio::spawn(run(server.url())).await })
        .expect("benchmark task");
}

async fn run(url: String) {
    let backend = RedisConfig::new(&url).connect().await.expect("connect");
    let ctx = Context::builder()
        .backend(backend)
        .connect()
        .await
        .expect("context");
    // The same on a handle whose writes each make a call of their own (as
    // before writes were batched), for the 64-task cells; in a namespace of
    // its own, so that neither handle receives the other's events.
    let unbatched = RedisConfig::new(&url)
        .prefix("unbatched:")
        .batch_writes(false)
        .connect()
        .await
        .expect("connect");
    let off = Context::builder()
        .backend(unbatched)
        .connect()
        .await
        .expect("context");
    let raw = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    // Reads the server's CPU time between rounds.
    let mut probe = raw.clone();
    let release = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
    );
    let release = Arc::new(release);
    println!(
        "dref on Redis vs raw commands: medians of {ROUNDS} alternating rounds of {RUN:?}, one redis-server on loopback"
    );

    for tasks in [1usize, 64] {
        let mut refs = Vec::new();
        let mut off_refs = Vec::new();
        for t in 0..tasks {
            let id = format!("n{t}");
            refs.push(ctx.make(ManualId::<u64>::new(&id), 0).await.expect("make"));
            let id = format!("m{t}");
            off_refs.push(off.make(ManualId::<u64>::new(&id), 0).await.expect("make"));
        }
        let update = |refs: Vec<dref::DRef<u64>>| {
            let refs = Arc::new(refs);
            move |t: usize| {
                let r = refs[t].clone();
                async move { r.update(|n| n + 1).await.expect("update") }
            }
        };
        let incr = {
            let raw = raw.clone();
            move |t| {
                let mut raw = raw.clone();
                async move {
                    let _: u64 = raw.incr(format!("raw:n{t}"), 1).await.expect("incr");
                }
            }
        };
        let what = format!("update, {tasks} tasks");
        if tasks == 1 {
            // A lone write makes its own call, batching or not.
            let c = compare(tasks, update(refs), incr, &mut probe).await;
            report(&what, c, "INCR", UPDATE_TARGET_ONE_TASK);
        } else {
            let (on, unbatched, gain) =
                compare_batching(tasks, update(refs), update(off_refs), incr, &mut probe).await;
            report(&what, on, "INCR", UPDATE_TARGET_64_TASKS);
            report_off(&format!("{what}, batching off"), unbatched, "INCR", gain);
        }

        let lock = |ctx: &Context, names: &'static str| {
            let ctx = ctx.clone();
            move |t: usize| {
                let ctx = ctx.clone();
                async move {
                    let guard = ctx.acquire(&format!("{names}{t}")).await.expect("acquire");
                    guard.release().await.expect("release");
                }
            }
        };
        let set_nx = {
            let (raw, release) = (raw.clone(), release.clone());
            move |t| {
                let (mut raw, release) = (raw.clone(), release.clone());
                async move {
                    let key = format!("raw:l{t}");
                    let set: Option<String> = redis::cmd("SET")
                        .arg(&key)
                        .arg("holder")
                        .arg("NX")
                        .arg("PX")
                        .arg(5000)
                        .query_async(&mut raw)
                        .await
                        .expect("set nx");
                    assert!(set.is_some());
                    let _: i64 = release
                        .key(&key)
                        .arg("holder")
                        .invoke_async(&mut raw)
                        .await
                        .expect("release");
                }
            }
        };
        let what = format!("lock+release, {tasks} tasks");
        let baseline = "SET NX PX + CAS-delete";
        if tasks == 1 {
            let c = compare(tasks, lock(&ctx, "l"), set_nx, &mut probe).await;
            report(&what, c, baseline, LOCK_TARGET_ONE_TASK);
        } else {
            let (on, unbatched, gain) =
                compare_batching(tasks, lock(&ctx, "l"), lock(&off, "k"), set_nx, &mut probe).await;
            report(&what, on, baseline, LOCK_TARGET_64_TASKS);
            report_off(&format!("{what}, batching off"), unbatched, baseline, gain);
        }
    }

    // For information: 64 tasks contending on one counter (INCR never
    // conflicts; compare-and-set retries).
    let shared = ctx
        .make(ManualId::<u64>::new("shared"), 0)
        .await
        .expect("make");
    let contended = Arc::new(move |_| {
        let r = shared.clone();
        async move { r.update(|n| n + 1).await.expect("update") }
    });
    let mut rounds = Vec::new();
    for _ in 0..3 {
        rounds.push(rate(64, &contended, &mut probe).await.rate);
    }
    let contended = median(rounds);
    println!("update, 64 tasks on one key     dref {contended:>9.0} ops/s   (contended; for information)");
}
