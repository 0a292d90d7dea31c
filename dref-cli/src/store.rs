//! The store the tool talks to: a Redis server, or any node of a Raft
//! cluster (as a client that never joins).

use dref::engine::{Backend, Key, Listing, PrefixStream, Record, WatchStream, Write, WriteOutcome};
use dref::Result;
use dref_backends::raft::RaftClient;
use dref_backends::redis::RedisBackend;

use crate::Failure;

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

    /// The backend to watch through: a Raft node streams no changes to
    /// clients that are not nodes (yet).
    fn watchable(&self) -> std::result::Result<&RedisBackend, Failure> {
        match self {
            Store::Redis(redis) => Ok(redis),
            Store::Raft(_) => Err(Failure::usage(
                "`watch` needs --redis: Raft nodes do not stream changes to outside clients yet",
            )),
        }
    }

    pub async fn watch(&self, key: Key, since: u64) -> std::result::Result<WatchStream, Failure> {
        Ok(self.watchable()?.watch(key, Some(since)).await?)
    }

    pub async fn watch_prefix(
        &self,
        prefix: String,
        since: u64,
    ) -> std::result::Result<PrefixStream, Failure> {
        Ok(self.watchable()?.watch_prefix(prefix, Some(since)).await?)
    }
}
