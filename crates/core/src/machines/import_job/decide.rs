use super::*;
use crate::{Ctx, Decision, DomainError, Outcome, State, StreamEvents};
use spool_model::{ConnectorScope, Event, JobSource, MediaFacts, MediaType};

/// Decide an import command.
pub fn decide(state: &State, cmd: &ImportCommand, ctx: &mut Ctx) -> Result<Decision, DomainError> {
    match cmd {
        ImportCommand::CreateImportJob {
            connector_id,
            index_id,
            source_prefix,
            file_pattern,
            recursive,
            import_mode,
        } => {
            // The rules of the values (spool-model's `rules`): the API forwards them unchecked.
            spool_model::rules::source_prefix(source_prefix).map_err(DomainError::from)?;
            spool_model::rules::file_pattern(file_pattern).map_err(DomainError::from)?;
            let job_id = ImportJobId(ctx.new_ulid());
            create(state, job_id, connector_id, index_id, source_prefix, file_pattern, *recursive, *import_mode)
        }
        ImportCommand::RecordScanPage { job_id, objects } => record_scan_page(state, job_id, objects, ctx),
        ImportCommand::RecordScanCompleted { job_id } => record_scan_completed(state, job_id),
        ImportCommand::RecordScanFailed { job_id, error, transient } => {
            record_scan_failed(state, job_id, error, *transient, ctx)
        }
        ImportCommand::RecordImportJobFailed { job_id, error } => record_job_failed(state, job_id, error),
        ImportCommand::StartImportFile { job_id, file_id, attempt } => start_file(state, job_id, *file_id, *attempt),
        ImportCommand::RecordFileImported { job_id, file_id, attempt, bytes, sha256, facts } => {
            let outcome = Copied { bytes: *bytes, sha256: *sha256, facts: facts.as_ref() };
            record_file_imported(state, job_id, *file_id, *attempt, outcome, ctx)
        }
        ImportCommand::RecordFileFailed { job_id, file_id, attempt, failure } => {
            record_file_failed(state, job_id, *file_id, *attempt, failure, ctx)
        }
        ImportCommand::CancelImportJob { job_id } => cancel(state, job_id),
        ImportCommand::RetryImportJob { job_id } => retry(state, job_id),
        ImportCommand::RecordImportJobFinished { job_id } => record_finished(state, job_id),
        ImportCommand::OpenUploadJob { index_id, title, file_name, staged_key, size_bytes, sha256 } => {
            let source = JobSource::Upload {
                file_name: file_name.clone(),
                staged_key: staged_key.clone(),
                size_bytes: *size_bytes,
                sha256: *sha256,
            };
            open_one(state, *index_id, title, source, ctx)
        }
        ImportCommand::OpenUriJob { index_id, title, connector_id, video_uri, path } => {
            let source =
                JobSource::Uri { connector_id: *connector_id, video_uri: video_uri.clone(), path: path.clone() };
            open_one(state, Some(*index_id), title, source, ctx)
        }
    }
}

/// A live connector with the import scope.
fn import_connector<'a>(
    state: &'a State,
    connector_id: &ConnectorId,
) -> Result<&'a crate::machines::connector::Connector, DomainError> {
    let conn = state
        .live_connector(connector_id)
        .ok_or_else(|| DomainError::NotFound { kind: "connector", id: connector_id.to_string() })?;
    if !conn.has_scope(ConnectorScope::Import) {
        return Err(DomainError::Unprocessable {
            code: "connector_scope_missing",
            message: format!("connector {connector_id} does not have the import scope"),
        });
    }
    Ok(conn)
}

/// The title of part `i` of `count` of a job's file: the job's title (one-object jobs) or the
/// file's name, with "(part i of n)" when the file has several parts. Its video's row holds the
/// same (the import job's views read it from here, not from the table).
pub fn part_title(j: &super::ImportJob, path: &str, i: usize, count: usize) -> String {
    let base = match &j.title {
        Some(t) => t.clone(),
        None => path.rsplit('/').next().unwrap_or(path).to_string(),
    };
    if count > 1 { format!("{base} (part {} of {count})", i + 1) } else { base }
}

