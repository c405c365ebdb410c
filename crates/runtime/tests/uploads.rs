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

/// Issue 27: a copy a crash left half-written in the media store (object_store's staging name,
/// `<path>#<n>`) is swept after the runtime is ready, in the background (the walk takes time in
/// proportion to the library, not to the work in flight); a copy staged since the start is never
/// taken, whatever it is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_copy_is_swept_after_ready_and_a_new_one_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = data.join("media").join("videos").join("ab");
    std::fs::create_dir_all(&dir).unwrap();
    let left = dir.join("vid_left.png#3");
    std::fs::write(&left, b"cut off").unwrap();
    #[allow(clippy::disallowed_methods)] // a file's modification time, not the engine's clock
    let earlier = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options().write(true).open(&left).unwrap().set_modified(earlier).unwrap();
    let whole = dir.join("vid_whole.png");
    std::fs::write(&whole, b"a copy").unwrap();
    // A copy staged after the start: its modification time is later than the start's (set
    // ahead here, so the sweep meets it whenever it runs).
    let fresh = dir.join("vid_fresh.png#1");
    std::fs::write(&fresh, b"being written").unwrap();
    #[allow(clippy::disallowed_methods)] // a file's modification time, not the engine's clock
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&fresh).unwrap().set_modified(later).unwrap();
    let mut cfg = RuntimeConfig::new(&data);
    cfg.master_key = Some(MasterKey::generate());
    cfg.run_effects = false;
    let rt =
        Runtime::open(cfg, Arc::new(TestClock::new(1_764_000_000_000)), Arc::new(SeededIds::new(1))).await.unwrap();
    rt.wait_ready().await;
    for _ in 0..1000 {
        if !left.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!left.exists(), "the half-written copy was not swept");
    assert!(whole.exists(), "a whole copy was swept");
    assert!(fresh.exists(), "a copy staged after the start was swept");
    rt.shutdown().await;
}
