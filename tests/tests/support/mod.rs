//! Helpers shared by integration tests.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

pub mod check;
pub mod nemesis;
pub mod netns;
pub mod nodes;
pub mod pki;
pub mod proxy;
pub mod raft_cluster;
pub mod redis_server;
pub mod tool;

/// Logs the library's events when `DREF_TEST_LOG` is set to a filter such
/// as `dref=debug,dref_backends=debug`, through the test harness's capture
/// (so only a failing test's log is printed): for diagnosing a flaky test.
pub fn log_from_env() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let Ok(filter) = std::env::var("DREF_TEST_LOG") else {
            return;
        };
        let filter: tracing_subscriber::filter::Targets = match filter.parse() {
            Ok(filter) => filter,
            Err(e) => panic!("DREF_TEST_LOG={filter:?} is not a filter: {e}"),
        };
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_ansi(false),
            )
            .with(filter)
            .init();
    });
}
