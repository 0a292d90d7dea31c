//! dref on Redis against raw Redis commands doing the same job, in one run
//! against one private redis-server.
//!
//! - `update` of a `u64` vs `INCR` (one round trip each when uncontended);
//! - lock acquire + release vs `SET NX PX` + a compare-and-delete script.
//!
//! Each task works on its own key (the contended case is printed too), at
//! concurrency 1 and 64. Run with `cargo bench -p dref-bench --bench redis`.

#[path = "../../tests/tests/support/redis_server.rs"]
mod redis_server;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dref::{Context, ManualId};
use dref_backends::redis::RedisConfig;
use redis::AsyncCommands;

/// Length of one measured round.
const RUN: Duration = Duration::from_secs(1);
/// Rounds per figure: dref and the baseline alternate round by round, so a
/// drift in the machine's speed hits both, and the medians are reported.
const ROUNDS: usize = 5;

/// Operations per second of `tasks` tasks each running `op(task)` in a loop
/// for one round.
async fn rate<F, Fut>(tasks: usize, op: &Arc<F>) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
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
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Median rates of `dref` and `raw` over alternating rounds, and the
/// median of the per-round ratios.
async fn compare<D, DF, R, RF>(tasks: usize, dref: D, raw: R) -> (f64, f64, f64)
where
    D: Fn(usize) -> DF + Send + Sync + 'static,
    DF: Future<Output = ()> + Send,
    R: Fn(usize) -> RF + Send + Sync + 'static,
    RF: Future<Output = ()> + Send,
{
    let (dref, raw) = (Arc::new(dref), Arc::new(raw));
    let (mut d, mut r, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let dref_rate = rate(tasks, &dref).await;
        let raw_rate = rate(tasks, &raw).await;
        d.push(dref_rate);
        r.push(raw_rate);
        ratios.push(dref_rate / raw_rate);
    }
    (median(d), median(r), median(ratios))
}

fn report(what: &str, (dref, raw, ratio): (f64, f64, f64), raw_name: &str, target: f64) {
    let verdict = if ratio >= target { "meets" } else { "MISSES" };
    println!(
        "{what:<30} dref {dref:>9.0} ops/s   {raw_name:<26} {raw:>9.0} ops/s   ratio {ratio:>4.2}x ({verdict} target {target:.2}x)"
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
    let raw = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let release = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
    );
    let release = Arc::new(release);
    println!(
        "dref on Redis vs raw commands: medians of {ROUNDS} alternating rounds of {RUN:?}, one redis-server on loopback"
    );

    for tasks in [1usize, 64] {
        let mut refs = Vec::new();
        for t in 0..tasks {
            refs.push(
                ctx.make(ManualId::<u64>::new(format!("n{t}")), 0)
                    .await
                    .expect("make"),
            );
        }
        let refs = Arc::new(refs);
        let update = compare(
            tasks,
            {
                let refs = refs.clone();
                move |t| {
                    let r = refs[t].clone();
                    async move { r.update(|n| n + 1).await.expect("update") }
                }
            },
            {
                let raw = raw.clone();
                move |t| {
                    let mut raw = raw.clone();
                    async move {
                        let _: u64 = raw.incr(format!("raw:n{t}"), 1).await.expect("incr");
                    }
                }
            },
        )
        .await;
        report(&format!("update, {tasks} tasks"), update, "INCR", 0.7);

        let lock = compare(
            tasks,
            {
                let ctx = ctx.clone();
                move |t| {
                    let ctx = ctx.clone();
                    async move {
                        let guard = ctx.acquire(&format!("l{t}")).await.expect("acquire");
                        guard.release().await.expect("release");
                    }
                }
            },
            {
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
            },
        )
        .await;
        report(
            &format!("lock+release, {tasks} tasks"),
            lock,
            "SET NX PX + CAS-delete",
            1.0 / 1.2,
        );
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
    let contended = median(vec![
        rate(64, &contended).await,
        rate(64, &contended).await,
        rate(64, &contended).await,
    ]);
    println!("update, 64 tasks on one key     dref {contended:>9.0} ops/s   (contended; for information)");
}
