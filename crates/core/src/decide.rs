//! `decide`: a command and the state in, events (or a refusal) out. Pure. This file is the
//! registry: each machine's commands go to its own `decide`.

use crate::command::EngineCommand;
use crate::machines::{api_key, connector, import_job, index, video, webhook};
use crate::{Command, Ctx, DomainError, State, Timer};
use spool_model::{ApiKeyId, ConnectorId, Event, ImportJobId, IndexId, Scope};

pub use api_key::{KEY_EXPIRY_DAYS_MAX, KEY_NAME_CHARS_MAX, KEY_PREFIX_CHARS};
pub use connector::{
    CONNECTOR_NAME_CHARS_MAX, EXPORT_BASE_PATH_CHARS_MAX, TEST_ERROR_CHARS_MAX, normalize_export_base_path,
};
pub use index::{INDEX_DESCRIPTION_CHARS_MAX, INDEX_NAME_CHARS_MAX};

/// Events for one stream. The sequencer appends decisions in the order it made them, so no
/// expected version is needed: nothing else writes events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvents {
    pub stream: String,
    pub events: Vec<Event>,
}

/// What a command resolved to, so the caller can render its answer from the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Index(IndexId),
    ApiKey(ApiKeyId),
    Connector(ConnectorId),
    ImportJob(ImportJobId),
    Webhook(spool_model::WebhookId),
    Delivery(spool_model::DeliveryId),
    Video(spool_model::VideoId),
    Prompt(spool_model::PromptId),
    PromptRun(spool_model::PromptRunId),
    /// A manual segment retry of a run.
    SegmentRetry(spool_model::PromptRunId, spool_model::RetryId),
    Export(spool_model::ExportId),
    Automation(spool_model::AutomationId),
    /// Nothing to show (effect outcomes, usage records, timers).
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub streams: Vec<StreamEvents>,
    pub outcome: Outcome,
}

impl Decision {
    /// Events for one stream.
    pub fn one(stream: String, events: Vec<Event>, outcome: Outcome) -> Decision {
        Decision { streams: vec![StreamEvents { stream, events }], outcome }
    }

    /// No events.
    pub fn nothing(outcome: Outcome) -> Decision {
        Decision { streams: Vec::new(), outcome }
    }

    pub fn is_empty(&self) -> bool {
        self.streams.iter().all(|s| s.events.is_empty())
    }
}

/// A name: trimmed not empty, at most `max` characters, no control characters.
pub(crate) fn check_name(field: &'static str, name: &str, max: usize) -> Result<String, DomainError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    let n = name.chars().count();
    if n > max {
        return Err(DomainError::invalid(field, format!("must be at most {max} characters (got {n})")));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(DomainError::invalid(field, "must not contain control characters"));
    }
    Ok(name.to_string())
}

/// The webhook deliveries of a decision's domain events, decided on the state after the
/// decision's events (the sequencer folds them first) and appended with them.
pub fn outbox(state_after: &State, decision: &Decision, ctx: &mut Ctx) -> Vec<StreamEvents> {
    webhook::outbox(state_after, decision, ctx)
}

pub fn decide(state: &State, cmd: &Command, ctx: &mut Ctx) -> Result<Decision, DomainError> {
    match cmd {
        Command::Index(c) => index::decide(state, c, ctx),
        Command::ApiKey(c) => api_key::decide(state, c, ctx),
        Command::Connector(c) => connector::decide(state, c, ctx),
        Command::Import(c) => import_job::decide(state, c, ctx),
        Command::Webhook(c) => webhook::decide(state, c, ctx),
        Command::Video(c) => video::decide(state, c, ctx),
        Command::Prompt(c) => crate::machines::prompt::decide(state, c, ctx),
        Command::PromptRun(c) => crate::machines::prompt_run::decide(state, c, ctx),
        Command::Export(c) => crate::machines::export::decide(state, c, ctx),
        Command::Automation(c) => crate::machines::automation::decide(state, c, ctx),
        Command::Engine(EngineCommand::FireTimer { timer }) => match timer {
            Timer::ImportFileRetry { .. } => import_job::fire_retry(state, timer),
            Timer::ImportScanRetry { .. } => import_job::fire_scan_retry(state, timer),
            Timer::DeliveryRetry { .. } => webhook::fire_retry(state, timer),
            Timer::PromptTaskRetry { .. } => crate::machines::prompt_run::fire_retry(state, timer),
            Timer::ExportRetry { .. } => crate::machines::export::fire_retry(state, timer),
            Timer::AutomationWatch { .. } => crate::machines::automation::fire_watch(state, timer),
            Timer::AutomationDebounce { .. } => crate::machines::automation::fire_debounce(state, timer, ctx),
        },
    }
}

/// Scopes in the order the API lists them.
pub fn scope_names(scopes: &[Scope]) -> Vec<&'static str> {
    scopes.iter().map(|s| s.as_str()).collect()
}
