//! dref on the in-memory backend against local baselines doing the same
//! work, measured in one run so that the ratios are comparable.
//!
//! Run with `cargo bench -p dref-bench --bench memory`.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use dref::{Context, DRef, ManualId};

const SINGLE_OPS: u64 = 200_000;
const TASKS: u64 = 8;
const OPS_PER_TASK: u64 = 25_000;
const ROUNDS: usize = 5;

/// Median time per operation over `ROUNDS` runs of `run`, which performs
/// `ops` operations.
async fn per_op<F, Fut>(ops: u64, mut run: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        run().await;
        samples.push(start.elapsed() / ops as u32);
    }
    samples.sort();
    samples[ROUNDS / 2]
}

/// Runs `op` `OPS_PER_TASK` times on each of `TASKS` tasks.
async fn concurrently<F, Fut>(op: F)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                for _ in 0..OPS_PER_TASK {
                    op().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("bench task");
    }
}

fn report(what: &str, dref: Duration, baseline: Duration, baseline_name: &str, target: f64) {
    let ratio = dref.as_secs_f64() / baseline.as_secs_f64();
    let verdict = if ratio <= target { "meets" } else { "MISSES" };
    println!(
        "{what:<28} dref {:>9.1} ns/op   {baseline_name:<22} {:>8.1} ns/op   ratio {ratio:>5.2}x  ({verdict} target {target}x)",
        dref.as_nanos() as f64,
        baseline.as_nanos() as f64,
    );
}

/// The row `what`: one task's `update(|n| n + 1)` on `counter` against
/// its `*mutex.lock().await += 1`.
async fn single_task_updates(what: &str, counter: &DRef<u64>, mutex: &tokio::sync::Mutex<u64>) {
    let dref = per_op(SINGLE_OPS, || async {
        for _ in 0..SINGLE_OPS {
            counter.update(|n| n + 1).await.expect("update");
        }
    })
    .await;
    let locked = per_op(SINGLE_OPS, || async {
        for _ in 0..SINGLE_OPS {
            *mutex.lock().await += 1;
        }
    })
    .await;
    report(what, dref, locked, "tokio Mutex", 3.0);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Measure on a worker thread, where application tasks run (the thread
    // inside `block_on` is not a worker: every wake from it goes through the
    // injection queue).
    runtime
        .block_on(async { tokio::spawn(run()).await })
        .expect("benchmark task");
}

async fn run() {
    {
        let ctx = Context::local();
        let counter = ctx
            .make(ManualId::<u64>::new("bench-counter"), 0)
            .await
            .expect("make");
        let mutex = Arc::new(tokio::sync::Mutex::new(0u64));
        let rwlock = Arc::new(RwLock::new(0u64));

        println!("dref in-memory benchmark: median of {ROUNDS} rounds, 2 worker threads");

        // update, one task
        single_task_updates("update, 1 task", &counter, &mutex).await;

        // update, one task, through a context that holds a session (as
        // `connect()` makes, and as locks and elections need): a live
        // lease on the store.
        let connected = Context::builder().connect().await.expect("connect");
        let session_counter = connected
            .make(ManualId::<u64>::new("bench-session-counter"), 0)
            .await
            .expect("make");
        let session_mutex = tokio::sync::Mutex::new(0u64);
        single_task_updates("update, 1 task, session", &session_counter, &session_mutex).await;
        assert_eq!(
            session_counter.get().await.expect("get"),
            *session_mutex.lock().await
        );

        // update, 8 tasks
        let total = TASKS * OPS_PER_TASK;
        let dref_update8 = per_op(total, || {
            let counter = counter.clone();
            concurrently(move || {
                let counter = counter.clone();
                async move { counter.update(|n| n + 1).await.expect("update") }
            })
        })
        .await;
        let mutex_update8 = per_op(total, || {
            let mutex = mutex.clone();
            concurrently(move || {
                let mutex = mutex.clone();
                async move { *mutex.lock().await += 1 }
            })
        })
        .await;
        report(
            "update, 8 tasks",
            dref_update8,
            mutex_update8,
            "tokio Mutex",
            3.0,
        );

        // linearizable get and local peek, one task
        let dref_get = per_op(SINGLE_OPS, || async {
            for _ in 0..SINGLE_OPS {
                std::hint::black_box(counter.get().await.expect("get"));
            }
        })
        .await;
        let dref_peek = per_op(SINGLE_OPS, || async {
            for _ in 0..SINGLE_OPS {
                std::hint::black_box(counter.peek());
            }
        })
        .await;
        let rwlock_read = per_op(SINGLE_OPS, || async {
            for _ in 0..SINGLE_OPS {
                std::hint::black_box(*rwlock.read().expect("read"));
            }
        })
        .await;
        report(
            "get, 1 task",
            dref_get,
            rwlock_read,
            "std RwLock read",
            f64::INFINITY,
        );
        report(
            "peek, 1 task",
            dref_peek,
            rwlock_read,
            "std RwLock read",
            2.0,
        );

        // peek and get, 8 tasks
        let dref_peek8 = per_op(total, || {
            let counter = counter.clone();
            concurrently(move || {
                let counter = counter.clone();
                async move {
                    std::hint::black_box(counter.peek());
                }
            })
        })
        .await;
        let rwlock_read8 = per_op(total, || {
            let rwlock = rwlock.clone();
            concurrently(move || {
                let rwlock = rwlock.clone();
                async move {
                    std::hint::black_box(*rwlock.read().expect("read"));
                }
            })
        })
        .await;
        report(
            "peek, 8 tasks",
            dref_peek8,
            rwlock_read8,
            "std RwLock read",
            2.0,
        );
        assert_eq!(counter.get().await.expect("get"), *mutex.lock().await);
    }
}
