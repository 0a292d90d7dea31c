//! Networked backends for dref. Each backend sits behind its own cargo
//! feature and implements [`dref::engine::Backend`]:
//!
//! - `redis`: the `redis` module, for an existing Redis deployment.
//! - `raft`: the `raft` module, an embedded consensus cluster: every
//!   service instance runs a node, no external server.

#![warn(missing_docs)]

#[cfg(feature = "raft")]
pub mod raft;
#[cfg(feature = "redis")]
pub mod redis;

/// The README's examples, compiled and run as doc tests (they use the
/// Redis backend).
#[cfg(all(doctest, feature = "redis"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
