//! A throttled job: the daily report runs on one node at a time across the
//! cluster, guarded by a lock whose fencing token is handed to the job.
//!
//! Run with `cargo run -p dref-examples --example throttled_job`.

use std::time::Duration;

use dref::{current_fencing_token, Context, MemoryBackend};

async fn generate_report(node: &str) {
    let token = current_fencing_token().expect("inside the lock");
    println!("{node}: generating report (fencing token {token})...");
    tokio::time::sleep(Duration::from_millis(50)).await;
    println!("{node}: report done");
}

#[tokio::main]
async fn main() -> dref::Result<()> {
    let store = MemoryBackend::new();
    let nodes: Vec<Context> = ["node-a", "node-b"]
        .into_iter()
        .map(|id| {
            Context::builder()
                .backend(store.clone())
                .node_id(id)
                .build()
        })
        .collect();

    // Both nodes start the job at once: the second waits for the first.
    let mut runs = Vec::new();
    for ctx in &nodes {
        let ctx = ctx.clone();
        runs.push(tokio::spawn(async move {
            ctx.lock("daily-report", generate_report(ctx.node_id()))
                .await
        }));
    }
    for run in runs {
        run.await.expect("job task")?;
    }

    // Or fail fast when another node is already running it.
    let _running = nodes[0].acquire("daily-report").await?;
    match nodes[1]
        .try_lock("daily-report", generate_report("node-b"))
        .await
    {
        Err(dref::Error::LockBusy { .. }) => println!("node-b: report already running, skipped"),
        other => panic!("expected the lock to be busy, got {other:?}"),
    }
    Ok(())
}
