use super::*;
use crate::machines::export::ExportCommand;
use crate::{Ctx, Decision, DomainError, Outcome, State, StreamEvents};
use spool_model::{ConnectorScope, Event, ExportKind};

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
            if source_prefix.chars().any(char::is_control) || source_prefix.chars().count() > 1024 {
                return Err(DomainError::invalid(
                    "source_prefix",
                    "must be at most 1024 characters, without control characters",
                ));
            }
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
