//! openraft's storage suite (`openraft::testing::Suite`), against the
//! in-memory store and the durable one, each with the real state machine.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

use super::TempDir;
use crate::raft::state_machine::StateMachine;
use crate::raft::storage::{LogStore, Storage, StorageOptions};
use crate::raft::types::TypeConfig;

struct MemoryBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, ()> for MemoryBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<u64>> {
        let storage = Storage::open(None, &StorageOptions::default()).await?;
        let machine = StateMachine::open(16, storage.snapshots)?;
        Ok(((), storage.log, machine))
    }
}

struct DiskBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for DiskBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = TempDir::new("suite");
        let storage = Storage::open(Some(dir.path()), &StorageOptions::default()).await?;
        let machine = StateMachine::open(16, storage.snapshots)?;
        Ok((dir, storage.log, machine))
    }
}

#[test]
fn the_openraft_suite_passes_in_memory() -> Result<(), StorageError<u64>> {
    Suite::test_all(MemoryBuilder)
}

#[test]
fn the_openraft_suite_passes_on_disk() -> Result<(), StorageError<u64>> {
    Suite::test_all(DiskBuilder)
}
