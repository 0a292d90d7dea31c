//! The quick start: make a shared counter, update it, read it back.
//!
//! Run with `cargo run -p dref-examples --example quickstart`.

use dref::{Context, ManualId};

#[tokio::main]
async fn main() -> dref::Result<()> {
    // An in-memory store; swap in a Redis or Raft context to go multi-node.
    let ctx = Context::local();
    let counter = ctx.make(ManualId::<i64>::new("counter"), 0).await?;
    counter.update(|n| n + 1).await?;
    let value = counter.get().await?;
    println!("Current value: {value}");
    assert_eq!(value, 1);
    Ok(())
}
