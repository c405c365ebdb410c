//! The tables of the fold (`engine-spec/tables.md`): a video's immutable facts live in the
//! `videos` table, not in the state; a log without them (a data directory from before the
//! tables) has them built from its events at start; a decision reads them through the loader.

use spool_core::rows::{ROWS_KEPT_MAX, TABLES_FORMAT, TABLES_FORMAT_KEY};
use spool_core::{State, VideoRow};
use spool_log::{AppendRequest, EventLog, Expected, MemLog, NewEvent, SideTable};
use spool_model::{Event, IndexId, MediaFacts, MediaType, PartRange, VideoId};
use spool_runtime::{MasterKey, Runtime, RuntimeConfig, SeededIds, TestClock};
use std::sync::Arc;

fn imported(video_id: VideoId, index_id: IndexId, title: &str) -> Event {
    Event::VideoImported {
        video_id,
        index_id,
        title: title.into(),
        media_type: MediaType::Video,
        connector_id: None,
        source_path: format!("in/{title}.mp4"),
        source_etag: Some("\"e1\"".into()),
        size_bytes: 1234,
        sha256: [7; 32],
        media_path: format!("videos/xx/{video_id}.mp4"),
        facts: MediaFacts { container: "mp4".into(), duration_us: Some(2_500_000), bit_rate: None, streams: vec![] },
        part: PartRange { part_index: 0, part_count: 1, start_us: 0, end_us: 2_500_000 },
        parts: vec![],
    }
}

/// A log written before the tables (events, no rows, no format): the runtime builds the rows
/// from the events before it takes commands, records the format, and the state holds none of
/// the facts the rows hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_from_before_the_tables_has_them_built_at_start() {
    let log = Arc::new(MemLog::new());
    let index = IndexId(ulid::Ulid::from_parts(1, 1));
    let ids: Vec<VideoId> = (0..10).map(|i| VideoId(ulid::Ulid::from_parts(2, i))).collect();
    let events =
        ids.iter().enumerate().map(|(i, id)| NewEvent { at_ms: 1, event: imported(*id, index, &format!("v{i}")) });
    log.append(AppendRequest::one("videos", Expected::Any, events.collect())).await.unwrap();
    // A deletion as logs before the tables wrote it: its fold reads the video's row.
    let deletion_id = spool_model::DeletionId(ulid::Ulid::from_parts(3, 1));
    let old = spool_model::Event::VideoDeletionRequested { video_id: ids[2], deletion_id };
    log.append(AppendRequest::one("vid", Expected::Any, vec![NewEvent { at_ms: 2, event: old }])).await.unwrap();
    assert_eq!(log.side_get(SideTable::Videos, &ids[0].to_string()).unwrap(), None);

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RuntimeConfig::new(dir.path());
    cfg.master_key = Some(MasterKey::generate());
    let rt = Runtime::start(log.clone(), cfg, Arc::new(TestClock::new(1_764_000_000_000)), Arc::new(SeededIds::new(3)))
        .await
        .unwrap();
    rt.wait_ready().await;
    let row = rt.video_row(&ids[3]).unwrap().expect("the row was built from the log");
    assert_eq!(row.title, "v3");
    assert_eq!(row.source_path, "in/v3.mp4");
    assert_eq!(row.facts.as_ref().map(|f| f.duration_us), Some(Some(2_500_000)));
    assert_eq!(rt.video_rows(ids.iter().copied()).unwrap().len(), 10);
    assert_eq!(log.side_get(SideTable::Videos, TABLES_FORMAT_KEY).unwrap(), Some(TABLES_FORMAT.to_le_bytes().to_vec()));
    assert_eq!(row.range_us(), (0, 2_500_000));
    // The state holds a video's place on its index's pages and its index's counters, not the
    // video: the old deletion's fold read the row (loaded for it) to take it off them.
    let (count, media_ms, deleted) = rt.read(|st| {
        (st.index_counts.get(&index).copied(), st.index_media_ms.get(&index).copied(), st.video_deletions.len())
    });
    assert_eq!((count, media_ms, deleted), (Some(9), Some(9 * 2_500), 1));
    // The rebuild put every video on its index's pages and took the deleted one off.
    let pages = rt.index_video_ids(&index).unwrap();
    assert_eq!(pages.len(), 9);
    assert!(!pages.contains(&ids[2]));
    assert!(rt.read(|st| st.rows.videos.is_empty()), "the read state keeps no rows");
    rt.shutdown().await;
}

