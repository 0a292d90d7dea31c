//! Networked backends for dref. Each backend sits behind its own cargo
//! feature and implements [`dref::engine::Backend`]:
//!
//! - `redis`: the `redis` module, for an existing Redis deployment.
//!
//! The embedded Raft backend (`raft`) is planned and not part of this
//! release.

#[cfg(feature = "redis")]
pub mod redis;

/// The README's examples, compiled and run as doc tests (they use the
/// Redis backend).
#[cfg(all(doctest, feature = "redis"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
