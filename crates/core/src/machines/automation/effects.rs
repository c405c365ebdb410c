use super::*;
use crate::{State, WorkKey};
use spool_model::Event;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum AutomationEffect {
    /// Export one completed run: `ExportRun`.
    ExportRun { automation_id: AutomationId, run_id: PromptRunId },
}

impl AutomationEffect {
    pub fn work_key(&self) -> WorkKey {
        match self {
            AutomationEffect::ExportRun { automation_id, .. } => WorkKey::Automation(*automation_id),
        }
    }
}

pub fn work_key(event: &Event) -> Option<WorkKey> {
    match event {
        Event::AutomationSaved { automation_id, .. }
        | Event::AutomationPaused { automation_id }
        | Event::AutomationResumed { automation_id }
        | Event::AutomationExported { automation_id, .. } => Some(WorkKey::Automation(*automation_id)),
        _ => None,
    }
}

/// The automations a run's end gives work: the export automation of its index.
pub fn run_work_key(state: &State, event: &Event) -> Option<WorkKey> {
    let Event::PromptRunFinished { run_id, .. } = event else { return None };
    let index_id = state.prompt_runs.get(run_id)?.index_id()?;
    state.automation_by_index.get(&(index_id, AutomationKind::Export)).map(|id| WorkKey::Automation(*id))
}

pub fn effects_for(state: &State, id: AutomationId) -> Vec<AutomationEffect> {
    let Some(a) = state.automations.get(&id) else { return Vec::new() };
    if !a.active() {
        return Vec::new();
    }
    a.pending_runs
        .iter()
        .take(AUTOMATION_EXPORTS_OFFERED_MAX)
        .map(|run_id| AutomationEffect::ExportRun { automation_id: id, run_id: *run_id })
        .collect()
}
