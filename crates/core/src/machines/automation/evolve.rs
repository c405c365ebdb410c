use super::*;
use crate::machines::import_job::path_key;
use crate::{State, Timer};
use spool_model::{Envelope, Event};

pub fn evolve(state: &mut State, env: &Envelope) {
    let at = env.at_ms;
    match &env.event {
        Event::AutomationSaved { automation_id, index_id, config } => {
            let kind = AutomationKind::of(config);
            state.automation_by_index.insert((*index_id, kind), *automation_id);
            if let Some(old) = state.automations.get(automation_id).and_then(Automation::prompt_id) {
                state.automations_by_prompt.remove(&(old, *automation_id));
            }
            if let AutomationConfig::Import { prompt_id, .. } = config {
                state.automations_by_prompt.insert((*prompt_id, *automation_id));
            }
            let a = state.automations.entry(*automation_id).or_insert_with(|| Automation {
                automation_id: *automation_id,
                index_id: *index_id,
                config: config.clone(),
                paused_at_ms: None,
                created_at_ms: at,
                updated_at_ms: at,
                last_triggered_at_ms: None,
                last_export_id: None,
                last_error: None,
                pending_runs: BTreeSet::new(),
                exported_runs: BTreeSet::new(),
                manifest: BTreeMap::new(),
                found: BTreeMap::new(),
                found_since_ms: None,
                listing_due: false,
                listing: 0,
                last_listed_at_ms: None,
                listing_failures: 0,
                last_import_job_id: None,
                jobs_ended: BTreeSet::new(),
            });
            // Another location makes what was seen meaningless: the next listing starts afresh.
            if location(&a.config) != location(config) {
                a.manifest.clear();
                a.found.clear();
                a.found_since_ms = None;
            }
            a.config = config.clone();
            a.updated_at_ms = at;
            let id = *automation_id;
            arm(state, id, at);
        }
        Event::AutomationPaused { automation_id } => {
            if let Some(a) = state.automations.get_mut(automation_id) {
                a.paused_at_ms.get_or_insert(at);
                a.updated_at_ms = at;
            }
            arm(state, *automation_id, at);
        }
        Event::AutomationResumed { automation_id } => {
            if let Some(a) = state.automations.get_mut(automation_id) {
                a.paused_at_ms = None;
                a.updated_at_ms = at;
            }
            arm(state, *automation_id, at);
        }
        Event::AutomationWatchDue { automation_id } => {
            state.clear_timer(&Timer::AutomationWatch { automation_id: *automation_id });
            if let Some(a) = state.automations.get_mut(automation_id) {
                a.listing_due = true;
                a.listing += 1;
                state.automations_with_work.insert(*automation_id);
            }
        }
        Event::AutomationObjectsFound { automation_id, objects } => {
            let Some(a) = state.automations.get_mut(automation_id) else { return };
            for o in objects {
                a.manifest.insert(path_key(&o.path), version_key(o));
                a.found.insert(o.path.clone(), o.clone());
            }
            let since = *a.found_since_ms.get_or_insert(at);
            // Every new or changed object moves the import one debounce interval later, up to
            // the maximum wait from the first one.
            if let (true, Some(debounce)) = (a.active(), a.debounce_ms()) {
                state.set_timer(
                    Timer::AutomationDebounce { automation_id: *automation_id },
                    debounce_due(at, since, debounce),
                );
            }
        }
        Event::AutomationObjectsGone { automation_id, paths } => {
            let Some(a) = state.automations.get_mut(automation_id) else { return };
            for p in paths {
                a.manifest.remove(p);
            }
            if !a.found.is_empty() {
                let gone: BTreeSet<&[u8; 16]> = paths.iter().collect();
                a.found.retain(|path, _| !gone.contains(&path_key(path)));
                if a.found.is_empty() {
                    a.found_since_ms = None;
                    state.clear_timer(&Timer::AutomationDebounce { automation_id: *automation_id });
                }
            }
        }
        Event::AutomationListed { automation_id, error, next_listing_ms, .. } => {
            let Some(a) = state.automations.get_mut(automation_id) else { return };
            a.listing_failures = if error.is_some() { a.listing_failures.saturating_add(1) } else { 0 };
            a.listing_due = false;
            a.last_listed_at_ms = Some(at);
            a.last_error = error.clone();
            let active = a.active();
            refresh_work(state, *automation_id);
            if active {
                state.set_timer(Timer::AutomationWatch { automation_id: *automation_id }, *next_listing_ms);
            }
        }
        Event::AutomationImportStarted { automation_id, job_id, error, .. } => {
            state.clear_timer(&Timer::AutomationDebounce { automation_id: *automation_id });
            let Some(a) = state.automations.get_mut(automation_id) else { return };
            a.found.clear();
            a.found_since_ms = None;
            a.last_triggered_at_ms = Some(at);
            a.last_error = error.clone();
            a.updated_at_ms = at;
            if let Some(job_id) = job_id {
                a.last_import_job_id = Some(*job_id);
                state.automation_jobs.insert(
                    *job_id,
                    JobExecution {
                        automation_id: *automation_id,
                        decided: false,
                        run_id: None,
                        error_code: None,
                        error: None,
                    },
                );
            }
        }
        Event::ImportJobCompleted { job_id }
        | Event::ImportJobFailed { job_id, .. }
        | Event::ImportJobCancelled { job_id } => {
            let Some(exec) = state.automation_jobs.get(job_id).filter(|e| !e.decided) else { return };
            let id = exec.automation_id;
            if let Some(a) = state.automations.get_mut(&id) {
                a.jobs_ended.insert(*job_id);
                state.automations_with_work.insert(id);
            }
        }
        Event::AutomationRunStarted { automation_id, job_id, run_id, error_code, error } => {
            if let Some(exec) = state.automation_jobs.get_mut(job_id) {
                exec.decided = true;
                exec.run_id = *run_id;
                exec.error_code = error_code.clone();
                exec.error = error.clone();
            }
            let Some(a) = state.automations.get_mut(automation_id) else { return };
            a.jobs_ended.remove(job_id);
            a.updated_at_ms = at;
            if error.is_some() {
                a.last_error = error.clone();
            }
            refresh_work(state, *automation_id);
        }
        Event::PromptRunFinished { run_id, status, .. } if status.has_results() => {
            let Some(index_id) = state.prompt_runs.get(run_id).and_then(|r| r.index_id()) else { return };
            let Some(id) = state.automation_by_index.get(&(index_id, AutomationKind::Export)).copied() else { return };
            let Some(a) = state.automations.get_mut(&id) else { return };
            // Configured to run (a paused one holds the run until it resumes), not done already.
            if a.enabled() && !a.exported_runs.contains(run_id) {
                a.pending_runs.insert(*run_id);
                state.automations_with_work.insert(id);
            }
        }
        Event::AutomationRemoved { automation_id } => {
            // A deleted index's automation leaves the state, with its timers and work.
            let id = *automation_id;
            if let Some(a) = state.automations.remove(&id) {
                state.automation_by_index.remove(&(a.index_id, a.kind()));
                if let Some(prompt) = a.prompt_id() {
                    state.automations_by_prompt.remove(&(prompt, id));
                }
            }
            state.clear_timer(&Timer::AutomationWatch { automation_id: id });
            state.clear_timer(&Timer::AutomationDebounce { automation_id: id });
            state.automations_with_work.remove(&id);
        }
        Event::AutomationExported { automation_id, run_id, export_id, error } => {
            let Some(a) = state.automations.get_mut(automation_id) else { return };
            a.pending_runs.remove(run_id);
            a.exported_runs.insert(*run_id);
            a.last_triggered_at_ms = Some(at);
            if export_id.is_some() {
                a.last_export_id = *export_id;
            }
            a.last_error = error.clone();
            a.updated_at_ms = at;
            refresh_work(state, *automation_id);
        }
        _ => {}
    }
}

