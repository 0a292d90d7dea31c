//! Helpers shared by integration tests.

pub mod proxy;
pub mod redis_server;