/// Titles of uploads and registered videos: 1–255 characters (the SDK's bound).
pub const TITLE_CHARS_MAX: usize = 255;

/// Open a job of one object (an upload or one object of a connector). An upload's file is
/// discovered with the job (it is staged already); a URI job's scan looks the object up.
fn open_one(
    state: &State,
    index_id: Option<IndexId>,
    title: &str,
    source: JobSource,
    ctx: &mut Ctx,
) -> Result<Decision, DomainError> {
    let title = title.trim();
    if title.is_empty() || title.chars().count() > TITLE_CHARS_MAX {
        return Err(DomainError::Unprocessable {
            code: "invalid_title",
            message: format!("title must be 1 to {TITLE_CHARS_MAX} characters"),
        });
    }
    if let Some(index_id) = &index_id {
        state.live_index(index_id).ok_or_else(|| DomainError::NotFound { kind: "index", id: index_id.to_string() })?;
    }
    let name = match &source {
        JobSource::Upload { file_name, .. } => file_name.clone(),
        JobSource::Uri { path, .. } => path.clone(),
    };
    if MediaType::from_extension(&extension(&name)).is_none() {
        return Err(DomainError::Unprocessable {
            code: "unsupported_format",
            message: format!(
                "{name:?} is not a supported media file (video mp4/avi/mkv/mov/webm, audio mp3/wav/flac/m4a/ogg/aac, \
                 image jpg/jpeg/png/webp/gif/bmp/tiff/heic/heif)"
            ),
        });
    }
    if let JobSource::Uri { connector_id, .. } = &source {
        import_connector(state, connector_id)?;
    }
    let job_id = ImportJobId(ctx.new_ulid());
    let index_json = index_id.map(|i| i.to_string());
    let mut events = vec![Event::ImportJobOpened { job_id, source: source.clone(), index_id, title: title.into() }];
    if let JobSource::Upload { size_bytes, .. } = &source {
        let file = DiscoveredFile {
            file_id: 0,
            path: name.clone(),
            size_bytes: *size_bytes,
            etag: None,
            last_modified_ms: ctx.now_ms,
            video_id: Some(VideoId(ctx.new_ulid())),
            skip_reason: None,
        };
        events.push(Event::ImportFilesDiscovered { job_id, files: vec![file] });
        events.push(Event::ImportScanCompleted { job_id });
    }
    events.push(domain(
        spool_model::DomainEventName::ImportJobStarted,
        job_id.to_string(),
        serde_json::json!({ "job_id": job_id.to_string(), "index_id": index_json }),
    ));
    Ok(Decision::one(job_id.to_string(), events, Outcome::Import(job_id)))
}

/// What a finished copy reports.
pub struct Copied<'a> {
    pub bytes: u64,
    pub sha256: [u8; 32],
    pub facts: Option<&'a MediaFacts>,
}

/// The media type of a probed file: stills are images, files with a video stream are videos,
/// the rest audio; without facts, the extension's.
pub fn media_type_of(facts: Option<&MediaFacts>, path: &str) -> MediaType {
    use spool_model::StreamKind;
    match facts {
        Some(f) if f.is_still() => MediaType::Image,
        Some(f) if f.first(StreamKind::Video).is_some() => MediaType::Video,
        Some(_) => MediaType::Audio,
        None => MediaType::from_extension(&extension(path)).unwrap_or(MediaType::Video),
    }
}

fn job<'a>(state: &'a State, id: &ImportJobId) -> Result<&'a ImportJob, DomainError> {
    state.imports.get(id).ok_or_else(|| DomainError::NotFound { kind: "import_job", id: id.to_string() })
}

fn domain(name: spool_model::DomainEventName, subject: String, data: serde_json::Value) -> Event {
    Event::DomainEventRaised { name, subject, data_json: data.to_string() }
}

fn progress_json(j: &ImportJob) -> serde_json::Value {
    progress_json_with(j, 0, 0, 0)
}