/// What an import automation watches: another location makes its manifest stale.
fn location(config: &AutomationConfig) -> Option<(&spool_model::ConnectorId, &str, &str, bool)> {
    match config {
        AutomationConfig::Import { connector_id, source_prefix, file_pattern, recursive, .. } => {
            Some((connector_id, source_prefix.as_str(), file_pattern.as_str(), *recursive))
        }
        AutomationConfig::Export { .. } => None,
    }
}

/// An import automation's timers after a save, a pause or a resume. Active: a listing is due at
/// once (the watch timer is then set by its end), and what was found and not imported yet is
/// imported one debounce interval from now. Not active: both timers are cleared, and a resume
/// sets them again (found objects are kept, so nothing that arrived is lost).
fn arm(state: &mut State, id: AutomationId, at: u64) {
    let Some(a) = state.automations.get_mut(&id) else { return };
    let Some(debounce) = a.debounce_ms() else { return };
    let watch = Timer::AutomationWatch { automation_id: id };
    let debounce_timer = Timer::AutomationDebounce { automation_id: id };
    if a.active() {
        a.listing_due = true;
        a.listing += 1;
        let found = !a.found.is_empty();
        // The maximum wait counts from the resume (or save): time paused does not count.
        a.found_since_ms = found.then_some(at);
        state.automations_with_work.insert(id);
        state.clear_timer(&watch);
        // A debounce is set only while something is found (a save with another location
        // empties the found set): its firing always has objects to import.
        if found {
            state.set_timer(debounce_timer, at.saturating_add(debounce));
        } else {
            state.clear_timer(&debounce_timer);
        }
    } else {
        state.clear_timer(&watch);
        state.clear_timer(&debounce_timer);
    }
}

/// Keep `automations_with_work` to the automations that have something to offer.
fn refresh_work(state: &mut State, id: AutomationId) {
    if state.automations.get(&id).is_some_and(|a| a.has_work()) {
        state.automations_with_work.insert(id);
    } else {
        state.automations_with_work.remove(&id);
    }
}
