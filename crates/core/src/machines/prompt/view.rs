//! The JSON of a prompt (contract §2.8).

use super::Prompt;
use serde_json::{Value, json};
use spool_model::time::rfc3339_ms;

fn schema_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({}))
}

pub fn prompt(p: &Prompt) -> Value {
    json!({
        "prompt_id": p.prompt_id.to_string(),
        "user_id": p.user_id,
        "name": p.name,
        "description": p.description,
        "prompt_text": p.prompt_text,
        "json_schema": schema_json(&p.json_schema),
        "video_level": p.video_level.as_ref().map(|v| json!({
            "instructions_text": v.instructions_text,
            "json_schema": schema_json(&v.json_schema),
        })),
        "semantic_indexing": {
            "disabled_segment_fields": p.semantic.disabled_segment_fields,
            "disabled_video_level_fields": p.semantic.disabled_video_level_fields,
        },
        "is_active": true,
        "created_at": rfc3339_ms(p.created_at_ms),
        "updated_at": rfc3339_ms(p.updated_at_ms),
    })
}

/// `PromptUsageStats`.
pub fn usage(p: &Prompt, st: &crate::State) -> Value {
    json!({
        "prompt_id": p.prompt_id.to_string(),
        "name": p.name,
        "is_active": true,
        "is_in_use": p.is_in_use(st),
        "created_at": rfc3339_ms(p.created_at_ms),
        "schema_properties_count": super::schema::properties_count(&p.json_schema),
    })
}
