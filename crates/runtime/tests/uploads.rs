//! Staged uploads across a restart: an upload whose job is acknowledged is never swept, even
//! when the restart folds that job from the log's tail (no snapshot yet); a staged file no job
//! names, left by a crash, is removed.

use spool_core::{Command, ImportCommand, Outcome};
use spool_runtime::{MasterKey, Runtime, RuntimeConfig, SeededIds, TestClock};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_upload_survives_a_restart_before_it_is_imported() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let master = MasterKey::generate();
    let config = || {
        let mut cfg = RuntimeConfig::new(&data);
        cfg.master_key = Some(master.clone());
        // Nothing runs: the job stays open across the restart, as after a crash mid-import.
        cfg.run_effects = false;
        cfg
    };
    let clock = Arc::new(TestClock::new(1_764_000_000_000));
    let rt = Runtime::open(config(), clock.clone(), Arc::new(SeededIds::new(1))).await.unwrap();
    rt.wait_ready().await;
    let staged = rt.uploads_dir().join("up_named.wav");
    let wav = spool_media::pcm_wav(&[1u8; 800]);
    std::fs::write(&staged, &wav).unwrap();
    let out = rt
        .execute(Command::Import(ImportCommand::OpenUploadJob {
            index_id: None,
            title: "kept".into(),
            file_name: "a.wav".into(),
            staged_key: "up_named.wav".into(),
            size_bytes: wav.len() as u64,
            sha256: [0; 32],
        }))
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Import(_)));
    let orphan = rt.uploads_dir().join("up_orphan.wav");
    std::fs::write(&orphan, b"cut off").unwrap();
    rt.shutdown().await;
    drop(rt);

    let rt = Runtime::open(config(), clock, Arc::new(SeededIds::new(2))).await.unwrap();
    rt.wait_ready().await;
    assert!(!orphan.exists(), "a staged file no job names is swept");
    assert!(staged.exists(), "the acknowledged upload's staged file was swept");
    rt.shutdown().await;
}
