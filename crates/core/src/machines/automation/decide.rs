use super::*;
use crate::machines::export::ExportCommand;
use crate::{Ctx, Decision, DomainError, Outcome, State, StreamEvents};
use spool_model::{ConnectorScope, Event, ExportKind, ImportJobId, WatchedObject};

pub fn decide(state: &State, cmd: &AutomationCommand, ctx: &mut Ctx) -> Result<Decision, DomainError> {
    match cmd {
        AutomationCommand::SaveAutomation { index_id, config, paused } => save(state, index_id, config, *paused, ctx),
        AutomationCommand::PauseAutomation { index_id, kind } => {
            let a = automation(state, index_id, *kind)?;
            let events = if a.paused_at_ms.is_some() {
                vec![]
            } else {
                vec![Event::AutomationPaused { automation_id: a.automation_id }]
            };
            Ok(Decision::one(a.automation_id.to_string(), events, Outcome::Automation(a.automation_id)))
        }
        AutomationCommand::ResumeAutomation { index_id, kind } => {
            let a = automation(state, index_id, *kind)?;
            let events = if a.paused_at_ms.is_none() {
                vec![]
            } else {
                vec![Event::AutomationResumed { automation_id: a.automation_id }]
            };
            Ok(Decision::one(a.automation_id.to_string(), events, Outcome::Automation(a.automation_id)))
        }
        AutomationCommand::ExportRun { automation_id, run_id } => export_run(state, automation_id, run_id, ctx),
        AutomationCommand::RecordWatchPage { automation_id, listing, objects } => {
            watch_page(state, automation_id, *listing, objects)
        }
        AutomationCommand::RecordWatchListed { automation_id, listing, objects, error, interval_ms, gone } => {
            let Some(a) = state.automations.get(automation_id).filter(|a| a.listing_due && a.listing == *listing)
            else {
                return Ok(Decision::nothing(Outcome::Done));
            };
            // A failed listing waits longer each time in a row (recorded: the due time is in
            // the event, so a restart keeps it); a whole one forgets what it did not list.
            let failures = if error.is_some() { a.listing_failures.saturating_add(1) } else { 0 };
            let mut events = Vec::new();
            if error.is_none() {
                let gone: Vec<[u8; 16]> = gone.iter().filter(|k| a.manifest.contains_key(*k)).copied().collect();
                for chunk in gone.chunks(super::GONE_PATHS_PER_EVENT) {
                    events.push(Event::AutomationObjectsGone { automation_id: a.automation_id, paths: chunk.to_vec() });
                }
            }
            events.push(Event::AutomationListed {
                automation_id: a.automation_id,
                objects: *objects,
                error: error.clone(),
                next_listing_ms: ctx.now_ms.saturating_add(super::listing_delay_ms(*interval_ms, failures)),
            });
            Ok(Decision::one(a.automation_id.to_string(), events, Outcome::Automation(a.automation_id)))
        }
        AutomationCommand::StartRun { automation_id, job_id } => start_run(state, automation_id, job_id, ctx),
    }
}

/// `FireTimer` of an import automation's watch: a listing is due. A timer that is no longer set
/// (the automation was paused, or it fired already) decides nothing.
pub fn fire_watch(state: &State, timer: &crate::Timer) -> Result<Decision, DomainError> {
    let crate::Timer::AutomationWatch { automation_id } = timer else { return Ok(Decision::nothing(Outcome::Done)) };
    if !state.timer_due.contains_key(timer) {
        return Ok(Decision::nothing(Outcome::Done));
    }
    let events = vec![Event::AutomationWatchDue { automation_id: *automation_id }];
    Ok(Decision::one(automation_id.to_string(), events, Outcome::Automation(*automation_id)))
}