/// The job's progress after an outcome not folded yet (`imported` / `failed` more files,
/// `bytes` more transferred): O(1), no copy of the job.
/// A job's index as JSON: `null` in the playground.
fn index_json(j: &ImportJob) -> serde_json::Value {
    if j.index_id == PLAYGROUND { serde_json::Value::Null } else { serde_json::json!(j.index_id.to_string()) }
}

fn progress_json_with(j: &ImportJob, imported: u64, failed: u64, bytes: u64) -> serde_json::Value {
    serde_json::json!({
        "job_id": j.job_id.to_string(),
        "index_id": index_json(j),
        "total_files": j.file_count,
        "imported": j.imported + imported,
        "failed": j.failed + failed,
        "skipped": j.skipped,
        "bytes_transferred": j.bytes_transferred + bytes,
    })
}

/// A throttled `import_job.progress` after an outcome (its deltas not folded yet).
fn progress_if_due(j: &ImportJob, events: &mut Vec<Event>, now_ms: u64, imported: u64, failed: u64, bytes: u64) {
    if !j.status.is_terminal() && now_ms.saturating_sub(j.last_progress_ms) >= PROGRESS_EVENT_INTERVAL_MS {
        events.push(domain(
            spool_model::DomainEventName::ImportJobProgress,
            j.job_id.to_string(),
            progress_json_with(j, imported, failed, bytes),
        ));
    }
}

/// Whether the job is ready to end, and how.
pub fn finish_due(j: &ImportJob) -> Option<JobStatus> {
    if j.status.is_terminal() {
        None
    } else if j.cancel_requested {
        (j.running() == 0).then_some(JobStatus::Cancelled)
    } else {
        j.all_done().then_some(JobStatus::Completed)
    }
}

/// `RecordImportJobFinished` (effect `FinishImportJob`): end the job once its last open file
/// closed (or, after a cancel, its last running copy reported).
pub fn record_finished(state: &State, job_id: &ImportJobId) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    let events = match finish_due(j) {
        None => return Ok(Decision { streams: vec![], outcome: Outcome::Import(*job_id) }),
        Some(JobStatus::Cancelled) => vec![Event::ImportJobCancelled { job_id: *job_id }],
        Some(_) => {
            let name = if j.failed > 0 {
                spool_model::DomainEventName::ImportJobPartialCompleted
            } else {
                spool_model::DomainEventName::ImportJobCompleted
            };
            vec![Event::ImportJobCompleted { job_id: *job_id }, domain(name, job_id.to_string(), progress_json(j))]
        }
    };
    Ok(Decision::one(job_id.to_string(), events, Outcome::Import(*job_id)))
}

#[allow(clippy::too_many_arguments)]
pub fn create(
    state: &State,
    job_id: ImportJobId,
    connector_id: &ConnectorId,
    index_id: &IndexId,
    source_prefix: &str,
    file_pattern: &str,
    recursive: bool,
    import_mode: Option<ImportMode>,
) -> Result<Decision, DomainError> {
    let conn = import_connector(state, connector_id)?;
    state.live_index(index_id).ok_or_else(|| DomainError::NotFound { kind: "index", id: index_id.to_string() })?;
    let created = Event::ImportJobCreated {
        job_id,
        connector_id: *connector_id,
        index_id: *index_id,
        source_prefix: source_prefix.to_string(),
        file_pattern: if file_pattern.trim().is_empty() { "*".into() } else { file_pattern.to_string() },
        recursive,
        import_mode: import_mode.unwrap_or(conn.import_mode),
    };
    let started = domain(
        spool_model::DomainEventName::ImportJobStarted,
        job_id.to_string(),
        serde_json::json!({ "job_id": job_id.to_string(), "connector_id": connector_id.to_string(), "index_id": index_id.to_string() }),
    );
    Ok(Decision::one(job_id.to_string(), vec![created, started], Outcome::Import(job_id)))
}

