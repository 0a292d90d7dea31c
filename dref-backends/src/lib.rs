//! Networked backends for dref. Each backend sits behind its own cargo
//! feature and implements [`dref::engine::Backend`]:
//!
//! - `redis`: [`redis`] module, for an existing Redis deployment;
//! - `raft`: [`raft`] module, an embedded Raft cluster (openraft over tonic).

#[cfg(feature = "redis")]
pub mod redis;

#[cfg(feature = "raft")]
pub mod raft;
