//! Hot keys: many tasks updating one counter, on every backend, with the
//! ref layer's combining of concurrent updates on and off, in one run.
//!
//! - memory: 64 tasks on one `DRef<u64>` against 64 tasks on one
//!   `tokio::sync::Mutex<u64>`;
//! - Redis (one private redis-server): 64 tasks on one key through one
//!   handle, and 16 tasks on each of three handles, against the same with
//!   combining off (`combine_updates(false)`: every update its own
//!   compare-and-set write), with raw `INCR` for scale;
//! - Raft (three in-memory nodes on loopback): 64 tasks on one key through
//!   one node, and 16 tasks on each of the three nodes, against the same
//!   with combining off.
//!
//! Each figure is the median of alternating rounds, so that a drift in the
//! machine's speed hits both sides. Run with
//! `cargo bench -p dref-bench --bench hot_keys`.

#[path = "../../tests/tests/support/redis_server.rs"]
mod redis_server;

use std::future::Future;
use std::sync::Arc;

use dref::engine::Backend;
use dref::{Context, DRef, ManualId};
use dref_backends::redis::RedisConfig;
use dref_bench::cluster::{load_average, start_raft};
use dref_bench::rates::{compare, rate, ROUNDS, RUN};
use redis::AsyncCommands;

/// One row: `what`, both sides' rates and their ratio, and the verdict on
/// `target` (a minimum rate of the first side and a minimum ratio).
fn report(what: &str, (a, b, ratio): (f64, f64, f64), b_name: &str, target: (f64, f64)) {
    let (min_rate, min_ratio) = target;
    let verdict = if a >= min_rate && ratio >= min_ratio {
        "meets"
    } else {
        "MISSES"
    };
    println!(
        "{what:<44} {a:>9.0} ops/s | {b_name:<18} {b:>9.0} ops/s | ratio {ratio:>6.2}x | {verdict} target >= {min_rate:.0} ops/s and >= {min_ratio:.2}x"
    );
}

/// One counter per context, all on the same key.
async fn counters(contexts: &[Context], key: &str) -> Vec<DRef<u64>> {
    let mut refs = Vec::new();
    for ctx in contexts {
        refs.push(ctx.make(ManualId::<u64>::new(key), 0).await.expect("make"));
    }
    refs
}

/// An increment by task `t` of one of `refs` (task `t` uses `t % len`).
fn increments(
    refs: Vec<DRef<u64>>,
) -> impl Fn(usize) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static {
    move |t| {
        let r = refs[t % refs.len()].clone();
        Box::pin(async move { r.update(|n| n + 1).await.expect("update") })
    }
}

fn contexts(backends: &[Arc<dyn Backend>], combine: bool) -> Vec<Context> {
    backends
        .iter()
        .map(|b| {
            Context::builder()
                .backend_arc(b.clone())
                .combine_updates(combine)
                .build()
        })
        .collect()
}

/// The combined-against-separate rows of one backend: 64 tasks through the
/// first handle, then 16 on each handle.
async fn combined_vs_separate(
    name: &str,
    backends: &[Arc<dyn Backend>],
    min_rate_one: f64,
    min_ratio_many: f64,
) {
    let one = &backends[..1];
    let key = format!("{name}-one");
    let combined = counters(&contexts(one, true), &key).await;
    let separate = counters(&contexts(one, false), &key).await;
    let figures = compare(64, increments(combined), increments(separate)).await;
    report(
        &format!("{name}: 64 tasks, one key, one handle"),
        figures,
        "combining off",
        (min_rate_one, 1.0),
    );
    let key = format!("{name}-many");
    let combined = counters(&contexts(backends, true), &key).await;
    let separate = counters(&contexts(backends, false), &key).await;
    let tasks = 16 * backends.len();
    let figures = compare(tasks, increments(combined), increments(separate)).await;
    report(
        &format!("{name}: {} handles x 16 tasks, one key", backends.len()),
        figures,
        "combining off",
        (0.0, min_ratio_many),
    );
}

fn main() {
    let redis = redis_server::RedisServer::start(&[]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    runtime
        .block_on(async { tokio::spawn(run(redis.url())).await })
        .expect("the benchmark task panicked");
}

async fn run(redis_url: String) {
    println!("load average at start: {}", load_average());
    println!("medians of {ROUNDS} alternating rounds of {RUN:?}, 2 worker threads");

    // Memory: the store answers at once, so nothing is ever in flight and
    // updates do not combine; the comparison is with a local lock. Both
    // sides are plain closures: `increments` boxes each future, an
    // allocation per update that the lock's side would not pay (it cost
    // dref a third of this row's rate).
    let ctx = Context::local();
    let counter = ctx
        .make(ManualId::<u64>::new("memory"), 0)
        .await
        .expect("make");
    let updated = move |_| {
        let counter = counter.clone();
        async move { counter.update(|n| n + 1).await.expect("update") }
    };
    let mutex = Arc::new(tokio::sync::Mutex::new(0u64));
    let locked = move |_| {
        let mutex = mutex.clone();
        async move { *mutex.lock().await += 1 }
    };
    let figures = compare(64, updated, locked).await;
    report(
        "memory: 64 tasks, one key",
        figures,
        "tokio Mutex",
        (0.0, 0.5),
    );

    // Redis.
    let mut backends: Vec<Arc<dyn Backend>> = Vec::new();
    for _ in 0..3 {
        let backend = RedisConfig::new(&redis_url)
            .connect()
            .await
            .expect("connect to redis");
        backends.push(Arc::new(backend));
    }
    let raw = redis::Client::open(redis_url.as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw redis connection");
    let incr = Arc::new(move |_| {
        let mut raw = raw.clone();
        async move {
            let _: u64 = raw.incr("raw:hot", 1).await.expect("INCR");
        }
    });
    println!(
        "redis: raw INCR on one key, 64 tasks: {:.0} ops/s",
        rate(64, &incr).await
    );
    combined_vs_separate("redis", &backends, 50_000.0, 10.0).await;
    let figures = compare(
        64,
        increments(counters(&contexts(&backends[..1], true), "redis-vs-incr").await),
        move |t| {
            let incr = incr.clone();
            async move { incr(t).await }
        },
    )
    .await;
    report(
        "redis: 64 tasks, one key, vs INCR",
        figures,
        "INCR",
        (50_000.0, 0.0),
    );

    // Raft.
    let nodes = start_raft(None, None).await;
    let leader = nodes[0].leader();
    println!(
        "raft: 3 in-memory nodes, clients of the one-handle rows on node 0 (leader: {})",
        leader.as_deref().unwrap_or("unknown")
    );
    let backends: Vec<Arc<dyn Backend>> = nodes
        .iter()
        .map(|n| Arc::new(n.clone()) as Arc<dyn Backend>)
        .collect();
    combined_vs_separate("raft", &backends, 15_000.0, 10.0).await;
    println!("load average at end: {}", load_average());
}
