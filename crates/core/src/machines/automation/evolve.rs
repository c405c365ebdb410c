use super::*;
use crate::State;
use spool_model::{Envelope, Event};

pub fn evolve(state: &mut State, env: &Envelope) {
    let at = env.at_ms;
    match &env.event {
        Event::AutomationSaved { automation_id, index_id, config } => {
            let kind = AutomationKind::of(config);
            state.automation_by_index.insert((*index_id, kind), *automation_id);
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
            });
            a.config = config.clone();
            a.updated_at_ms = at;
        }
        Event::AutomationPaused { automation_id } => {
            if let Some(a) = state.automations.get_mut(automation_id) {
                a.paused_at_ms.get_or_insert(at);
                a.updated_at_ms = at;
            }
        }
        Event::AutomationResumed { automation_id } => {
            if let Some(a) = state.automations.get_mut(automation_id) {
                a.paused_at_ms = None;
                a.updated_at_ms = at;
            }
        }
        Event::PromptRunFinished { run_id, status, .. }
            if status == "completed" || status == "completed_with_failures" =>
        {
            let Some(index_id) = state.prompt_runs.get(run_id).and_then(|r| r.index_id()) else { return };
            let Some(id) = state.automation_by_index.get(&(index_id, AutomationKind::Export)).copied() else { return };
            let Some(a) = state.automations.get_mut(&id) else { return };
            // Configured to run (a paused one holds the run until it resumes), not done already.
            if a.enabled() && !a.exported_runs.contains(run_id) {
                a.pending_runs.insert(*run_id);
                state.automations_with_work.insert(id);
            }
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
            if a.pending_runs.is_empty() {
                state.automations_with_work.remove(automation_id);
            }
        }
        _ => {}
    }
}
