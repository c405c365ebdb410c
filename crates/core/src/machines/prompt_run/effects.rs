use super::*;
use crate::{State, WorkKey};
use spool_model::Event;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum PromptRunEffect {
    /// Add the next page of the run's videos: `AddRunVideos`.
    ListRunVideos { run_id: PromptRunId },
    /// Read a video's media for segment boundaries (when its segmentation wants them):
    /// `RecordVideoAnalysis`.
    PlanVideo { run_id: PromptRunId, video: u32 },
    /// Call the run's processor for one task: `StartTask`, then `RecordTaskSucceeded` or
    /// `RecordTaskFailed` for the same attempt.
    RunTask { run_id: PromptRunId, task: RunTask, attempt: u32 },
    /// The run is done (or cancelled with nothing running): `FinishRun`.
    FinishRun { run_id: PromptRunId },
}

impl PromptRunEffect {
    pub fn work_key(&self) -> WorkKey {
        match self {
            PromptRunEffect::ListRunVideos { run_id }
            | PromptRunEffect::PlanVideo { run_id, .. }
            | PromptRunEffect::RunTask { run_id, .. }
            | PromptRunEffect::FinishRun { run_id } => WorkKey::PromptRun(*run_id),
        }
    }
}

/// The run whose effects this event can change.
pub fn work_key(event: &Event) -> Option<WorkKey> {
    match event {
        Event::PromptRunCreated { run_id, .. }
        | Event::PromptRunVideosAdded { run_id, .. }
        | Event::PromptRunVideosListed { run_id, .. }
        | Event::PromptRunVideoPlanned { run_id, .. }
        | Event::PromptTaskStarted { run_id, .. }
        | Event::PromptTaskSucceeded { run_id, .. }
        | Event::PromptTaskFailed { run_id, .. }
        | Event::PromptTaskRetryDue { run_id, .. }
        | Event::PromptTaskRetryRequested { run_id, .. }
        | Event::PromptRunCancelRequested { run_id, .. }
        | Event::PromptRunFinished { run_id, .. } => Some(WorkKey::PromptRun(*run_id)),
        _ => None,
    }
}

/// The effects one run needs now, bounded whatever the size of the run: read from its
/// per-status task sets.
pub fn effects_for(state: &State, id: PromptRunId) -> Vec<PromptRunEffect> {
    let mut out = Vec::new();
    let Some(r) = state.prompt_runs.get(&id) else { return out };
    if r.status.is_terminal() {
        return out;
    }
    if finish_due(r).is_some() {
        out.push(PromptRunEffect::FinishRun { run_id: id });
    }
    let live = r.takes_work();
    if live && !r.listing_done {
        out.push(PromptRunEffect::ListRunVideos { run_id: id });
    }
    if live {
        for video in r.unplanned.iter().take(RUN_PLANS_OFFERED_MAX) {
            out.push(PromptRunEffect::PlanVideo { run_id: id, video: *video });
        }
    }
    // A started task is resumed (after a crash), also while a cancel waits for it.
    for task in r.tasks.iter(TaskStatus::Started).take(RUN_TASKS_OFFERED_MAX) {
        let attempt = r.task(task).map_or(1, |t| t.attempts);
        out.push(PromptRunEffect::RunTask { run_id: id, task, attempt });
    }
    if live {
        let room = RUN_TASKS_OFFERED_MAX.saturating_sub(r.running());
        for task in r.tasks.iter(TaskStatus::Pending).take(room) {
            let attempt = r.task(task).map_or(1, |t| t.attempts + 1);
            out.push(PromptRunEffect::RunTask { run_id: id, task, attempt });
        }
    }
    out
}
