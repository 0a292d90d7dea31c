//! The throttled job with `#[dref::lock]`: the daily report runs on one
//! node at a time across the cluster; the attribute takes the lock around
//! the body, hands it the fencing token and converts a busy, timed out or
//! lost lock into the function's own error type.
//!
//! Run with `cargo run -p dref-examples --example throttled_job_attr`.

use std::time::Duration;

use dref::{current_fencing_token, Context, MemoryBackend};

#[derive(Debug)]
enum ReportError {
    Lock(dref::Error),
}

impl From<dref::Error> for ReportError {
    fn from(e: dref::Error) -> Self {
        ReportError::Lock(e)
    }
}

/// Runs through the ambient context of the calling task
/// (`Context::scope`, or `Context::set_default` at startup).
#[dref::lock("daily-report")]
async fn daily_report(node: &str) -> Result<u64, ReportError> {
    let token = current_fencing_token().map_or(0, |t| t.0);
    println!("{node}: generating report (fencing token {token})...");
    tokio::time::sleep(Duration::from_millis(50)).await;
    println!("{node}: report done");
    Ok(token)
}

/// Fails fast when another node is already running the report; takes the
/// context from its parameter.
#[dref::lock("daily-report", try)]
async fn daily_report_if_idle(ctx: &Context) -> Result<(), ReportError> {
    println!("{}: report ran", ctx.node_id());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), ReportError> {
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
        let node = ctx.node_id().to_owned();
        runs.push(tokio::spawn(
            ctx.clone().scope(async move { daily_report(&node).await }),
        ));
    }
    let mut tokens = Vec::new();
    for run in runs {
        tokens.push(run.await.expect("job task")?);
    }
    println!("fencing tokens of the two runs: {tokens:?}");

    // While node a holds the lock, node b skips the report.
    let running = nodes[0].acquire("daily-report").await?;
    match daily_report_if_idle(&nodes[1]).await {
        Err(ReportError::Lock(dref::Error::LockBusy { .. })) => {
            println!("node-b: report already running, skipped")
        }
        other => panic!("expected the lock to be busy, got {other:?}"),
    }
    running.release().await?;
    daily_report_if_idle(&nodes[1]).await?;
    Ok(())
}
