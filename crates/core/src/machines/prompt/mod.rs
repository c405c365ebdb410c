//! The prompt machine (engine-spec/machines/prompt.md): a prompt's text and the JSON Schema its
//! answers must satisfy; created, updated (only the given fields), deleted. Schemas are checked
//! here (`schema.rs`) with remote and file `$ref` resolution off and a linear-time regex engine.

mod decide;
mod evolve;
pub mod schema;
pub mod view;

pub use decide::*;
pub use evolve::evolve;

use serde::{Deserialize, Serialize};
use spool_model::{AutomationId, PromptId, PromptSemantic, PromptVideoLevel};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PromptCommand {
    CreatePrompt {
        user_id: String,
        name: String,
        description: String,
        prompt_text: String,
        /// The schema's JSON text.
        json_schema: String,
        video_level: Option<PromptVideoLevel>,
        semantic: PromptSemantic,
    },
    /// Only the given fields change; `clear_video_level` removes the video-level part.
    UpdatePrompt {
        prompt_id: PromptId,
        name: Option<String>,
        description: Option<String>,
        prompt_text: Option<String>,
        json_schema: Option<String>,
        video_level: Option<PromptVideoLevel>,
        clear_video_level: bool,
        semantic: Option<PromptSemantic>,
    },
    /// `force` deletes a prompt that runs or automations use (none can yet: prompt runs and
    /// automations come with their issues).
    DeletePrompt { prompt_id: PromptId, force: bool },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    pub prompt_id: PromptId,
    pub user_id: String,
    pub name: String,
    pub description: String,
    pub prompt_text: String,
    pub json_schema: String,
    pub video_level: Option<PromptVideoLevel>,
    pub semantic: PromptSemantic,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub deleted_at_ms: Option<u64>,
}

impl Prompt {
    pub fn is_live(&self) -> bool {
        self.deleted_at_ms.is_none()
    }

    /// Whether a run that has not ended uses it (automations come with their issue). O(runs
    /// not ended).
    /// A run that has not ended uses it, or an import automation's preset names it.
    pub fn is_in_use(&self, state: &crate::State) -> bool {
        state.active_runs.iter().any(|r| state.prompt_runs.get(r).is_some_and(|r| r.prompt_id == self.prompt_id))
            || state
                .automations_by_prompt
                .range((self.prompt_id, AutomationId::from_ulid(ulid::Ulid::nil()))..)
                .next()
                .is_some_and(|(p, _)| *p == self.prompt_id)
    }
}

/// This machine in the registry (`crate::machines::for_each_machine!`).
pub struct Machine;

impl super::Machine for Machine {
    type Command = PromptCommand;
    type Effect = super::NoEffect;
    type Key = spool_model::PromptId;
    const NOT_FOUND: &'static [(&'static str, &'static str)] = &[("prompt", "resource_prompt_not_found")];

    fn decide(
        state: &crate::State,
        cmd: &PromptCommand,
        ctx: &mut crate::Ctx,
    ) -> Result<crate::Decision, crate::DomainError> {
        decide(state, cmd, ctx)
    }

    fn evolve(state: &mut crate::State, env: &spool_model::Envelope) {
        evolve(state, env)
    }
}
