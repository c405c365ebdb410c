//! Durable timers, driven by a controllable clock (never by sleeping): a retryable import
//! failure waits for its timer, the timer fires once when the clock reaches it, it survives a
//! restart, and no timer fires twice.
//!
//! The failpoint `import_copy_fails_first_attempt` (debug builds) makes every first copy
//! attempt fail with a retryable `source_read_failed`.

use spool_core::imports::{FileStatus, IMPORT_RETRY_BACKOFF_MS, JobStatus};
use spool_core::{Command, Outcome};
use spool_log::READ_BATCH_MAX;
use spool_model::{ConnectorId, ConnectorLocation, ConnectorScope, Event, ImportJobId, ImportMode, IndexId, Provider};
use spool_runtime::{MasterKey, Runtime, RuntimeConfig, SeededIds, TestClock};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const START_MS: u64 = 1_764_000_000_000;

fn config(data: &Path, roots: &Path, master: &MasterKey) -> RuntimeConfig {
    let mut cfg = RuntimeConfig::new(data);
    cfg.master_key = Some(master.clone());
    cfg.storage.local_roots = vec![roots.canonicalize().unwrap()];
    cfg
}

/// Poll the state (not the clock) until `done`, for at most 20 s of real time.
async fn until(rt: &Runtime, what: &str, done: impl Fn(&spool_core::State) -> bool) {
    for _ in 0..2000 {
        if rt.read(&done) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not reached");
}

fn events_of_kind(rt: &Runtime, kind: &str) -> Vec<Event> {
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let batch = rt.log().read_from(from, READ_BATCH_MAX).unwrap();
        let Some(last) = batch.last() else { return out };
        from = last.seq + 1;
        out.extend(batch.into_iter().filter(|e| e.event.kind() == kind).map(|e| e.event));
    }
}

async fn setup(rt: &Runtime, root: &Path) -> ImportJobId {
    let connector_id = ConnectorId(rt.new_ulid());
    rt.execute(Command::Connector(spool_core::ConnectorCommand::CreateConnector {
        connector_id,
        provider: Provider::Local,
        name: "local".into(),
        scopes: vec![ConnectorScope::Import],
        import_mode: ImportMode::All,
        export_base_path: None,
        location: ConnectorLocation {
            root: Some(root.canonicalize().unwrap().to_string_lossy().into_owned()),
            ..Default::default()
        },
        credentials: None,
    }))
    .await
    .unwrap();
    let Outcome::Index(index_id) = rt
        .execute(Command::Index(spool_core::IndexCommand::CreateIndex {
            name: "i".into(),
            user_id: "u".into(),
            description: None,
        }))
        .await
        .unwrap()
    else {
        panic!("no index")
    };
    let index_id: IndexId = index_id;
    let Outcome::Import(job_id) = rt
        .execute(Command::Import(spool_core::ImportCommand::CreateImportJob {
            connector_id,
            index_id,
            source_prefix: String::new(),
            file_pattern: "*.wav".into(),
            recursive: true,
            import_mode: None,
        }))
        .await
        .unwrap()
    else {
        panic!("no job")
    };
    job_id
}

fn waiting(st: &spool_core::State, job: &ImportJobId) -> usize {
    st.imports.get(job).map_or(0, |j| j.files_in(FileStatus::Waiting).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_failure_waits_for_its_timer_which_fires_once_and_survives_a_restart() {
    // This binary holds only this test: the failpoint is on for the whole process.
    spool_model::enable_failpoint("import_copy_fails_first_attempt");
    let work = tempfile::tempdir().unwrap();
    let roots = work.path().join("roots");
    let root = roots.join("videos");
    std::fs::create_dir_all(&root).unwrap();
    for i in 0..3 {
        std::fs::write(root.join(format!("clip{i}.wav")), spool_media::pcm_wav(format!("video {i}").as_bytes()))
            .unwrap();
    }
    let data = work.path().join("data");
    let master = MasterKey::generate();
    let clock = Arc::new(TestClock::new(START_MS));

    let rt = Runtime::open(config(&data, &roots, &master), clock.clone(), Arc::new(SeededIds::new(1))).await.unwrap();
    rt.wait_ready().await;
    let job = setup(&rt, &root).await;
    until(&rt, "every first attempt failed and waits", |st| waiting(st, &job) == 3).await;
    // Nothing is failed, and the timers are in the state, due after the backoff (±20%).
    rt.read(|st| {
        let j = &st.imports[&job];
        assert_eq!((j.failed, j.imported, j.status), (0, 0, JobStatus::Importing));
        assert_eq!(st.timers.len(), 3);
        for (due, _) in &st.timers {
            let wait = due - START_MS;
            assert!((800..=1200).contains(&wait), "backoff {wait} ms outside 1 s ± 20%");
        }
    });
    assert_eq!(IMPORT_RETRY_BACKOFF_MS[0], 1_000);
    // The clock has not moved: however long we wait in real time, no timer fires.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rt.read(|st| waiting(st, &job)), 3, "a timer fired before its time");
    rt.shutdown().await;
    drop(rt);

    // Restart: the timers come back from the log; moving the clock past them fires each once.
    let rt = Runtime::open(config(&data, &roots, &master), clock.clone(), Arc::new(SeededIds::new(2))).await.unwrap();
    rt.wait_ready().await;
    assert_eq!(rt.read(|st| st.timers.len()), 3, "timers lost across the restart");
    clock.advance(1_500);
    until(&rt, "the job completes after the retries", |st| {
        st.imports.get(&job).is_some_and(|j| j.status == JobStatus::Completed)
    })
    .await;
    rt.read(|st| {
        let j = &st.imports[&job];
        assert_eq!((j.imported, j.failed), (3, 0));
        assert!(st.timers.is_empty() && st.timer_due.is_empty());
    });
    // The imported files are rows of the job's table.
    let files = rt.job_files(&job, FileStatus::Imported, 0, 10).unwrap();
    assert_eq!(files.len(), 3);
    assert!(files.iter().all(|f| f.attempts == 2), "each file took two attempts");
    // Fired exactly once each; a repeated FireTimer (a duplicate) changes nothing.
    assert_eq!(events_of_kind(&rt, "ImportFileRetryScheduled").len(), 3);
    let due = events_of_kind(&rt, "ImportFileRetryDue");
    assert_eq!(due.len(), 3);
    let Event::ImportFileRetryDue { job_id, file_id, attempt } = due[0].clone() else { unreachable!() };
    let head = rt.log().head();
    rt.execute(Command::Engine(spool_core::EngineCommand::FireTimer {
        timer: spool_core::Timer::ImportFileRetry { job_id, file_id, attempt },
    }))
    .await
    .unwrap();
    assert_eq!(rt.log().head(), head, "a timer fired twice");
    rt.shutdown().await;
}
