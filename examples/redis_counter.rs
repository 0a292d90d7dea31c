//! Two nodes on one Redis share a counter and a lock.
//!
//! Run against your Redis with
//! `DREF_REDIS_URL=redis://127.0.0.1:6379/0 cargo run -p dref-examples --example redis_counter`.

use dref::{current_fencing_token, Context, ManualId};
use dref_backends::redis::RedisConfig;

#[tokio::main]
async fn main() -> dref::Result<()> {
    // Two handles, as two service instances would have.
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b"] {
        let backend = RedisConfig::from_env()?
            .prefix("dref-example:")
            .connect()
            .await?;
        nodes.push(
            Context::builder()
                .backend(backend)
                .node_id(name)
                .connect()
                .await?,
        );
    }

    let mut tasks = Vec::new();
    for ctx in &nodes {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let visits = ctx.make(ManualId::<u64>::new("visits"), 0).await?;
            for _ in 0..50 {
                visits.update(|n| n + 1).await?;
            }
            // One node at a time prints the report.
            ctx.lock("report", async {
                let token = current_fencing_token().expect("inside the lock");
                println!(
                    "{}: {} visits so far (token {token})",
                    ctx.node_id(),
                    visits.get().await?
                );
                Ok::<_, dref::Error>(())
            })
            .await??;
            Ok::<_, dref::Error>(visits)
        }));
    }
    let mut last = None;
    for task in tasks {
        last = Some(task.await.expect("node task")?);
    }
    if let Some(visits) = last {
        let total = visits.get().await?;
        println!("total: {total}");
        // Other runs against the same Redis add to the same counter.
        assert!(total >= 100 && total % 100 == 0, "lost updates: {total}");
        visits.delete().await?;
    }
    Ok(())
}
