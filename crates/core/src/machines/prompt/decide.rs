use super::*;
use crate::{Ctx, Decision, DomainError, Outcome, State};
use spool_model::Event;

/// Bounds of the SDK's docstrings.
pub const PROMPT_NAME_CHARS: (usize, usize) = (3, 100);
pub const PROMPT_TEXT_CHARS: (usize, usize) = (10, 5000);
pub const PROMPT_DESCRIPTION_CHARS_MAX: usize = 500;
pub const VIDEO_LEVEL_TEXT_CHARS_MAX: usize = 5000;
/// Fields of each `semantic_indexing` list, and characters of each.
pub const SEMANTIC_FIELDS_MAX: usize = 100;
pub const SEMANTIC_FIELD_CHARS_MAX: usize = 200;

fn bad(field: &'static str, message: String) -> DomainError {
    DomainError::Invalid { field, message }
}

fn chars(field: &'static str, v: &str, min: usize, max: usize) -> Result<(), DomainError> {
    let n = v.chars().count();
    if n < min || n > max {
        return Err(bad(field, format!("must be {min} to {max} characters (got {n})")));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        return Err(bad(field, "must not contain control characters".into()));
    }
    Ok(())
}

fn schema(field: &'static str, text: &str) -> Result<(), DomainError> {
    super::schema::check_text(text).map_err(|m| bad(field, m))
}

fn video_level(v: &PromptVideoLevel) -> Result<(), DomainError> {
    chars("video_level.instructions_text", &v.instructions_text, 1, VIDEO_LEVEL_TEXT_CHARS_MAX)?;
    schema("video_level.json_schema", &v.json_schema)
}

fn semantic(s: &PromptSemantic) -> Result<(), DomainError> {
    for (field, list) in [
        ("semantic_indexing.disabled_segment_fields", &s.disabled_segment_fields),
        ("semantic_indexing.disabled_video_level_fields", &s.disabled_video_level_fields),
    ] {
        if list.len() > SEMANTIC_FIELDS_MAX {
            return Err(bad(field, format!("at most {SEMANTIC_FIELDS_MAX} fields")));
        }
        for f in list {
            chars(field, f, 1, SEMANTIC_FIELD_CHARS_MAX)?;
        }
    }
    Ok(())
}

fn live<'a>(state: &'a State, id: &PromptId) -> Result<&'a Prompt, DomainError> {
    state
        .prompts
        .get(id)
        .filter(|p| p.is_live())
        .ok_or_else(|| DomainError::NotFound { kind: "prompt", id: id.to_string() })
}

pub fn decide(state: &State, cmd: &PromptCommand, ctx: &mut Ctx) -> Result<Decision, DomainError> {
    match cmd {
        PromptCommand::CreatePrompt {
            user_id,
            name,
            description,
            prompt_text,
            json_schema,
            video_level: vl,
            semantic: sem,
        } => {
            chars("name", name, PROMPT_NAME_CHARS.0, PROMPT_NAME_CHARS.1)?;
            chars("description", description, 0, PROMPT_DESCRIPTION_CHARS_MAX)?;
            chars("prompt_text", prompt_text, PROMPT_TEXT_CHARS.0, PROMPT_TEXT_CHARS.1)?;
            schema("json_schema", json_schema)?;
            if let Some(v) = vl {
                video_level(v)?;
            }
            semantic(sem)?;
            let prompt_id = PromptId(ctx.new_ulid());
            let event = Event::PromptCreated {
                prompt_id,
                user_id: user_id.clone(),
                name: name.clone(),
                description: description.clone(),
                prompt_text: prompt_text.clone(),
                json_schema: json_schema.clone(),
                video_level: vl.clone(),
                semantic: sem.clone(),
            };
            Ok(Decision::one(prompt_id.to_string(), vec![event], Outcome::Prompt(prompt_id)))
        }
        PromptCommand::UpdatePrompt {
            prompt_id,
            name,
            description,
            prompt_text,
            json_schema,
            video_level: given,
            clear_video_level,
            semantic: sem,
        } => {
            live(state, prompt_id)?;
            if given.is_some() && *clear_video_level {
                return Err(bad("clear_video_level", "send video_level or clear_video_level, not both".into()));
            }
            let vl: Option<Option<PromptVideoLevel>> =
                if *clear_video_level { Some(None) } else { given.clone().map(Some) };
            if let Some(n) = name {
                chars("name", n, PROMPT_NAME_CHARS.0, PROMPT_NAME_CHARS.1)?;
            }
            if let Some(d) = description {
                chars("description", d, 0, PROMPT_DESCRIPTION_CHARS_MAX)?;
            }
            if let Some(t) = prompt_text {
                chars("prompt_text", t, PROMPT_TEXT_CHARS.0, PROMPT_TEXT_CHARS.1)?;
            }
            if let Some(s) = json_schema {
                schema("json_schema", s)?;
            }
            if let Some(Some(v)) = &vl {
                video_level(v)?;
            }
            if let Some(s) = sem {
                semantic(s)?;
            }
            let nothing = name.is_none()
                && description.is_none()
                && prompt_text.is_none()
                && json_schema.is_none()
                && vl.is_none()
                && sem.is_none();
            if nothing {
                // An empty update answers the prompt unchanged.
                return Ok(Decision::nothing(Outcome::Prompt(*prompt_id)));
            }
            let event = Event::PromptUpdated {
                prompt_id: *prompt_id,
                name: name.clone(),
                description: description.clone(),
                prompt_text: prompt_text.clone(),
                json_schema: json_schema.clone(),
                video_level: vl,
                semantic: sem.clone(),
            };
            Ok(Decision::one(prompt_id.to_string(), vec![event], Outcome::Prompt(*prompt_id)))
        }
        PromptCommand::DeletePrompt { prompt_id, force } => {
            let p = live(state, prompt_id)?;
            if p.is_in_use(state) && !force {
                return Err(DomainError::InvalidState(format!(
                    "prompt {prompt_id} is used by a run or an automation; delete with force=true"
                )));
            }
            Ok(Decision::one(
                prompt_id.to_string(),
                vec![Event::PromptDeleted { prompt_id: *prompt_id }],
                Outcome::Prompt(*prompt_id),
            ))
        }
    }
}