pub fn record_scan_page(
    state: &State,
    job_id: &ImportJobId,
    objects: &[ListedObject],
    ctx: &mut crate::Ctx,
) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    if !j.takes_work() || j.scan_done {
        return Ok(Decision { streams: vec![], outcome: Outcome::Import(*job_id) });
    }
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let new = objects
        .iter()
        .take(SCAN_PAGE_OBJECTS_MAX)
        .filter(|o| !j.seen_paths.contains(&path_key(&o.path)) && seen.insert(o.path.as_str()));
    let files = classify(state, &j.connector_id, &j.index_id, j.import_mode, j.file_count, new, false, ctx);
    if files.is_empty() {
        return Ok(Decision { streams: vec![], outcome: Outcome::Import(*job_id) });
    }
    Ok(Decision::one(
        job_id.to_string(),
        vec![Event::ImportFilesDiscovered { job_id: *job_id, files }],
        Outcome::Import(*job_id),
    ))
}

/// A job's files made of listed objects, numbered from `first_file_id`: skipped for an
/// unsupported format, an empty object, or (under `new_only`) an object imported before (this
/// version of it; with `by_path`, any version of its path); the rest get the id of the video
/// they will become.
#[allow(clippy::too_many_arguments)]
pub fn classify<'a>(
    state: &State,
    connector_id: &ConnectorId,
    index_id: &IndexId,
    import_mode: ImportMode,
    first_file_id: u32,
    objects: impl Iterator<Item = &'a ListedObject>,
    by_path: bool,
    ctx: &mut crate::Ctx,
) -> Vec<DiscoveredFile> {
    let mut files = Vec::new();
    for o in objects {
        let file_id = first_file_id + spool_model::num::sat_u32(files.len());
        let key = import_key(connector_id, index_id, &o.path, o.etag.as_deref(), o.size_bytes, o.last_modified_ms);
        let skip = if MediaType::from_extension(&extension(&o.path)).is_none() {
            Some("unsupported_format")
        } else if o.size_bytes == 0 {
            Some("empty_object")
        } else if import_mode == ImportMode::NewOnly
            && (state.rows.imported(&path_key(&key))
                || by_path && state.rows.imported(&path_key(&import_path_key(connector_id, index_id, &o.path))))
        {
            Some("already_imported")
        } else {
            None
        };
        files.push(DiscoveredFile {
            file_id,
            path: o.path.clone(),
            size_bytes: o.size_bytes,
            etag: o.etag.clone(),
            last_modified_ms: o.last_modified_ms,
            video_id: if skip.is_none() { Some(VideoId(ctx.new_ulid())) } else { None },
            skip_reason: skip.map(str::to_string),
        });
    }
    files
}

pub fn record_scan_completed(state: &State, job_id: &ImportJobId) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    if !j.takes_work() || j.scan_done {
        return Ok(Decision { streams: vec![], outcome: Outcome::Import(*job_id) });
    }
    Ok(Decision::one(
        job_id.to_string(),
        vec![Event::ImportScanCompleted { job_id: *job_id }],
        Outcome::Import(*job_id),
    ))
}

/// `RecordScanFailed`: a transient failure below the attempt limit schedules the next listing
/// on a durable timer (backoff and jitter decided here, recorded in the event); the last
/// attempt, or a failure that retrying cannot mend, fails the job.
pub fn record_scan_failed(
    state: &State,
    job_id: &ImportJobId,
    error: &str,
    transient: bool,
    ctx: &mut crate::Ctx,
) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    if !j.takes_work() || j.scan_done || scan_retry_pending(state, j) {
        return Ok(Decision { streams: vec![], outcome: Outcome::Import(*job_id) });
    }
    let attempt = j.scan_failures + 1;
    let error: String = error.chars().take(1000).collect();
    if transient && attempt < IMPORT_SCAN_ATTEMPTS_MAX {
        let i = (attempt as usize - 1).min(IMPORT_SCAN_BACKOFF_MS.len() - 1);
        let base = IMPORT_SCAN_BACKOFF_MS[i];
        let spread = base * IMPORT_RETRY_JITTER_PCT / 100;
        let due_ms = ctx.now_ms + base - spread + spool_model::num::low_u64(ctx.new_ulid().random()) % (2 * spread + 1);
        let events = vec![Event::ImportScanRetryScheduled { job_id: *job_id, attempt, due_ms, error }];
        return Ok(Decision::one(job_id.to_string(), events, Outcome::Import(*job_id)));
    }
    let error =
        if transient { format!("{error} (listing attempt {attempt} of {IMPORT_SCAN_ATTEMPTS_MAX})") } else { error };
    record_job_failed(state, job_id, &error)
}