/// One page of a listing: the objects that are not in the manifest as they are now.
fn watch_page(
    state: &State,
    automation_id: &AutomationId,
    listing: u64,
    objects: &[WatchedObject],
) -> Result<Decision, DomainError> {
    let Some(a) = state.automations.get(automation_id).filter(|a| a.listing_due && a.listing == listing) else {
        return Ok(Decision::nothing(Outcome::Done));
    };
    let mut seen = BTreeSet::new();
    let found: Vec<WatchedObject> = objects
        .iter()
        .take(crate::machines::import_job::SCAN_PAGE_OBJECTS_MAX)
        .filter(|o| {
            let path = crate::machines::import_job::path_key(&o.path);
            seen.insert(path) && a.manifest.get(&path) != Some(&version_key(o))
        })
        .cloned()
        .collect();
    if found.is_empty() {
        return Ok(Decision::nothing(Outcome::Automation(*automation_id)));
    }
    let events = vec![Event::AutomationObjectsFound { automation_id: *automation_id, objects: found }];
    Ok(Decision::one(automation_id.to_string(), events, Outcome::Automation(*automation_id)))
}

/// `FireTimer` of an import automation's debounce: one import job over exactly the objects
/// found, created, discovered and scanned in the same decision as the automation's record of
/// it. A stale timer, or one of an automation that is not active, decides nothing.
pub fn fire_debounce(state: &State, timer: &crate::Timer, ctx: &mut Ctx) -> Result<Decision, DomainError> {
    let crate::Timer::AutomationDebounce { automation_id } = timer else {
        return Ok(Decision::nothing(Outcome::Done));
    };
    let Some(a) = state.automations.get(automation_id).filter(|a| a.active()) else {
        return Ok(Decision::nothing(Outcome::Done));
    };
    if !state.timer_due.contains_key(timer) {
        return Ok(Decision::nothing(Outcome::Done));
    }
    let AutomationConfig::Import { connector_id, source_prefix, file_pattern, recursive, .. } = &a.config else {
        return Ok(Decision::nothing(Outcome::Done));
    };
    let record = |job_id, files, error| StreamEvents {
        stream: automation_id.to_string(),
        events: vec![Event::AutomationImportStarted { automation_id: *automation_id, job_id, files, error }],
    };
    let job_id = ImportJobId(ctx.new_ulid());
    let created = crate::machines::import_job::create(
        state,
        job_id,
        connector_id,
        &a.index_id,
        source_prefix,
        file_pattern,
        *recursive,
        None,
    );
    let mut streams = match created {
        Ok(d) => d.streams,
        Err(e) => {
            return Ok(Decision {
                streams: vec![record(None, 0, Some(e.to_string()))],
                outcome: Outcome::Automation(*automation_id),
            });
        }
    };
    // The job's import mode is the connector's, as `create` recorded it.
    let import_mode = state.live_connector(connector_id).map_or(spool_model::ImportMode::All, |c| c.import_mode);
    let listed: Vec<crate::machines::import_job::ListedObject> = a.found.values().map(Into::into).collect();
    let job_events = &mut streams[0].events;
    for (n, chunk) in listed.chunks(FOUND_FILES_PER_EVENT).enumerate() {
        let first = spool_model::num::sat_u32(n * FOUND_FILES_PER_EVENT);
        let files = crate::machines::import_job::classify(
            state,
            connector_id,
            &a.index_id,
            import_mode,
            first,
            chunk.iter(),
            true,
            ctx,
        );
        job_events.push(Event::ImportFilesDiscovered { job_id, files });
    }
    job_events.push(Event::ImportScanCompleted { job_id });
    streams.push(record(Some(job_id), spool_model::num::sat_u32(listed.len()), None));
    Ok(Decision { streams, outcome: Outcome::Automation(*automation_id) })
}

