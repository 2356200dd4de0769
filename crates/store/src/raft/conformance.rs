//! openraft's storage conformance suite against the RocksDB log and state machine.

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use openraft::type_config::TypeConfigExt;
use tempfile::TempDir;

use super::LogStore;
use super::Shared;
use super::StateMachine;
use super::TypeConfig;
use crate::db;
use crate::schema::RAFT_CFS;

struct RocksBuilder;

fn open(dir: &std::path::Path) -> std::io::Result<(LogStore, StateMachine)> {
    let raft_db = Arc::new(db::open(&dir.join("raft"), &RAFT_CFS)?);
    let shared = Shared::open(dir, 1024)?;
    Ok((LogStore::new(raft_db)?, StateMachine::new(shared)?))
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let failed = |e: std::io::Error| StorageError::read(TypeConfig::err_from_error(&e));
        let dir = TempDir::new().map_err(failed)?;
        let (log, sm) = open(dir.path()).map_err(failed)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_conformance_suite_passes() {
    Suite::test_all(RocksBuilder).await.expect("openraft storage suite");
}
