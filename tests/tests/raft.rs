//! The conformance suite on the Raft backend: real nodes talking gRPC over
//! loopback, a fresh cluster per test case.

mod support;

use support::raft_cluster::RaftHarness;

/// One node: the whole contract on a cluster of one.
mod one_node {
    use super::*;

    dref_tests::conformance_suite!(|| RaftHarness::new(1));
}

/// Three nodes, the test's contexts spread over all three.
mod three_nodes {
    use super::*;

    dref_tests::conformance_suite!(|| RaftHarness::new(3));
}
