use super::Prompt;
use crate::State;
use spool_model::{Envelope, Event};

/// Fold the prompt's events; others are not this machine's.
pub fn evolve(state: &mut State, env: &Envelope) {
    let at = env.at_ms;
    match &env.event {
        Event::PromptCreated {
            prompt_id,
            user_id,
            name,
            description,
            prompt_text,
            json_schema,
            video_level,
            semantic,
        } => {
            state.prompts.insert(
                *prompt_id,
                Prompt {
                    prompt_id: *prompt_id,
                    user_id: user_id.clone(),
                    name: name.clone(),
                    description: description.clone(),
                    prompt_text: prompt_text.clone(),
                    json_schema: json_schema.clone(),
                    video_level: video_level.clone(),
                    semantic: semantic.clone(),
                    created_at_ms: at,
                    updated_at_ms: at,
                    deleted_at_ms: None,
                },
            );
        }
        Event::PromptUpdated { prompt_id, name, description, prompt_text, json_schema, video_level, semantic } => {
            if let Some(p) = state.prompts.get_mut(prompt_id) {
                if let Some(v) = name {
                    p.name = v.clone();
                }
                if let Some(v) = description {
                    p.description = v.clone();
                }
                if let Some(v) = prompt_text {
                    p.prompt_text = v.clone();
                }
                if let Some(v) = json_schema {
                    p.json_schema = v.clone();
                }
                if let Some(v) = video_level {
                    p.video_level = v.clone();
                }
                if let Some(v) = semantic {
                    p.semantic = v.clone();
                }
                p.updated_at_ms = at;
            }
        }
        Event::PromptDeleted { prompt_id } => {
            if let Some(p) = state.prompts.get_mut(prompt_id) {
                p.deleted_at_ms = Some(at);
            }
        }
        _ => {}
    }
}
