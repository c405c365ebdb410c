//! Prompts (contract §2.8): create, retrieve, list, update (`PUT`, only the given keys),
//! delete, `test-schema`, usage. The prompt machine checks every bound and schema.

use super::{json, run_command, view_reply};
use crate::body::{JsonBody, PathParam, Query, idempotency_key};
use crate::{ApiError, AppState, Principal};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;
use spool_core::machines::prompt::{PromptCommand, schema, view};
use spool_core::{Command, Outcome};
use spool_model::{PromptId, PromptSemantic, PromptVideoLevel, Scope};

use super::ops_prelude::*;

/// This machine's `/api/v2` routes (`crate::routes::api_ops`).
pub(crate) fn ops() -> Vec<Op> {
    use Resp::*;
    vec![
        op!(post "/prompts" create, "createPrompt", "prompts", Model("Prompt"), ok = 201, body = json_body("CreatePrompt")),
        op!(get "/prompts" list, "listPrompts", "prompts", Model("PromptListResponse"),
                query = &[q("active_only", QKind::Bool), q("include_defaults", QKind::Bool)]),
        op!(post "/prompts/test-schema" test_schema, "testPromptSchema", "prompts", Model("TestSchemaResponse"), body = json_body("TestSchema")),
        op!(get "/prompts/{prompt_id}" retrieve, "getPrompt", "prompts", Model("Prompt")),
        op!(put "/prompts/{prompt_id}" update, "updatePrompt", "prompts", Model("Prompt"), body = json_body("UpdatePrompt")),
        op!(delete "/prompts/{prompt_id}" delete, "deletePrompt", "prompts", Model("DeleteResponse"), query = &[q("force", QKind::Bool)]),
        op!(get "/prompts/{prompt_id}/usage" usage, "getPromptUsage", "prompts", Model("PromptUsageStats")),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoLevelBody {
    instructions_text: String,
    json_schema: Value,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SemanticBody {
    #[serde(default)]
    disabled_segment_fields: Vec<String>,
    #[serde(default)]
    disabled_video_level_fields: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePrompt {
    name: String,
    #[serde(default)]
    description: String,
    prompt_text: String,
    json_schema: Value,
    #[serde(default)]
    video_level: Option<VideoLevelBody>,
    #[serde(default)]
    semantic_indexing: Option<SemanticBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatePrompt {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    prompt_text: Option<String>,
    #[serde(default)]
    json_schema: Option<Value>,
    #[serde(default)]
    video_level: Option<VideoLevelBody>,
    #[serde(default)]
    semantic_indexing: Option<SemanticBody>,
    #[serde(default)]
    clear_video_level: bool,
}

/// A schema as the JSON text the prompt keeps; it must be an object (its content is checked by
/// the machine).
fn schema_text(field: &str, v: &Value) -> Result<String, ApiError> {
    if !v.is_object() {
        return Err(ApiError::validation(field, "must be a JSON object (a JSON Schema)"));
    }
    Ok(v.to_string())
}

fn video_level(v: VideoLevelBody) -> Result<PromptVideoLevel, ApiError> {
    Ok(PromptVideoLevel {
        instructions_text: v.instructions_text,
        json_schema: schema_text("video_level.json_schema", &v.json_schema)?,
    })
}

fn semantic(s: SemanticBody) -> PromptSemantic {
    PromptSemantic {
        disabled_segment_fields: s.disabled_segment_fields,
        disabled_video_level_fields: s.disabled_video_level_fields,
    }
}

fn parse_id(raw: &str) -> Result<PromptId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("prompt", raw))
}

fn render(status: StatusCode) -> impl FnOnce(&spool_core::State, Outcome) -> spool_runtime::Reply + Send + 'static {
    move |st, out| {
        let p = match out {
            Outcome::Prompt(id) => st.prompts.get(&id),
            _ => None,
        };
        view_reply(status, p.map(view::prompt))
    }
}

pub async fn create(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    body: JsonBody<CreatePrompt>,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let idem = idempotency_key(&headers, &who, "POST", "/prompts", &body.canonical)?;
    let b = body.value;
    let cmd = Command::Prompt(PromptCommand::CreatePrompt {
        user_id: who.id.clone(),
        name: b.name,
        description: b.description,
        prompt_text: b.prompt_text,
        json_schema: schema_text("json_schema", &b.json_schema)?,
        video_level: b.video_level.map(video_level).transpose()?,
        semantic: b.semantic_indexing.map(semantic).unwrap_or_default(),
    });
    run_command(&app, cmd, idem, Vec::new(), render(StatusCode::CREATED)).await
}

pub async fn update(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    PathParam(raw): PathParam,
    body: JsonBody<UpdatePrompt>,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let prompt_id = parse_id(&raw)?;
    let idem = idempotency_key(&headers, &who, "PUT", &format!("/prompts/{prompt_id}"), &body.canonical)?;
    let b = body.value;
    let cmd = Command::Prompt(PromptCommand::UpdatePrompt {
        prompt_id,
        name: b.name,
        description: b.description,
        prompt_text: b.prompt_text,
        json_schema: b.json_schema.as_ref().map(|s| schema_text("json_schema", s)).transpose()?,
        video_level: b.video_level.map(video_level).transpose()?,
        clear_video_level: b.clear_video_level,
        semantic: b.semantic_indexing.map(semantic),
    });
    run_command(&app, cmd, idem, Vec::new(), render(StatusCode::OK)).await
}

pub async fn retrieve(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    super::show(&app, "prompt", &raw, |st, id: PromptId| st.prompts.get(&id).filter(|p| p.is_live()).map(view::prompt))
}

/// `GET /prompts`: `PromptListResponse`, oldest first. Every prompt is active (there is no
/// deactivation) and Spool ships no default prompts, so both flags only validate.
pub async fn list(State(app): State<AppState>, who: Principal, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let q = Query::parse(q.as_deref())?;
    q.bool("active_only", true)?;
    q.bool("include_defaults", true)?;
    let v = app.rt.read(|st| {
        let mut live: Vec<_> = st.prompts.values().filter(|p| p.is_live()).collect();
        live.sort_by_key(|p| (p.created_at_ms, p.prompt_id));
        let prompts: Vec<Value> = live.iter().map(|p| view::prompt(p)).collect();
        serde_json::json!({ "prompts": prompts, "total_count": live.len(), "active_count": live.len() })
    });
    Ok(json(StatusCode::OK, &v))
}

pub async fn delete(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let prompt_id = parse_id(&raw)?;
    let q = Query::parse(q.as_deref())?;
    let force = q.bool("force", false)?;
    let cmd = Command::Prompt(PromptCommand::DeletePrompt { prompt_id, force });
    let render = move |_: &spool_core::State, _: Outcome| {
        view_reply(StatusCode::OK, Some(serde_json::json!({ "message": format!("prompt {prompt_id} deleted") })))
    };
    run_command(&app, cmd, None, Vec::new(), render).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSchema {
    json_schema: Value,
    sample_data: Value,
}

/// `POST /prompts/test-schema`: check a schema and validate a sample against it (nothing is
/// stored). An invalid schema or sample answers `valid: false` with the reason; a schema past
/// the work budget (`schema::check_expansion`) is refused, 422 naming `json_schema`.
pub async fn test_schema(who: Principal, body: JsonBody<TestSchema>) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let b = body.value;
    if b.json_schema.is_object()
        && let Err(e) = schema::check_expansion(&b.json_schema)
        && e.contains("expand")
    {
        return Err(ApiError::validation("json_schema", e));
    }
    let v = match schema::compile(&b.json_schema) {
        Err(e) => {
            serde_json::json!({ "valid": false, "message": "the schema is invalid", "error": e, "validated_data": null })
        }
        Ok(validator) => match schema::validate(&validator, &b.sample_data) {
            Ok(()) => serde_json::json!({
                "valid": true,
                "message": "the sample satisfies the schema",
                "validated_data": if b.sample_data.is_object() { b.sample_data.clone() } else { Value::Null },
                "error": null,
            }),
            Err(errors) => serde_json::json!({
                "valid": false,
                "message": "the sample does not satisfy the schema",
                "error": errors.join("; "),
                "errors": errors,
                "validated_data": null,
            }),
        },
    };
    Ok(json(StatusCode::OK, &v))
}

/// `GET /prompts/{id}/usage`.
pub async fn usage(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    super::show(&app, "prompt", &raw, |st, id: PromptId| {
        st.prompts.get(&id).filter(|p| p.is_live()).map(|p| view::usage(p, st))
    })
}