/// An automation's import job ended: the preset's prompt run over the videos it imported (every
/// part), in the same decision as the automation's record of it; or the reason none starts.
fn start_run(
    state: &State,
    automation_id: &AutomationId,
    job_id: &ImportJobId,
    ctx: &mut Ctx,
) -> Result<Decision, DomainError> {
    let Some(a) = state.automations.get(automation_id).filter(|a| a.active() && a.jobs_ended.contains(job_id)) else {
        return Ok(Decision::nothing(Outcome::Done));
    };
    let AutomationConfig::Import { prompt_id, preset, .. } = &a.config else {
        return Ok(Decision::nothing(Outcome::Done));
    };
    let blocked = |code: &str, error: String| {
        Ok(Decision::one(
            automation_id.to_string(),
            vec![Event::AutomationRunStarted {
                automation_id: *automation_id,
                job_id: *job_id,
                run_id: None,
                error_code: Some(code.to_string()),
                error: Some(error),
            }],
            Outcome::Automation(*automation_id),
        ))
    };
    let Some(job) = state.imports.get(job_id) else {
        return blocked("resource_import_job_not_found", format!("import job {job_id} was not found"));
    };
    if job.status == crate::machines::import_job::JobStatus::Cancelled {
        return blocked("import_job_cancelled", format!("import job {job_id} was cancelled"));
    }
    // The job's imported files are rows of the table: the runtime loaded one more than a run
    // takes (`crate::rows::needs`), so `execute` refuses a job that imported more, as before.
    let max = crate::machines::prompt_run::AUTOMATION_RUN_VIDEOS_MAX;
    let video_ids: Vec<spool_model::VideoId> = state
        .rows
        .finished_files(job_id, crate::machines::import_job::FileStatus::Imported, max + 1)
        .iter()
        .flat_map(|f| f.part_videos())
        .collect();
    if video_ids.is_empty() {
        return blocked("no_videos_imported", format!("import job {job_id} imported no video"));
    }
    let target = spool_model::RunTarget::Videos { video_ids, index_id: Some(a.index_id) };
    let by = format!("automation:{automation_id}");
    match crate::machines::prompt_run::execute(state, prompt_id, &target, preset, &by, max, ctx) {
        Ok(d) => {
            let run_id = match d.outcome {
                Outcome::PromptRun(id) => Some(id),
                _ => None,
            };
            let mut streams = d.streams;
            streams.push(StreamEvents {
                stream: automation_id.to_string(),
                events: vec![Event::AutomationRunStarted {
                    automation_id: *automation_id,
                    job_id: *job_id,
                    run_id,
                    error_code: None,
                    error: None,
                }],
            });
            Ok(Decision { streams, outcome: Outcome::Automation(*automation_id) })
        }
        Err(e) => blocked(&e.code(), e.to_string()),
    }
}

fn automation<'a>(state: &'a State, index_id: &IndexId, kind: AutomationKind) -> Result<&'a Automation, DomainError> {
    state.live_index(index_id).ok_or_else(|| DomainError::NotFound { kind: "index", id: index_id.to_string() })?;
    state
        .automation_by_index
        .get(&(*index_id, kind))
        .and_then(|id| state.automations.get(id))
        .ok_or_else(|| DomainError::NotFound { kind: "automation", id: format!("{index_id}/{}", kind.as_str()) })
}

fn connector_with(
    state: &State,
    id: &spool_model::ConnectorId,
    scope: ConnectorScope,
    field: &'static str,
) -> Result<(), DomainError> {
    let c = state.live_connector(id).ok_or_else(|| DomainError::NotFound { kind: "connector", id: id.to_string() })?;
    if !c.has_scope(scope) {
        return Err(DomainError::Unprocessable {
            code: "connector_scope_missing",
            message: format!("{field}: connector {id} does not have the {} scope", scope.as_str()),
        });
    }
    Ok(())
}

