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

/// A commit answered as failed although it landed (a shared log's lost answer that could not be
/// settled): the runtime folds what the log holds beyond its state before it decides again, so
/// the next command commits, and the state equals a fold of the log. (Before this, every later
/// commit failed: the sequencer decided on a state without the landed events.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_answered_as_failed_that_landed_is_folded_before_the_next_decision() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RuntimeConfig::new(dir.path());
    cfg.master_key = Some(MasterKey::generate());
    let shared = spool_log::SharedMemLog::new(0);
    let hold = shared.take("node-a", 10_000).unwrap();
    let rt = Runtime::start(
        Arc::new(hold.clone()),
        cfg,
        Arc::new(TestClock::new(1_764_000_000_000)),
        Arc::new(SeededIds::new(4)),
    )
    .await
    .unwrap();
    rt.wait_ready().await;
    let create = |name: &str| {
        Command::Index(IndexCommand::CreateIndex { name: name.into(), user_id: "u".into(), description: None })
    };
    rt.execute(create("before")).await.unwrap();
    hold.lose_next_answer(spool_log::LostAnswer::AppliedUnsettled);
    assert!(rt.execute(create("landed")).await.is_err(), "its writer could not settle it");
    rt.execute(create("after")).await.expect("the next command commits");
    let mut names: Vec<String> = rt.read(|st| st.indexes.values().map(|i| i.name.clone()).collect());
    names.sort();
    assert_eq!(names, ["after", "before", "landed"]);
    assert_eq!(rt.applied_seq(), hold.head());
    let fold = spool_runtime::fold::load_state(&hold).unwrap();
    assert_eq!(rt.read(|st| st.to_snapshot()), fold.to_snapshot());
    rt.shutdown().await;
}