/// A row is written once, in the commit of its event, and the loader reads it back into a
/// state that forgot it: the rows a state keeps beyond those in flight are bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_kept_for_decisions_are_bounded_and_loaded_again_from_the_table() {
    let log = MemLog::new();
    let index = IndexId(ulid::Ulid::from_parts(1, 1));
    let n = u128::try_from(ROWS_KEPT_MAX).unwrap() + 10;
    let mut st = State::default();
    st.rows.emit = true;
    let mut side = Vec::new();
    for i in 0..n {
        let env = spool_model::Envelope {
            seq: st.applied_seq + 1,
            stream: "videos".into(),
            at_ms: 1,
            format_version: spool_model::FORMAT_VERSION,
            event: imported(VideoId(ulid::Ulid::from_parts(2, i)), index, &format!("v{i}")),
        };
        spool_core::evolve(&mut st, &env);
        spool_runtime::rows::side_writes(st.rows.take_written(), &mut side);
    }
    // One row per imported video, and its place on its index's pages.
    assert_eq!(side.len(), 2 * (ROWS_KEPT_MAX + 10), "two rows per imported video");
    let events: Vec<NewEvent> = (0..n)
        .map(|i| NewEvent { at_ms: 1, event: imported(VideoId(ulid::Ulid::from_parts(2, i)), index, &format!("v{i}")) })
        .collect();
    let mut req = AppendRequest::one("videos", Expected::Any, events);
    req.side = side;
    log.append(req).await.unwrap();
    // Nothing durable yet as far as the state knows: every row stays.
    st.rows.forget_durable(0);
    assert_eq!(st.rows.videos.len(), ROWS_KEPT_MAX + 10);
    st.rows.forget_durable(log.head());
    assert!(st.rows.videos.is_empty(), "durable rows are forgotten past the bound");
    assert!(st.rows.index_keys.is_empty(), "durable places are forgotten");
    let pages = spool_runtime::rows::read_index_page(&log, &index, None, 5).unwrap();
    assert_eq!(pages.len(), 5, "the places are in the index_videos table");
    let first = VideoId(ulid::Ulid::from_parts(2, 0));
    spool_runtime::rows::load_video_rows(&log, &mut st, &[first]).unwrap();
    assert_eq!(st.video_row(&first).map(|r: &VideoRow| r.title.as_str()), Some("v0"));
}