fn save(
    state: &State,
    index_id: &IndexId,
    config: &AutomationConfig,
    paused: bool,
    ctx: &mut Ctx,
) -> Result<Decision, DomainError> {
    state.live_index(index_id).ok_or_else(|| DomainError::NotFound { kind: "index", id: index_id.to_string() })?;
    let config = match config {
        AutomationConfig::Import {
            connector_id, prompt_id, preset, debounce_ms, file_pattern, source_prefix, ..
        } => {
            connector_with(state, connector_id, ConnectorScope::Import, "connector_id")?;
            state
                .prompts
                .get(prompt_id)
                .filter(|p| p.is_live())
                .ok_or_else(|| DomainError::NotFound { kind: "prompt", id: prompt_id.to_string() })?;
            crate::machines::prompt_run::check_settings(preset)?;
            if !DEBOUNCE_INTERVALS.iter().any(|(_, ms)| ms == debounce_ms) {
                return Err(DomainError::invalid("debounce_interval", "must be one of 5m, 10m, 1h, 1d"));
            }
            if file_pattern.trim().is_empty() {
                return Err(DomainError::invalid("file_pattern", "must not be empty"));
            }
            spool_model::rules::source_prefix(source_prefix).map_err(DomainError::from)?;
            spool_model::rules::file_pattern(file_pattern).map_err(DomainError::from)?;
            config.clone()
        }
        AutomationConfig::Export { enabled, connector_id, subpath } => {
            connector_with(state, connector_id, ConnectorScope::Export, "destination_connector_id")?;
            let subpath = crate::machines::export::check_subpath(subpath)?;
            AutomationConfig::Export { enabled: *enabled, connector_id: *connector_id, subpath }
        }
    };
    let kind = AutomationKind::of(&config);
    let existing = state.automation_by_index.get(&(*index_id, kind)).and_then(|id| state.automations.get(id));
    let automation_id = existing.map(|a| a.automation_id).unwrap_or_else(|| AutomationId(ctx.new_ulid()));
    let mut events = Vec::new();
    // PUT is idempotent: the same document again changes nothing.
    if existing.is_none_or(|a| a.config != config) {
        events.push(Event::AutomationSaved { automation_id, index_id: *index_id, config });
    }
    let was_paused = existing.is_some_and(|a| a.paused_at_ms.is_some());
    if paused && !was_paused {
        events.push(Event::AutomationPaused { automation_id });
    } else if !paused && was_paused {
        events.push(Event::AutomationResumed { automation_id });
    }
    Ok(Decision::one(automation_id.to_string(), events, Outcome::Automation(automation_id)))
}

/// Export one completed run, once: the export's events and `AutomationExported` in one
/// decision. A run that cannot be exported (the connector lost its scope, say) is recorded with
/// the reason, so it is not tried forever.
fn export_run(
    state: &State,
    automation_id: &AutomationId,
    run_id: &PromptRunId,
    ctx: &mut Ctx,
) -> Result<Decision, DomainError> {
    let Some(a) = state.automations.get(automation_id) else {
        return Ok(Decision::nothing(Outcome::Done));
    };
    if !a.pending_runs.contains(run_id) || !a.active() {
        return Ok(Decision::nothing(Outcome::Automation(*automation_id)));
    }
    let AutomationConfig::Export { connector_id, subpath, .. } = &a.config else {
        return Ok(Decision::nothing(Outcome::Automation(*automation_id)));
    };
    let cmd = ExportCommand::CreateExport {
        kind: ExportKind::Index,
        target: a.index_id.to_string(),
        run_ids: vec![*run_id],
        connector_id: Some(*connector_id),
        subpath: (!subpath.is_empty()).then(|| subpath.clone()),
        user_id: format!("automation:{automation_id}"),
    };
    let (mut streams, export_id, error) = match crate::machines::export::decide(state, &cmd, ctx) {
        Ok(d) => {
            let id = match d.outcome {
                Outcome::Export(id) => Some(id),
                _ => None,
            };
            (d.streams, id, None)
        }
        Err(e) => (Vec::new(), None, Some(e.to_string())),
    };
    streams.push(StreamEvents {
        stream: automation_id.to_string(),
        events: vec![Event::AutomationExported { automation_id: *automation_id, run_id: *run_id, export_id, error }],
    });
    Ok(Decision { streams, outcome: Outcome::Automation(*automation_id) })
}
