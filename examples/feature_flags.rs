//! Feature flags: toggles and rollout percentages pushed to every node
//! without a redeploy, the seed's flags recipe with field-level events.
//!
//! `#[distributed]` stores each field separately: a node that changes the
//! rollout writes only `rollout`, every subscriber gets one `Rollout` event,
//! and two operators changing different flags at once never conflict.
//!
//! Run with `cargo run -p dref-examples --example feature_flags`.

use dref::{distributed, ChangeKind, Context, MemoryBackend};
use futures_util::StreamExt;

#[distributed(id = "flags")]
#[derive(Clone, Debug, PartialEq)]
struct Flags {
    beta_feature: bool,
    rollout: u8,
}

#[tokio::main]
async fn main() -> dref::Result<()> {
    // Two nodes of one cluster (one in-memory store stands in for it).
    let store = MemoryBackend::new();
    let node_a = Context::builder()
        .backend(store.clone())
        .node_id("a")
        .build();
    let node_b = Context::builder()
        .backend(store.clone())
        .node_id("b")
        .build();

    let initial = Flags {
        beta_feature: false,
        rollout: 0,
    };
    let flags_a = node_a.make(Flags::default_id(), initial.clone()).await?;
    let flags_b = node_b.make(Flags::default_id(), initial).await?;

    // Node b listens: one event per changed field.
    let mut events = flags_b.changes();

    // The seed's recipe: set the whole value. Both fields change: two
    // events, `BetaFeature(true)` and `Rollout(5)`, of one commit.
    flags_a
        .set(Flags {
            beta_feature: true,
            rollout: 5,
        })
        .await?;
    // Field handles write one field: one `Rollout` event each.
    flags_a.rollout().update(|r| r.saturating_mul(5)).await?;
    flags_b.rollout().set(50).await?;

    for _ in 0..4 {
        let Some(change) = events.next().await else {
            break;
        };
        match change?.kind {
            ChangeKind::Updated(FlagsChange::BetaFeature(on)) => {
                println!("node b: beta feature {}", if on { "on" } else { "off" })
            }
            ChangeKind::Updated(FlagsChange::Rollout(percent)) => {
                println!("node b: rollout now {percent}%")
            }
            other => println!("node b: {other:?}"),
        }
    }

    // Hot-path checks read the local copy: no round trip.
    let serve_beta = |user_id: u32| {
        flags_b
            .peek()
            .is_some_and(|f| f.beta_feature && user_id % 100 < u32::from(f.rollout))
    };
    println!(
        "user 7 gets the beta: {}, user 77 gets the beta: {}",
        serve_beta(7),
        serve_beta(77)
    );

    // Reads through the store are linearizable.
    let now = flags_a.get().await?;
    println!("flags: {now:?}");
    assert_eq!(
        now,
        Flags {
            beta_feature: true,
            rollout: 50,
        }
    );
    Ok(())
}