/// An imported file leaves its job for the `job_files` table in the commit that imports it:
/// a finished job holds no file in memory, its rows are in the table (with the attempt that
/// imported each), and the media of every imported file is kept. (A first cut removed the media
/// of each imported file: the executor looked for the file in the job to tell whether its copy
/// was recorded, and no longer found it there.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_file_is_a_row_of_the_table_and_its_media_is_kept() {
    use spool_core::imports::{FileStatus, JobStatus};
    use spool_core::{Command, Outcome};
    use spool_model::{ConnectorId, ConnectorLocation, ConnectorScope, ImportMode, Provider};
    let data = tempfile::tempdir().unwrap();
    let roots = tempfile::tempdir().unwrap();
    let src = roots.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..5 {
        std::fs::write(src.join(format!("t{i}.png")), include_bytes!("../../../fixtures/media/tiny.png")).unwrap();
    }
    std::fs::write(src.join("notes.txt"), b"not media").unwrap();
    let mut cfg = RuntimeConfig::new(data.path());
    cfg.master_key = Some(MasterKey::generate());
    cfg.storage.local_roots = vec![roots.path().canonicalize().unwrap()];
    let rt =
        Runtime::open(cfg, Arc::new(TestClock::new(1_764_000_000_000)), Arc::new(SeededIds::new(5))).await.unwrap();
    rt.wait_ready().await;
    let connector_id = ConnectorId(rt.new_ulid());
    rt.execute(Command::Connector(spool_core::ConnectorCommand::CreateConnector {
        connector_id,
        provider: Provider::Local,
        name: "local".into(),
        scopes: vec![ConnectorScope::Import],
        import_mode: ImportMode::All,
        export_base_path: None,
        location: ConnectorLocation {
            root: Some(src.canonicalize().unwrap().to_string_lossy().into_owned()),
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
    let Outcome::Import(job_id) = rt
        .execute(Command::Import(spool_core::ImportCommand::CreateImportJob {
            connector_id,
            index_id,
            source_prefix: String::new(),
            file_pattern: "*".into(),
            recursive: true,
            import_mode: None,
        }))
        .await
        .unwrap()
    else {
        panic!("no job")
    };
    for _ in 0..2000 {
        if rt.read(|st| st.imports.get(&job_id).is_some_and(|j| j.status == JobStatus::Completed)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (own, imported, skipped, count) =
        rt.read(|st| st.imports.get(&job_id).map(|j| (j.files.len(), j.imported, j.skipped, j.file_count)).unwrap());
    assert_eq!((own, imported, skipped, count), (0, 5, 1, 6), "the finished job holds no file");
    let rows = rt.job_files(&job_id, FileStatus::Imported, 0, 100).unwrap();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|f| f.status == FileStatus::Imported && f.attempts == 1 && f.bytes == 1024));
    let skipped = rt.job_files(&job_id, FileStatus::Skipped, 0, 100).unwrap();
    assert_eq!(skipped.iter().map(|f| f.file.path.as_str()).collect::<Vec<_>>(), ["notes.txt"]);
    // A page from a file id on.
    let from = rows[2].file.file_id;
    assert_eq!(rt.job_files(&job_id, FileStatus::Imported, from, 2).unwrap().len(), 2);
    // `new_only` over everything imported reads the keys of what was imported from their table
    // (loaded for the scan page's decision): a second job skips every file.
    let Outcome::Import(again) = rt
        .execute(Command::Import(spool_core::ImportCommand::CreateImportJob {
            connector_id,
            index_id,
            source_prefix: String::new(),
            file_pattern: "*".into(),
            recursive: true,
            import_mode: Some(ImportMode::NewOnly),
        }))
        .await
        .unwrap()
    else {
        panic!("no job")
    };
    for _ in 0..2000 {
        if rt.read(|st| st.imports.get(&again).is_some_and(|j| j.status == JobStatus::Completed)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(rt.read(|st| st.imports.get(&again).map(|j| (j.imported, j.skipped))), Some((0, 6)));
    let reasons: Vec<Option<String>> =
        rt.job_files(&again, FileStatus::Skipped, 0, 100).unwrap().iter().map(|f| f.file.skip_reason.clone()).collect();
    assert_eq!(reasons.iter().filter(|r| r.as_deref() == Some("already_imported")).count(), 5, "{reasons:?}");
    // Every imported file's media is in the media store, under its video's row.
    for f in &rows {
        let video = f.file.video_id.unwrap();
        let row = rt.video_row(&video).unwrap().expect("the video's row");
        assert!(data.path().join("media").join(&row.media_path).is_file(), "media of {} kept", f.file.path);
    }
    rt.shutdown().await;
}

/// A run's task answers and processor calls are rows (`run_answers`, `run_calls`), written by the
/// fold's row writes: the calls of one run are read in order from any number on, never another
/// run's, and answers by task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_answers_and_calls_are_rows_read_by_task_and_in_order() {
    use spool_core::machines::prompt_run::LlmCallRecord;
    use spool_core::{AnswerKey, RowWrite};
    use spool_model::{CallUsage, PromptRunId, RunTask, TaskAnswer};
    let log = MemLog::new();
    let (a, b) = (PromptRunId(ulid::Ulid::from_parts(5, 1)), PromptRunId(ulid::Ulid::from_parts(5, 2)));
    let call = |n: u32| LlmCallRecord {
        task: RunTask::Segment(n),
        attempt: 1,
        ok: n.is_multiple_of(2),
        usage: CallUsage { input_tokens: u64::from(n), output_tokens: 1, duration_ms: 2 },
        video_ms: 1000,
        at_ms: 10 + u64::from(n),
    };
    let answer = |t: &str| Arc::new(TaskAnswer { metadata_json: format!(r#"{{"t":"{t}"}}"#), metadata_text: t.into() });
    let mut rows = Vec::new();
    // More than sixteen calls: their numbers sort as hex digits, in order.
    for n in 0..20u32 {
        rows.push(RowWrite::Call(a, u64::from(n), Arc::new(call(n))));
    }
    rows.push(RowWrite::Call(b, 0, Arc::new(call(100))));
    rows.push(RowWrite::Answer(AnswerKey { run_id: a, task: RunTask::Segment(3) }, answer("three")));
    rows.push(RowWrite::Answer(AnswerKey { run_id: a, task: RunTask::Video(3) }, answer("video three")));
    rows.push(RowWrite::Answer(AnswerKey { run_id: b, task: RunTask::Segment(3) }, answer("b three")));
    let mut side = Vec::new();
    spool_runtime::rows::side_writes(rows, &mut side);
    log.append(AppendRequest { streams: vec![], side }).await.unwrap();

    let all = spool_runtime::rows::read_run_calls(&log, &a, 0, usize::MAX).unwrap();
    assert_eq!(all.iter().map(|c| c.task).collect::<Vec<_>>(), (0..20).map(RunTask::Segment).collect::<Vec<_>>());
    let tail = spool_runtime::rows::read_run_calls(&log, &a, 15, 3).unwrap();
    assert_eq!(tail.iter().map(|c| c.task).collect::<Vec<_>>(), (15..18).map(RunTask::Segment).collect::<Vec<_>>());
    assert_eq!(tail[0], call(15));
    assert_eq!(spool_runtime::rows::read_run_calls(&log, &a, 20, 5).unwrap(), vec![], "none past the last");
    assert_eq!(spool_runtime::rows::read_run_calls(&log, &b, 0, 10).unwrap(), vec![call(100)], "only its own");

    let keys = [
        AnswerKey { run_id: a, task: RunTask::Segment(3) },
        AnswerKey { run_id: a, task: RunTask::Video(3) },
        AnswerKey { run_id: a, task: RunTask::Segment(4) },
    ];
    let got = spool_runtime::rows::read_answers(&log, keys).unwrap();
    assert_eq!(got.len(), 2, "no row for a task without an answer");
    assert_eq!(got[&keys[0]].metadata_text, "three");
    assert_eq!(got[&keys[1]].metadata_text, "video three");
}
