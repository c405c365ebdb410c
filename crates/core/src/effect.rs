//! Effects: what must happen next, derived from the state alone. The runtime runs each effect
//! (at least once) and reports the outcome as a command; `decide` drops outcomes that no longer
//! fit, so a repeated effect is harmless. This file is the registry of the machines' effects.

use crate::State;
use crate::machines::{
    api_key, connector, import_job, import_job::ImportEffect, index, index::IndexEffect, video, video::VideoEffect,
    webhook, webhook::WebhookEffect,
};
use serde::Serialize;
use spool_model::{Event, ImportJobId, IndexId};

/// One line per machine with effects; untagged, so the JSON is the machine's own
/// (`{"ImportFile":{…}}`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(untagged)]
pub enum Effect {
    Index(IndexEffect),
    Import(ImportEffect),
    Webhook(WebhookEffect),
    Video(VideoEffect),
    PromptRun(crate::machines::prompt_run::PromptRunEffect),
    Export(crate::machines::export::ExportEffect),
    Automation(crate::machines::automation::AutomationEffect),
}

/// The aggregate whose effects an event can change: after a batch the runtime offers the
/// effects of exactly these, so the work per event does not grow with the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum WorkKey {
    Index(IndexId),
    ImportJob(ImportJobId),
    Webhook(spool_model::WebhookId),
    Video(spool_model::VideoId),
    PromptRun(spool_model::PromptRunId),
    Export(spool_model::ExportId),
    Automation(spool_model::AutomationId),
}

/// Another aggregate an event gives work to, read from the state after it (a run's end: its
/// index's export automation).
pub fn also_touches(state: &State, event: &Event) -> Option<WorkKey> {
    crate::machines::automation::effects::touched_by(state, event)
}

/// The aggregate with work that an event concerns, if any.
pub fn work_key(event: &Event) -> Option<WorkKey> {
    index::work_key(event)
        .or_else(|| import_job::work_key(event))
        .or_else(|| webhook::work_key(event))
        .or_else(|| video::work_key(event))
        .or_else(|| crate::machines::prompt_run::work_key(event))
        .or_else(|| crate::machines::export::work_key(event))
        .or_else(|| crate::machines::automation::work_key(event))
        .or_else(|| connector::work_key(event))
        .or_else(|| api_key::work_key(event))
}

impl Effect {
    /// The aggregate this effect works for.
    pub fn work_key(&self) -> WorkKey {
        match self {
            Effect::Index(e) => e.work_key(),
            Effect::Import(e) => e.work_key(),
            Effect::Webhook(e) => e.work_key(),
            Effect::Video(e) => e.work_key(),
            Effect::PromptRun(e) => e.work_key(),
            Effect::Export(e) => e.work_key(),
            Effect::Automation(e) => e.work_key(),
        }
    }
}

/// The effects one aggregate needs now (bounded per aggregate).
pub fn effects_for(state: &State, key: WorkKey) -> Vec<Effect> {
    match key {
        WorkKey::Index(id) => index::effects_for(state, id).into_iter().map(Effect::Index).collect(),
        WorkKey::ImportJob(id) => import_job::effects_for(state, id).into_iter().map(Effect::Import).collect(),
        WorkKey::Webhook(id) => webhook::effects_for(state, id).into_iter().map(Effect::Webhook).collect(),
        WorkKey::Video(id) => video::effects_for(state, id).into_iter().map(Effect::Video).collect(),
        WorkKey::PromptRun(id) => {
            crate::machines::prompt_run::effects_for(state, id).into_iter().map(Effect::PromptRun).collect()
        }
        WorkKey::Export(id) => {
            crate::machines::export::effects_for(state, id).into_iter().map(Effect::Export).collect()
        }
        WorkKey::Automation(id) => {
            crate::machines::automation::effects_for(state, id).into_iter().map(Effect::Automation).collect()
        }
    }
}

/// Every effect pending now: the effects of each aggregate in the work sets `evolve` keeps
/// (`State::active_imports`, `State::deleting`). Used at start; afterwards effects are offered
/// per touched aggregate ([`effects_for`]).
pub fn pending_effects(state: &State) -> Vec<Effect> {
    let mut out = Vec::new();
    for id in &state.active_imports {
        out.extend(effects_for(state, WorkKey::ImportJob(*id)));
    }
    for id in &state.deleting {
        out.extend(effects_for(state, WorkKey::Index(*id)));
    }
    for id in &state.webhooks_with_work {
        out.extend(effects_for(state, WorkKey::Webhook(*id)));
    }
    for id in &state.videos_deleting {
        out.extend(effects_for(state, WorkKey::Video(*id)));
    }
    for id in &state.active_runs {
        out.extend(effects_for(state, WorkKey::PromptRun(*id)));
    }
    for id in &state.active_exports {
        out.extend(effects_for(state, WorkKey::Export(*id)));
    }
    for id in &state.automations_with_work {
        out.extend(effects_for(state, WorkKey::Automation(*id)));
    }
    out
}

/// Effects that concern one stream (for `spool replay`).
pub fn pending_effects_for(state: &State, stream: &str) -> Vec<Effect> {
    pending_effects(state)
        .into_iter()
        .filter(|e| match e.work_key() {
            WorkKey::Index(id) => id.to_string() == stream,
            WorkKey::ImportJob(id) => id.to_string() == stream,
            WorkKey::Webhook(id) => id.to_string() == stream,
            WorkKey::Video(id) => id.to_string() == stream,
            WorkKey::PromptRun(id) => id.to_string() == stream,
            WorkKey::Export(id) => id.to_string() == stream,
            WorkKey::Automation(id) => id.to_string() == stream,
        })
        .collect()
}
