use super::*;
use crate::State;
use spool_model::{ConnectorId, Envelope, Event, JobSource};

/// Fold an import event into its job; the files it finished (imported, or skipped at discovery)
/// leave the job and go to `finished` (their rows, `engine-spec/tables.md`).
pub fn evolve_job(j: &mut ImportJob, event: &Event, at: u64, finished: &mut Vec<ImportFile>) {
    j.updated_at_ms = at;
    match event {
        Event::ImportFilesDiscovered { files, .. } => {
            if j.status == JobStatus::Pending {
                j.status = JobStatus::Scanning;
            }
            for f in files {
                if f.file_id != j.file_count {
                    // File ids are positions; `decide` numbers them so. Anything else is ignored.
                    continue;
                }
                j.file_count += 1;
                if !j.scan_done {
                    j.seen_paths.insert(path_key(&f.path));
                }
                let status = if f.skip_reason.is_some() { FileStatus::Skipped } else { FileStatus::Pending };
                let file =
                    ImportFile { file: f.clone(), status, attempts: 0, bytes: 0, failure: None, parts: Vec::new() };
                if status == FileStatus::Skipped {
                    j.skipped += 1;
                    finished.push(file);
                } else {
                    j.candidates += 1;
                    j.by_status.insert(status, f.file_id);
                    j.files.insert(f.file_id, file);
                }
            }
        }
        Event::ImportScanRetryScheduled { attempt, error, .. } => {
            j.scan_failures = *attempt;
            j.scan_error = Some(error.clone());
            j.scan_failing_since_ms.get_or_insert(at);
        }
        Event::ImportScanCompleted { .. } => {
            j.scan_done = true;
            j.seen_paths = Default::default();
            j.scan_error = None;
            j.scan_failing_since_ms = None;
            if !j.status.is_terminal() {
                j.status = JobStatus::Importing;
            }
        }
        Event::ImportFileStarted { file_id, attempt, .. } => {
            if j.set_status(*file_id, FileStatus::Started).is_some()
                && let Some(f) = j.files.get_mut(file_id)
            {
                f.attempts = *attempt;
            }
        }
        Event::ImportFileImported { file_id, bytes, .. } => {
            if let Some((from, mut f)) = j.finish(*file_id, FileStatus::Imported) {
                if from == FileStatus::Failed {
                    j.failed -= 1;
                }
                f.bytes = *bytes;
                f.failure = None;
                j.imported += 1;
                j.bytes_transferred += bytes;
                finished.push(f);
            }
        }
        // Decided with the file's `ImportFileImported`, right after it: the file has left the
        // job (its row, with these parts, is written again by `evolve`).
        Event::ImportFileProbed { parts, .. } => {
            j.extra_parts += parts.len().saturating_sub(1) as u64;
        }
        Event::ImportFileFailed { file_id, failure, .. } => {
            if let Some(from) = j.set_status(*file_id, FileStatus::Failed) {
                if from != FileStatus::Failed {
                    j.failed += 1;
                }
                if let Some(f) = j.files.get_mut(file_id) {
                    f.failure = Some(failure.clone());
                }
            }
        }
        Event::ImportFileRetryScheduled { file_id, failure, .. } => {
            if j.set_status(*file_id, FileStatus::Waiting).is_some()
                && let Some(f) = j.files.get_mut(file_id)
            {
                f.failure = Some(failure.clone());
            }
        }
        Event::ImportFileRetryDue { file_id, attempt, .. } => {
            let waits = |f: &ImportFile| f.status == FileStatus::Waiting && f.attempts == *attempt;
            if j.files.get(file_id).is_some_and(waits) {
                j.set_status(*file_id, FileStatus::Pending);
            }
        }
        Event::ImportJobCompleted { .. } => {
            j.status = JobStatus::Completed;
            j.completed_at_ms = Some(at);
        }
        Event::ImportJobFailed { error, .. } => {
            j.status = JobStatus::Failed;
            j.error = Some(error.clone());
            j.completed_at_ms = Some(at);
        }
        Event::ImportJobCancelRequested { .. } => j.cancel_requested = true,
        Event::ImportJobCancelled { .. } => {
            j.status = JobStatus::Cancelled;
            j.completed_at_ms = Some(at);
        }
        Event::ImportJobRetried { file_ids, .. } => {
            for id in file_ids {
                if j.files.get(id).is_some_and(|f| f.status == FileStatus::Failed) {
                    j.set_status(*id, FileStatus::Pending);
                    j.failed -= 1;
                }
            }
            j.status = if j.scan_done { JobStatus::Importing } else { JobStatus::Scanning };
            j.cancel_requested = false;
            j.completed_at_ms = None;
            j.error = None;
        }
        Event::DomainEventRaised { name, .. } if *name == spool_model::DomainEventName::ImportJobProgress => {
            j.last_progress_ms = at
        }
        _ => {}
    }
}