/// `FireTimer` of a scan's retry: the listing starts again.
pub fn fire_scan_retry(state: &State, timer: &crate::Timer) -> Result<Decision, DomainError> {
    let crate::Timer::ImportScanRetry { job_id, attempt } = timer else {
        return Ok(Decision { streams: vec![], outcome: Outcome::Done });
    };
    if !state.timer_due.contains_key(timer) {
        return Ok(Decision { streams: vec![], outcome: Outcome::Done });
    }
    let events = vec![Event::ImportScanRetryDue { job_id: *job_id, attempt: *attempt }];
    Ok(Decision::one(job_id.to_string(), events, Outcome::Done))
}

pub fn record_job_failed(state: &State, job_id: &ImportJobId, error: &str) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    if j.status.is_terminal() {
        return Ok(Decision { streams: vec![], outcome: Outcome::Import(*job_id) });
    }
    let error: String = error.chars().take(1000).collect();
    let events = vec![
        Event::ImportJobFailed { job_id: *job_id, error: error.clone() },
        domain(
            spool_model::DomainEventName::ImportJobFailed,
            job_id.to_string(),
            serde_json::json!({ "job_id": job_id.to_string(), "index_id": index_json(j), "error_message": error }),
        ),
    ];
    Ok(Decision::one(job_id.to_string(), events, Outcome::Import(*job_id)))
}

fn file(j: &ImportJob, file_id: u32) -> Result<&ImportFile, DomainError> {
    if j.finished_file(file_id) {
        // Imported or skipped: it has left the job (a late or repeated outcome).
        return Err(DomainError::Stale(format!("file {file_id} of {} has finished", j.job_id)));
    }
    j.files
        .get(&file_id)
        .ok_or_else(|| DomainError::NotFound { kind: "import_file", id: format!("{}/{file_id}", j.job_id) })
}

pub fn start_file(state: &State, job_id: &ImportJobId, file_id: u32, attempt: u32) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    let f = file(j, file_id)?;
    let nothing = Decision { streams: vec![], outcome: Outcome::Import(*job_id) };
    match f.status {
        // A new attempt may start only on a live job.
        FileStatus::Pending if attempt == f.attempts + 1 && j.takes_work() => Ok(Decision::one(
            file_stream(job_id, file_id),
            vec![Event::ImportFileStarted { job_id: *job_id, file_id, attempt }],
            Outcome::Import(*job_id),
        )),
        // Resuming after a crash: the started attempt goes on (also while a cancel waits for
        // it, so its copy finishes cleanly).
        FileStatus::Started if attempt == f.attempts && !j.status.is_terminal() => Ok(nothing),
        _ => Err(DomainError::Stale(format!("file {file_id} of {job_id} cannot start attempt {attempt}"))),
    }
}

