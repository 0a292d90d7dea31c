//! Shared metrics: every node updates one cluster-wide counter atomically
//! and every node can display the same figure.
//!
//! Run with `cargo run -p dref-examples --example metrics`.

use std::time::Duration;

use dref::{Context, ManualId, MemoryBackend};

#[tokio::main]
async fn main() -> dref::Result<()> {
    let store = MemoryBackend::new();
    let nodes: Vec<Context> = (0..3)
        .map(|_| Context::builder().backend(store.clone()).build())
        .collect();

    let mut tasks = Vec::new();
    for (i, ctx) in nodes.iter().enumerate() {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let active_users = ctx.make(ManualId::<i64>::new("active-users"), 0).await?;
            // A few reporting rounds (the seed repeats every 5 seconds).
            for round in 0..5 {
                active_users.update(|n| n + 1).await?;
                let current = active_users.get().await?;
                println!("node {i}, round {round}: active users = {current}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<_, dref::Error>(())
        }));
    }
    for task in tasks {
        task.await.expect("node task")?;
    }
    let total = nodes[0]
        .make(ManualId::<i64>::new("active-users"), 0)
        .await?
        .get()
        .await?;
    println!("final: {total}");
    assert_eq!(total, 15);
    Ok(())
}
