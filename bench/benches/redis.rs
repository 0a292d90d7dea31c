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

const RUN: Duration = Duration::from_secs(3);

/// Operations per second of `tasks` tasks each running `op(task)` in a loop.
async fn rate<F, Fut>(tasks: usize, op: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
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

fn report(what: &str, dref: f64, raw: f64, raw_name: &str, target: f64) {
    let ratio = dref / raw;
    let verdict = if ratio >= target { "meets" } else { "MISSES" };
    println!(
        "{what:<30} dref {dref:>9.0} ops/s   {raw_name:<26} {raw:>9.0} ops/s   ratio {ratio:>4.2}x ({verdict} target {target}x)"
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
    println!("dref on Redis vs raw commands: {RUN:?} per figure, one redis-server on loopback");

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
        let dref_update = {
            let refs = refs.clone();
            rate(tasks, move |t| {
                let r = refs[t].clone();
                async move { r.update(|n| n + 1).await.expect("update") }
            })
            .await
        };
        let incr = {
            let raw = raw.clone();
            rate(tasks, move |t| {
                let mut raw = raw.clone();
                async move {
                    let _: u64 = raw.incr(format!("raw:n{t}"), 1).await.expect("incr");
                }
            })
            .await
        };
        report(
            &format!("update, {tasks} tasks"),
            dref_update,
            incr,
            "INCR",
            0.7,
        );

        let dref_lock = {
            let ctx = ctx.clone();
            rate(tasks, move |t| {
                let ctx = ctx.clone();
                async move {
                    let guard = ctx.acquire(&format!("l{t}")).await.expect("acquire");
                    guard.release().await.expect("release");
                }
            })
            .await
        };
        let plain_lock = {
            let (raw, release) = (raw.clone(), release.clone());
            rate(tasks, move |t| {
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
            })
            .await
        };
        report(
            &format!("lock+release, {tasks} tasks"),
            dref_lock,
            plain_lock,
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
    let contended = rate(64, move |_| {
        let r = shared.clone();
        async move { r.update(|n| n + 1).await.expect("update") }
    })
    .await;
    println!("update, 64 tasks on one key     dref {contended:>9.0} ops/s   (contended; for information)");
}