pub fn record_file_imported(
    state: &State,
    job_id: &ImportJobId,
    file_id: u32,
    attempt: u32,
    copied: Copied<'_>,
    ctx: &mut Ctx,
) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    if j.finished_file(file_id) {
        // Imported or skipped already: a duplicate outcome changes nothing.
        return Ok(Decision { streams: vec![], outcome: Outcome::Import(*job_id) });
    }
    let f = file(j, file_id)?;
    // A duplicate or stale outcome (effects run at least once), or a copy that finished after
    // its job ended (its index was deleted): a terminal job never changes again. The executor
    // removes what such a copy wrote.
    if f.status != FileStatus::Started || f.attempts != attempt || j.status.is_terminal() {
        return Ok(Decision { streams: vec![], outcome: Outcome::Import(*job_id) });
    }
    let Some(video_id) = f.file.video_id else {
        return Err(DomainError::InvalidState(format!("file {file_id} of {job_id} has no video id")));
    };
    let Copied { bytes, sha256, facts } = copied;
    // Facts whose media is longer than the parts bound fail the file (the executor's probe
    // refuses them first; this holds for any outcome, so no claim can plan unbounded parts).
    if let Some(f) = facts
        && let Err(why) = spool_model::media::check_parts(f.duration_us)
    {
        let failure = FileFailure { code: "media_unreadable".into(), message: why, retryable: false };
        return record_file_failed(state, job_id, file_id, attempt, &failure, ctx);
    }
    // Long media becomes parts of at most 40 minutes, each its own video over a time range of
    // the same stored object; the first part is the file's video.
    let ranges = match facts {
        Some(f) => spool_model::media::parts_of(f.duration_us),
        None => Vec::new(),
    };
    let mut parts = vec![video_id];
    for _ in 1..ranges.len() {
        parts.push(VideoId(ctx.new_ulid()));
    }
    let mut events = vec![Event::ImportFileImported { job_id: *job_id, file_id, video_id, bytes, sha256 }];
    // One part (nearly every file): the file's video is its part; nothing more to record.
    let parts_listed = if parts.len() > 1 { parts.clone() } else { Vec::new() };
    if parts.len() > 1 {
        events.push(Event::ImportFileProbed { job_id: *job_id, file_id, parts: parts.clone() });
    }
    progress_if_due(j, &mut events, ctx.now_ms, 1, 0, bytes);
    let media_type = media_type_of(facts, &f.file.path);
    let stored = media_path(&video_id, &f.file.path);
    let index_json = index_json(j);
    let mut streams = vec![StreamEvents { stream: file_stream(job_id, file_id), events }];
    for (i, part_video) in parts.iter().enumerate() {
        let title = part_title(j, &f.file.path, i, parts.len());
        let created = Event::VideoCreated {
            video_id: *part_video,
            index_id: j.index_id,
            title: title.clone(),
            media_type,
            connector_id: (j.source_kind() != "upload").then_some(j.connector_id),
            source_path: f.file.path.clone(),
            source_etag: f.file.etag.clone(),
            size_bytes: bytes,
            sha256,
            media_path: stored.clone(),
        };
        let created = match (facts, ranges.get(i)) {
            // The first part lists every part; a later part names the first alone.
            (Some(facts), Some(range)) => created.with_media(
                facts.clone(),
                *range,
                if i == 0 { parts_listed.clone() } else { parts_listed.iter().take(1).copied().collect() },
            ),
            _ => created,
        };
        let mut video_events = vec![created];
        video_events.push(domain(
            spool_model::DomainEventName::MediaCreated,
            part_video.to_string(),
            serde_json::json!({
                "video_id": part_video.to_string(),
                "index_id": index_json,
                "title": title,
                "media_type": media_type.as_str(),
                "import_job_id": job_id.to_string(),
                "duration_seconds": ranges.get(i).map(|r| (r.end_us - r.start_us) as f64 / 1e6),
            }),
        ));
        streams.push(StreamEvents { stream: part_video.to_string(), events: video_events });
    }
    Ok(Decision { streams, outcome: Outcome::Import(*job_id) })
}

