//! The store the tool talks to: a Redis server, or any node of a Raft
//! cluster (as a client that never joins).

use dref::engine::{Backend, Key, Listing, PrefixStream, Record, Write, WriteOutcome};
use dref::Result;
use dref_backends::raft::RaftClient;
use dref_backends::redis::RedisBackend;

/// A Redis server, or a Raft cluster through one of its nodes.
pub enum Store {
    Redis(RedisBackend),
    Raft(RaftClient),
}

impl Store {
    pub async fn read(&self, key: &Key) -> Result<Option<Record>> {
        match self {
            Store::Redis(redis) => redis.read(key.clone()).await,
            Store::Raft(raft) => raft.read(key).await,
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Listing> {
        match self {
            Store::Redis(redis) => redis.list(prefix.to_owned()).await,
            Store::Raft(raft) => raft.list(prefix).await,
        }
    }

    pub async fn write(&self, write: Write) -> Result<WriteOutcome> {
        match self {
            Store::Redis(redis) => redis.write(write).await,
            Store::Raft(raft) => raft.write(&write).await,
        }
    }

    /// Every commit under `prefix` after `since`.
    pub async fn watch_prefix(&self, prefix: String, since: u64) -> Result<PrefixStream> {
        match self {
            Store::Redis(redis) => redis.watch_prefix(prefix, Some(since)).await,
            Store::Raft(raft) => raft.watch_prefix(&prefix, Some(since)).await,
        }
    }
}
