//! The backend conformance suite of dref, and helpers for integration tests.
//!
//! Every backend runs the same cases, written once against the public API
//! and generic over a [`Harness`] that hands out backend handles on one
//! shared store (one handle per simulated node):
//!
//! ```no_run
//! // In a test file: one `#[tokio::test]` per case of the suite.
//! mod memory {
//!     dref_tests::conformance_suite!(|| async { dref_tests::MemoryHarness::new() });
//! }
//! # fn main() {}
//! ```

#![warn(missing_docs)]

pub mod check;
pub mod conformance;
pub mod faults;
mod harness;
pub mod nemesis;
pub mod os;
pub mod scratch;

pub use conformance::poll_then_drop;
pub use harness::{Harness, MemoryHarness, Node};

/// Generous upper bound for waiting on an event in tests: conditions are
/// awaited, never slept for, and this only bounds a hung test. (The
/// slowest honest wait is 4000 contended updates through a three-node Raft
/// cluster in a debug build on a loaded two-core machine: about 25 s.)
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(90);

/// Awaits `fut`, failing the test with `what` if it takes longer than
/// [`PATIENCE`].
pub async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {PATIENCE:?} waiting for {what}"),
    }
}

/// Waits until `condition` holds, checking every 20 ms, within
/// [`PATIENCE`].
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Retries `op` while the store is unreachable (a restart, a cut link, an
/// election), within [`PATIENCE`]; any other error fails the test.
pub async fn eventually<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = dref::Result<T>>,
{
    within(what, async {
        loop {
            match op().await {
                Ok(v) => return v,
                Err(e) if e.is_transient() => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await
                }
                Err(e) => panic!("{what}: {e}"),
            }
        }
    })
    .await
}