pub fn record_file_failed(
    state: &State,
    job_id: &ImportJobId,
    file_id: u32,
    attempt: u32,
    failure: &FileFailure,
    ctx: &mut crate::Ctx,
) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    if j.finished_file(file_id) {
        return Ok(Decision { streams: vec![], outcome: Outcome::Import(*job_id) });
    }
    let f = file(j, file_id)?;
    if f.status != FileStatus::Started || f.attempts != attempt || j.status.is_terminal() {
        return Ok(Decision { streams: vec![], outcome: Outcome::Import(*job_id) });
    }
    let failure = FileFailure {
        code: failure.code.clone(),
        message: failure.message.chars().take(1000).collect(),
        retryable: failure.retryable,
    };
    let now_ms = ctx.now_ms;
    if failure.retryable && attempt < IMPORT_FILE_ATTEMPTS_MAX && j.takes_work() {
        // Not failed yet: a durable timer brings the file back after a backoff decided here.
        let due_ms = now_ms + retry_backoff_ms(attempt, ctx);
        let events = vec![Event::ImportFileRetryScheduled { job_id: *job_id, file_id, attempt, due_ms, failure }];
        return Ok(Decision::one(file_stream(job_id, file_id), events, Outcome::Import(*job_id)));
    }
    let mut events = vec![Event::ImportFileFailed { job_id: *job_id, file_id, attempt, failure }];
    progress_if_due(j, &mut events, now_ms, 0, 1, 0);
    Ok(Decision::one(file_stream(job_id, file_id), events, Outcome::Import(*job_id)))
}

/// The wait before the attempt after `attempt`: the schedule's step, ±jitter from the context's
/// entropy (recorded in the event, so replay never recomputes it).
pub fn retry_backoff_ms(attempt: u32, ctx: &mut crate::Ctx) -> u64 {
    let i = (attempt.max(1) as usize - 1).min(IMPORT_RETRY_BACKOFF_MS.len() - 1);
    let base = IMPORT_RETRY_BACKOFF_MS[i];
    let spread = base * IMPORT_RETRY_JITTER_PCT / 100;
    let r = spool_model::num::low_u64(ctx.new_ulid().random()) % (2 * spread + 1);
    base - spread + r
}

/// `FireTimer` of a file's retry: the file is pending again. Stale timers (fired already) add
/// nothing; a timer whose job ended still fires once, so that it leaves the index.
pub fn fire_retry(state: &State, timer: &crate::Timer) -> Result<Decision, DomainError> {
    let crate::Timer::ImportFileRetry { job_id, file_id, attempt } = timer else {
        return Ok(Decision { streams: vec![], outcome: Outcome::Done });
    };
    if !state.timer_due.contains_key(timer) {
        return Ok(Decision { streams: vec![], outcome: Outcome::Done });
    }
    let events = vec![Event::ImportFileRetryDue { job_id: *job_id, file_id: *file_id, attempt: *attempt }];
    Ok(Decision::one(file_stream(job_id, *file_id), events, Outcome::Done))
}

pub fn cancel(state: &State, job_id: &ImportJobId) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    if j.status.is_terminal() || j.cancel_requested {
        // Cancelling a finished (or cancelling) job answers it unchanged.
        return Ok(Decision { streams: vec![], outcome: Outcome::Import(*job_id) });
    }
    // Copies may be starting on their own streams right now: the cancel is a request; the
    // `FinishImportJob` effect ends the job once no copy runs, so a `cancelled` job never
    // changes again.
    Ok(Decision::one(
        job_id.to_string(),
        vec![Event::ImportJobCancelRequested { job_id: *job_id }],
        Outcome::Import(*job_id),
    ))
}

pub fn retry(state: &State, job_id: &ImportJobId) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    if !j.status.is_terminal() {
        return Err(DomainError::InvalidState(format!(
            "import job {job_id} is {}; retry a finished job",
            j.status.as_str()
        )));
    }
    if matches!(j.source, Some(JobSource::Upload { .. })) {
        return Err(DomainError::InvalidState(format!(
            "import job {job_id} is an upload: its bytes are not kept after it ends; upload the file again"
        )));
    }
    let failed: Vec<u32> = j.files_in(FileStatus::Failed).collect();
    if failed.is_empty() {
        return Err(DomainError::InvalidState(format!("import job {job_id} has no failed files to retry")));
    }
    if state.live_connector(&j.connector_id).is_none() || state.live_index(&j.index_id).is_none() {
        return Err(DomainError::InvalidState("the job's connector or index is gone".into()));
    }
    Ok(Decision::one(
        job_id.to_string(),
        vec![Event::ImportJobRetried { job_id: *job_id, file_ids: failed }],
        Outcome::Import(*job_id),
    ))
}
