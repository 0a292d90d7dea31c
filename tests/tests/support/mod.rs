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
