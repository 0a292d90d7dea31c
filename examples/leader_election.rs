//! Leader election: three workers campaign for one role; one leads, the
//! others wait hot, and when the leader dies the next one takes over.
//!
//! Run with `cargo run -p dref-examples --example leader_election`.

use std::time::Duration;

use dref::{Context, MemoryBackend};
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> dref::Result<()> {
    // Three nodes on one store; with Redis or Raft these are three processes.
    let store = MemoryBackend::new();
    let node = |name: &str| {
        Context::builder()
            .backend(store.clone())
            .node_id(name)
            .session_ttl(Duration::from_secs(1))
            .build()
    };
    let workers = [node("worker-a"), node("worker-b"), node("worker-c")];

    // Anyone can watch who leads.
    let mut leaders = workers[0].observe("partition-7");
    let watcher = tokio::spawn(async move {
        let mut terms = 0;
        while let Some(leader) = leaders.next().await {
            match leader? {
                Some(l) => {
                    println!("leader is now {} (term token {})", l.node_id, l.token);
                    terms += 1;
                    if terms == workers_len() {
                        break;
                    }
                }
                None => println!("no leader"),
            }
        }
        Ok::<_, dref::Error>(())
    });

    let mut campaigns = Vec::new();
    for ctx in &workers {
        let ctx = ctx.clone();
        campaigns.push(tokio::spawn(async move {
            let leadership = ctx.campaign("partition-7").await?;
            println!("{} claimed leadership", ctx.node_id());
            // Do the leader's work for a while, then die (the context shuts
            // down, as when the process exits): the next candidate takes over.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                lost = leadership.lost() => return Err(lost),
            }
            ctx.shutdown().await?;
            Ok::<_, dref::Error>(())
        }));
    }
    for campaign in campaigns {
        campaign.await.expect("campaign task")?;
    }
    watcher.await.expect("watcher task")?;
    Ok(())
}

fn workers_len() -> usize {
    3
}
