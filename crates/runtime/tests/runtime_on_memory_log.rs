//! The runtime is generic over its log: the whole runtime (sequencer, executors, timers) on the
//! in-memory log, as it will run on PostgreSQL.

use spool_core::{Command, IndexCommand};
use spool_log::{EventLog, MemLog};
use spool_runtime::{MasterKey, Runtime, RuntimeConfig, SeededIds, TestClock};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_decides_commits_and_reads_on_an_in_memory_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RuntimeConfig::new(dir.path());
    cfg.master_key = Some(MasterKey::generate());
    let log = Arc::new(MemLog::new());
    let rt = Runtime::start(log.clone(), cfg, Arc::new(TestClock::new(1_764_000_000_000)), Arc::new(SeededIds::new(3)))
        .await
        .unwrap();
    rt.wait_ready().await;
    for i in 0..20 {
        let cmd = Command::Index(IndexCommand::CreateIndex {
            name: format!("on memory {i}"),
            user_id: "u".into(),
            description: None,
        });
        rt.execute(cmd).await.unwrap();
    }
    assert_eq!(rt.read(|st| st.indexes.len()), 20);
    assert_eq!(rt.applied_seq(), log.head());
    let fold = spool_runtime::fold::load_state(&*log).unwrap();
    assert_eq!(rt.read(|st| st.to_snapshot()), fold.to_snapshot());
    rt.shutdown().await;
    // The shutdown snapshot went to the same log.
    assert!(log.snapshot(spool_runtime::SNAPSHOT_NAME).unwrap().is_some());
}
