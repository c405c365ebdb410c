use super::*;
use crate::{State, WorkKey};
use spool_model::{Event, ImportJobId};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum AutomationEffect {
    /// Export one completed run: `ExportRun`.
    ExportRun { automation_id: AutomationId, run_id: PromptRunId },
    /// List the import automation's location, page by page (`RecordWatchPage`), then
    /// `RecordWatchListed`.
    Watch { automation_id: AutomationId, listing: u64 },
    /// Start the preset's prompt run over an ended job's videos: `StartRun`.
    StartRun { automation_id: AutomationId, job_id: ImportJobId },
}

impl AutomationEffect {
    pub fn work_key(&self) -> WorkKey {
        match self {
            AutomationEffect::ExportRun { automation_id, .. }
            | AutomationEffect::Watch { automation_id, .. }
            | AutomationEffect::StartRun { automation_id, .. } => WorkKey::Automation(*automation_id),
        }
    }
}

pub fn work_key(event: &Event) -> Option<WorkKey> {
    match event {
        Event::AutomationSaved { automation_id, .. }
        | Event::AutomationPaused { automation_id }
        | Event::AutomationResumed { automation_id }
        | Event::AutomationExported { automation_id, .. }
        | Event::AutomationWatchDue { automation_id }
        | Event::AutomationObjectsFound { automation_id, .. }
        | Event::AutomationListed { automation_id, .. }
        | Event::AutomationObjectsGone { automation_id, .. }
        | Event::AutomationRemoved { automation_id }
        | Event::AutomationImportStarted { automation_id, .. }
        | Event::AutomationRunStarted { automation_id, .. } => Some(WorkKey::Automation(*automation_id)),
        _ => None,
    }
}

/// The automation another aggregate's event gives work: a run's end, the export automation of
/// its index; the end of an automation's import job, that automation.
pub fn touched_by(state: &State, event: &Event) -> Option<WorkKey> {
    match event {
        Event::PromptRunFinished { run_id, .. } => {
            let index_id = state.prompt_runs.get(run_id)?.index_id()?;
            state.automation_by_index.get(&(index_id, AutomationKind::Export)).map(|id| WorkKey::Automation(*id))
        }
        Event::ImportJobCompleted { job_id }
        | Event::ImportJobFailed { job_id, .. }
        | Event::ImportJobCancelled { job_id } => {
            state.automation_jobs.get(job_id).map(|e| WorkKey::Automation(e.automation_id))
        }
        _ => None,
    }
}

pub fn effects_for(state: &State, id: AutomationId) -> Vec<AutomationEffect> {
    let Some(a) = state.automations.get(&id) else { return Vec::new() };
    if !a.active() {
        return Vec::new();
    }
    let mut out: Vec<AutomationEffect> = a
        .pending_runs
        .iter()
        .take(AUTOMATION_EXPORTS_OFFERED_MAX)
        .map(|run_id| AutomationEffect::ExportRun { automation_id: id, run_id: *run_id })
        .collect();
    if a.kind() == AutomationKind::Import {
        // A deleted index's automation lists no more (its timers run out: the next is set by
        // a listing's end).
        if a.listing_due && state.live_index(&a.index_id).is_some() {
            out.push(AutomationEffect::Watch { automation_id: id, listing: a.listing });
        }
        out.extend(
            a.jobs_ended
                .iter()
                .take(AUTOMATION_EXPORTS_OFFERED_MAX)
                .map(|job_id| AutomationEffect::StartRun { automation_id: id, job_id: *job_id }),
        );
    }
    out
}
