//! Networked backends for dref. Each backend sits behind its own cargo
//! feature and implements [`dref::engine::Backend`]:
//!
//! - `redis`: the `redis` module, for an existing Redis deployment.
//! - `raft`: the `raft` module, an embedded consensus cluster: every
//!   service instance runs a node, no external server.

// Feature badges on docs.rs, which builds the docs with nightly and
// `--cfg docsrs` (see `[package.metadata.docs.rs]`).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

#[cfg(feature = "raft")]
#[cfg_attr(docsrs, doc(cfg(feature = "raft")))]
pub mod raft;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

/// The README's examples, compiled and run as doc tests (they use the
/// Redis backend).
#[cfg(all(doctest, feature = "redis"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
