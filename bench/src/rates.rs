//! Throughput of a loop of operations: tasks running one operation over
//! and over for a round, and two such loops compared in alternating rounds.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Length of one measured round.
pub const RUN: Duration = Duration::from_secs(1);
/// Rounds per figure.
pub const ROUNDS: usize = 5;

/// Operations per second of `tasks` tasks each running `op(task)` in a
/// loop for one round.
pub async fn rate<F, Fut>(tasks: usize, op: &Arc<F>) -> f64
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
        h.await.expect("a benchmark task panicked");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Median rates of `a` and `b` over alternating rounds, and the median of
/// the per-round ratios a/b.
pub async fn compare<A, AF, B, BF>(tasks: usize, a: A, b: B) -> (f64, f64, f64)
where
    A: Fn(usize) -> AF + Send + Sync + 'static,
    AF: Future<Output = ()> + Send,
    B: Fn(usize) -> BF + Send + Sync + 'static,
    BF: Future<Output = ()> + Send,
{
    let (a, b) = (Arc::new(a), Arc::new(b));
    let (mut ra, mut rb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let x = rate(tasks, &a).await;
        let y = rate(tasks, &b).await;
        ra.push(x);
        rb.push(y);
        ratios.push(x / y);
    }
    (median(ra), median(rb), median(ratios))
}
