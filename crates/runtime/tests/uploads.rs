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

/// Issue 27: a copy a crash cut off (its staging name beside the media path of a file whose
/// attempt had begun, in a job that ended since) is removed before the runtime is ready, reading only the folders of the
/// files in flight, not the whole media store; a staged file of another name is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_cut_off_by_a_crash_is_removed_at_start_and_nothing_else() {
    use spool_log::{AppendRequest, EventLog, Expected, MemLog, NewEvent};
    use spool_model::{DiscoveredFile, Event, ImportJobId, JobSource, VideoId};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let job_id = ImportJobId(ulid::Ulid::from_parts(1, 1));
    let video_id = VideoId(ulid::Ulid::from_parts(2, 2));
    let log = Arc::new(MemLog::new());
    let events = vec![
        Event::ImportJobOpened {
            job_id,
            source: JobSource::Upload {
                file_name: "a.png".into(),
                staged_key: "up_a.png".into(),
                size_bytes: 5,
                sha256: [0; 32],
            },
            index_id: None,
            title: "a".into(),
        },
        Event::ImportFilesDiscovered {
            job_id,
            files: vec![DiscoveredFile {
                file_id: 0,
                path: "a.png".into(),
                size_bytes: 5,
                etag: None,
                last_modified_ms: 1,
                video_id: Some(video_id),
                skip_reason: None,
            }],
        },
        Event::ImportScanCompleted { job_id },
        Event::ImportFileStarted { job_id, file_id: 0, attempt: 1 },
        // The job ended while its copy ran (its index was deleted): the file stays `Started`.
        Event::ImportJobFailed { job_id, error: "the index was deleted".into() },
    ];
    let events = events.into_iter().map(|event| NewEvent { at_ms: 1, event }).collect();
    log.append(AppendRequest::one(job_id.to_string(), Expected::Any, events)).await.unwrap();
    let media = data.join("media");
    let dst = media.join(spool_core::imports::media_path(&video_id, "a.png"));
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    let cut = std::path::PathBuf::from(format!("{}#spool-01ABCDEFGHJKMNPQRSTVWXYZ00", dst.display()));
    std::fs::write(&cut, b"cut off").unwrap();
    let other = dst.parent().unwrap().join("vid_other.png#1");
    std::fs::write(&other, b"not ours").unwrap();

    let mut cfg = RuntimeConfig::new(&data);
    cfg.master_key = Some(MasterKey::generate());
    cfg.run_effects = false;
    let rt = Runtime::start(log, cfg, Arc::new(TestClock::new(1_764_000_000_000)), Arc::new(SeededIds::new(1)))
        .await
        .unwrap();
    rt.wait_ready().await;
    assert!(!cut.exists(), "the copy the crash cut off is still there");
    assert!(other.exists(), "a staged file of no file in flight was removed");
    rt.shutdown().await;
}