/// Fold import and video events into the state (called from `evolve`).
/// A new job in the state and its indexes.
fn open(state: &mut State, j: ImportJob) {
    let (id, at) = (j.job_id, j.created_at_ms);
    state.imports.insert(id, j);
    state.active_imports.insert(id);
    state.imports_by_created.insert((at, id));
    state.imports_by_status.insert(JobStatus::Pending, (at, id));
}

pub fn evolve(state: &mut State, env: &Envelope) {
    let at = env.at_ms;
    match &env.event {
        Event::ImportJobCreated {
            job_id,
            connector_id,
            index_id,
            source_prefix,
            file_pattern,
            recursive,
            import_mode,
        } => {
            let mut j = ImportJob::new(*job_id, *connector_id, *index_id, at);
            j.source_prefix = source_prefix.clone();
            j.file_pattern = file_pattern.clone();
            j.recursive = *recursive;
            j.import_mode = *import_mode;
            open(state, j);
        }
        Event::ImportJobOpened { job_id, source, index_id, title } => {
            let connector_id = match source {
                JobSource::Upload { .. } => ConnectorId(ulid::Ulid::nil()),
                JobSource::Uri { connector_id, .. } => *connector_id,
            };
            let mut j = ImportJob::new(*job_id, connector_id, index_id.unwrap_or(PLAYGROUND), at);
            if let JobSource::Uri { path, .. } = source {
                j.source_prefix = path.clone();
            }
            j.recursive = false;
            j.source = Some(source.clone());
            j.title = Some(title.clone());
            open(state, j);
        }
        Event::ImportFilesDiscovered { job_id, .. }
        | Event::ImportFileProbed { job_id, .. }
        | Event::ImportScanCompleted { job_id }
        | Event::ImportFileStarted { job_id, .. }
        | Event::ImportFileImported { job_id, .. }
        | Event::ImportFileFailed { job_id, .. }
        | Event::ImportJobCompleted { job_id }
        | Event::ImportJobFailed { job_id, .. }
        | Event::ImportJobCancelled { job_id }
        | Event::ImportJobCancelRequested { job_id }
        | Event::ImportFileRetryScheduled { job_id, .. }
        | Event::ImportFileRetryDue { job_id, .. }
        | Event::ImportScanRetryScheduled { job_id, .. }
        | Event::ImportScanRetryDue { job_id, .. }
        | Event::ImportJobRetried { job_id, .. } => {
            match &env.event {
                Event::ImportScanRetryScheduled { attempt, due_ms, .. } => {
                    state.set_timer(crate::Timer::ImportScanRetry { job_id: *job_id, attempt: *attempt }, *due_ms);
                }
                Event::ImportScanRetryDue { attempt, .. } => {
                    state.clear_timer(&crate::Timer::ImportScanRetry { job_id: *job_id, attempt: *attempt });
                }
                Event::ImportFileRetryScheduled { file_id, attempt, due_ms, .. } => {
                    let t = crate::Timer::ImportFileRetry { job_id: *job_id, file_id: *file_id, attempt: *attempt };
                    state.set_timer(t, *due_ms);
                }
                Event::ImportFileRetryDue { file_id, attempt, .. } => {
                    let t = crate::Timer::ImportFileRetry { job_id: *job_id, file_id: *file_id, attempt: *attempt };
                    state.clear_timer(&t);
                }
                _ => {}
            }
            if let Some(j) = state.imports.get_mut(job_id) {
                let before = j.status;
                let mut finished = Vec::new();
                evolve_job(j, &env.event, at, &mut finished);
                state.imports_by_status.moved((j.created_at_ms, *job_id), before, j.status);
                if state.rows.emit {
                    // `new_only` keys of what was imported: rows of the `import_keys` table.
                    for f in finished.iter().filter(|f| f.status == FileStatus::Imported) {
                        let key = import_key(
                            &j.connector_id,
                            &j.index_id,
                            &f.file.path,
                            f.file.etag.as_deref(),
                            f.file.size_bytes,
                            f.file.last_modified_ms,
                        );
                        state.rows.key_written(path_key(&key), env.seq);
                        let by_path = import_path_key(&j.connector_id, &j.index_id, &f.file.path);
                        state.rows.key_written(path_key(&by_path), env.seq);
                    }
                    for f in finished {
                        state.rows.file_written(*job_id, f, env.seq);
                    }
                    // The probe's parts complete the row of the file imported just before.
                    if let Event::ImportFileProbed { file_id, parts, .. } = &env.event {
                        state.rows.file_parts(*job_id, *file_id, parts, env.seq);
                    }
                }
                if j.status.is_terminal() {
                    state.active_imports.remove(job_id);
                } else {
                    state.active_imports.insert(*job_id);
                }
            }
        }
        Event::DomainEventRaised { name, subject, .. } if *name == spool_model::DomainEventName::ImportJobProgress => {
            if let Ok(id) = subject.parse::<ImportJobId>()
                && let Some(j) = state.imports.get_mut(&id)
            {
                j.last_progress_ms = at;
            }
        }
        _ => {}
    }
}
