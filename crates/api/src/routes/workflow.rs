//! The workflow resource (contract-search §2.12): the SDK's quickstart from an upload to its
//! results. Each step is made of the engine's own commands: an upload opens an import job,
//! `define` saves a prompt, `process` executes a prompt run, `search` reads the search
//! projection and keeps a ranked snapshot its cursor pages through.
//!
//! `define` asks the `http` processor named by `processors.define` to write the definition
//! (`engine-spec/processors.md`, "Prompt definitions"); without one it saves a **template**,
//! labelled as one in its description.

use super::search::{
    CONDITIONS_MAX, filter_page, int_field, known_runs, live_indexes, parse_conditions, ranked, result_json, strings,
};
use super::{json, run_command, to_reply};
use crate::body::{JsonBody, idempotency_key};
use crate::{ApiError, AppState, Principal};
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};
use spool_core::machines::prompt::PromptCommand;
use spool_core::machines::prompt_run::{PromptRunCommand, RUN_TARGET_VIDEOS_MAX};
use spool_core::{Command, IndexCommand, Outcome};
use spool_model::{IndexId, PromptId, PromptRunId, PromptSemantic, RunStatus, RunTarget, Scope as KeyScope, VideoId};
use spool_search::Scope;
use std::sync::Mutex;

use super::ops_prelude::*;

/// Hits a workflow search keeps in its snapshot (`result_window`).
pub const RESULT_WINDOW: usize = 100;
/// Snapshots kept at once (the oldest goes first), and how long one lives.
pub const SNAPSHOTS_MAX: usize = 1024;
pub const SNAPSHOT_TTL_MS: u64 = 60 * 60 * 1000;
/// Bytes of rendered hits the snapshots hold at most (the oldest go first), and snapshots one
/// caller keeps at most (its oldest go first, never another caller's).
pub const SNAPSHOT_BYTES_MAX: usize = 64 << 20;
pub const SNAPSHOTS_PER_CALLER_MAX: usize = 64;

pub(crate) fn ops() -> Vec<Op> {
    use Resp::*;
    vec![
        Op {
            route: axum::routing::post(upload).layer(axum::extract::DefaultBodyLimit::disable()),
            ..op!(post "/workflow/upload" upload, "workflowUpload", "workflow", Model("ImportJob"), ok = 202, body = Body::Multipart)
        },
        op!(post "/workflow/define" define, "workflowDefine", "workflow", Model("WorkflowDefineResponse"), body = json_body("AnyBody")),
        op!(post "/workflow/process" process, "workflowProcess", "workflow", Model("WorkflowProcessResponse"), ok = 202, body = json_body("AnyBody")),
        op!(post "/workflow/search" search, "workflowSearch", "workflow", Model("WorkflowSearchResponse"), body = json_body("AnyBody")),
        op!(get "/workflow/search/page" search_page, "workflowSearchPage", "workflow", Model("WorkflowSearchResponse"), query = &[CURSOR]),
    ]
}

/// The oldest live index named `name` (a scan of the indexes: there are few).
fn live_index_named(app: &AppState, name: &str) -> Option<IndexId> {
    app.rt
        .read(|st| {
            st.indexes.values().filter(|i| i.is_live() && i.name == name).map(|i| (i.created_at_ms, i.index_id)).min()
        })
        .map(|(_, id)| id)
}

/// The live index named `name`, made (as the caller) when there is none.
pub(crate) async fn index_named(
    app: &AppState,
    who: &Principal,
    headers: &HeaderMap,
    name: &str,
) -> Result<IndexId, ApiError> {
    if let Some(id) = live_index_named(app, name) {
        return Ok(id);
    }
    crate::body::check_text("index_name", name, 255)?;
    let idem = idempotency_key(headers, who, "POST", "/workflow/index-by-name", name.as_bytes())?;
    let cmd = Command::Index(IndexCommand::CreateIndex {
        name: name.to_string(),
        user_id: who.id.clone(),
        description: None,
    });
    let render = |_: &spool_core::State, out: Outcome| match out {
        Outcome::Index(id) => to_reply(StatusCode::OK, &json!({ "index_id": id.to_string() })),
        _ => to_reply(StatusCode::INTERNAL_SERVER_ERROR, &json!({})),
    };
    let reply = match idem {
        Some(k) => app.rt.execute_idempotent(cmd, &k, Vec::new(), render).await?,
        None => app.rt.execute_with(cmd, None, Vec::new(), render).await?.0,
    };
    let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    v["index_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::internal("the index could not be made".to_string()))
}

/// `POST /workflow/upload`: an upload's import job (`source_kind: "upload"`), into `index_id`,
/// else the index named `index_name` (made when missing), else the playground.
pub async fn upload(State(app): State<AppState>, who: Principal, req: Request) -> Result<Response, ApiError> {
    super::video::upload::upload_as(app, who, req, true).await
}

/// The template `define` answers: the instruction as the prompt's text, a schema every
/// answer fits (a summary and keywords, none required).
fn template(instruction: &str) -> Value {
    let short: String = instruction.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(80).collect();
    let name = format!("Workflow: {short}");
    let description: String = format!(
        "Template, not generated: no processor on this server writes prompt definitions (processors.define), so this is a fixed template around the instruction (edit it with PUT /prompts/{{id}}). Instruction: {short}"
    )
    .chars()
    .take(500)
    .collect();
    let prompt_text = format!(
        "{instruction}\n\nDescribe what the segment shows that matters for the instruction above: a short summary, and the keywords (products, brands, actions, sentiment) it mentions."
    );
    json!({
        "name": name.chars().take(100).collect::<String>(),
        "description": description,
        "prompt_text": prompt_text.chars().take(5000).collect::<String>(),
        "json_schema": {
            "type": "object",
            "properties": {
                "summary": { "type": "string" },
                "keywords": { "type": "array", "items": { "type": "string" } },
            },
        },
        "semantic_indexing": { "disabled_segment_fields": [], "disabled_video_level_fields": [] },
    })
}

fn instruction_of(o: &Map<String, Value>, name: &'static str) -> Result<String, ApiError> {
    match o.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            crate::body::check_text(name, s, 4000)?;
            Ok(s.trim().to_string())
        }
        _ => Err(ApiError::validation(name, "must be a non-empty instruction")),
    }
}

fn generation_failed(why: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "prompt_generation_failed",
        format!("the processor that writes prompt definitions failed: {}", why.into()),
    )
    .details(json!({ "setting": "processors.define" }))
}

/// The definition of `instruction`: written by the processor of `processors.define` when
/// there is one (checked like a created prompt: bounds, a usable schema), else the template.
async fn definition(app: &AppState, instruction: &str) -> Result<Value, ApiError> {
    let Some(d) = app.rt.define_prompt(instruction).await.map_err(generation_failed)? else {
        return Ok(template(instruction));
    };
    let text = |k: &str, lo: usize, hi: usize| -> Result<String, ApiError> {
        let s = d.get(k).and_then(Value::as_str).unwrap_or("").trim().to_string();
        let n = s.chars().count();
        if n < lo || n > hi {
            return Err(generation_failed(format!("its {k} must be {lo} to {hi} characters")));
        }
        Ok(s)
    };
    let name = text("name", 3, 100)?;
    let description = text("description", 0, 500)?;
    let prompt_text = text("prompt_text", 10, 5000)?;
    let schema = d
        .get("json_schema")
        .filter(|s| s.is_object())
        .ok_or_else(|| generation_failed("its json_schema is not an object"))?;
    spool_core::machines::prompt::schema::check_text(&schema.to_string())
        .map_err(|e| generation_failed(format!("its json_schema is not usable: {e}")))?;
    Ok(json!({
        "name": name,
        "description": description,
        "prompt_text": prompt_text,
        "json_schema": schema,
        "semantic_indexing": { "disabled_segment_fields": [], "disabled_video_level_fields": [] },
    }))
}

/// Saves a definition as a prompt (idempotent under `route` and the request's key); its JSON,
/// or the refusal.
async fn save_definition(
    app: &AppState,
    who: &Principal,
    headers: &HeaderMap,
    route: &str,
    instruction: &str,
    t: &Value,
) -> Result<Value, ApiError> {
    let idem = idempotency_key(headers, who, "POST", route, instruction.as_bytes())?;
    let cmd = Command::Prompt(PromptCommand::CreatePrompt {
        user_id: who.id.clone(),
        name: t["name"].as_str().unwrap_or_default().to_string(),
        description: t["description"].as_str().unwrap_or_default().to_string(),
        prompt_text: t["prompt_text"].as_str().unwrap_or_default().to_string(),
        json_schema: t["json_schema"].to_string(),
        video_level: None,
        semantic: PromptSemantic::default(),
    });
    let render = |st: &spool_core::State, out: Outcome| {
        let p = match out {
            Outcome::Prompt(id) => st.prompts.get(&id),
            _ => None,
        };
        super::view_reply(StatusCode::OK, p.map(spool_core::machines::prompt::view::prompt))
    };
    let reply = match idem {
        Some(k) => app.rt.execute_idempotent(cmd, &k, Vec::new(), render).await?,
        None => app.rt.execute_with(cmd, None, Vec::new(), render).await?.0,
    };
    let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    if reply.status == 422 {
        // A template always passes: a refused definition is the processor's.
        let why = v["error"]["message"].as_str().unwrap_or("refused").to_string();
        return Err(generation_failed(format!("the prompt it wrote was refused: {why}")));
    }
    if reply.status >= 400 || v.get("prompt_id").is_none() {
        return Err(ApiError::internal("the prompt could not be saved".to_string()));
    }
    Ok(v)
}

/// `POST /workflow/define`.
pub async fn define(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    body: JsonBody<Value>,
) -> Result<Response, ApiError> {
    who.require(KeyScope::Write)?;
    let o = body.value.as_object().ok_or_else(|| ApiError::validation("body", "must be a JSON object"))?;
    let instruction = instruction_of(o, "instruction")?;
    let save = match o.get("save") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::validation("save", "must be a boolean")),
    };
    // A retried define (same key) answers what the first one saved, without asking again.
    if save
        && let Some(k) = idempotency_key(&headers, &who, "POST", "/workflow/define", instruction.as_bytes())?
        && let Some(r) = app.rt.replay(&k)?
        && let Ok(prompt) = serde_json::from_slice::<Value>(&r.body)
        && prompt.get("prompt_id").is_some()
    {
        let definition = json!({
            "name": prompt["name"], "description": prompt["description"], "prompt_text": prompt["prompt_text"],
            "json_schema": prompt["json_schema"], "video_level": null,
            "semantic_indexing": { "disabled_segment_fields": [], "disabled_video_level_fields": [] },
        });
        return Ok(json(
            StatusCode::OK,
            &json!({ "prompt_id": prompt["prompt_id"], "saved": true, "definition": definition, "prompt": prompt }),
        ));
    }
    let mut definition = definition(&app, &instruction).await?;
    if !save {
        definition["video_level"] = Value::Null;
        return Ok(json(StatusCode::OK, &json!({ "prompt_id": null, "saved": false, "definition": definition })));
    }
    let prompt = save_definition(&app, &who, &headers, "/workflow/define", &instruction, &definition).await?;
    definition["video_level"] = Value::Null;
    Ok(json(
        StatusCode::OK,
        &json!({ "prompt_id": prompt["prompt_id"], "saved": true, "definition": definition, "prompt": prompt }),
    ))
}

fn opt_str<'a>(o: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, ApiError> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(ApiError::validation(name, "must be a string")),
    }
}

/// The index `index_id` or `index_name` names (both: they must agree); 404 when unknown.
fn index_of(app: &AppState, o: &Map<String, Value>) -> Result<Option<IndexId>, ApiError> {
    let by_id = match opt_str(o, "index_id")? {
        Some(raw) => Some(live_indexes(app, &[raw.to_string()])?[0]),
        None => None,
    };
    let by_name = match opt_str(o, "index_name")? {
        Some(name) => Some(live_index_named(app, name).ok_or_else(|| ApiError::not_found("index", name))?),
        None => None,
    };
    match (by_id, by_name) {
        (Some(a), Some(b)) if a != b => Err(ApiError::validation("index_name", "names another index than index_id")),
        (a, b) => Ok(a.or(b)),
    }
}

/// `POST /workflow/process`: one prompt run of the named prompt (or of a template saved from
/// `prompt_instruction`) over an import job's videos, named videos or an index.
pub async fn process(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    body: JsonBody<Value>,
) -> Result<Response, ApiError> {
    who.require(KeyScope::Write)?;
    // A retried process (same key) answers the first one's run before anything is resolved
    // again (its job, videos or prompt may have changed since).
    let idem = idempotency_key(&headers, &who, "POST", "/workflow/process", &body.canonical)?;
    if let Some(k) = &idem
        && let Some(r) = app.rt.replay(k)?
    {
        return Ok(super::reply(r));
    }
    let o = body.value.as_object().ok_or_else(|| ApiError::validation("body", "must be a JSON object"))?;
    // What this server cannot do is refused, not dropped.
    if o.get("advanced_transcription") == Some(&Value::Bool(true)) {
        return Err(ApiError::validation(
            "advanced_transcription",
            "this server does not transcribe: no processor here offers it",
        )
        .details(json!({ "field": "advanced_transcription", "supported": false })));
    }
    // Image vectors come from the run's processor (the default one here) and are searched with
    // the embedder's: both are needed, and the built-in probe gives none.
    let procs = app.rt.processors();
    let default_is_http = procs
        .processors
        .get(&procs.default)
        .is_some_and(|p| matches!(p.kind, spool_runtime::ProcessorKind::Http { .. }));
    let image_embedding = app.rt.embedder().is_some() && default_is_http;
    if o.get("create_image_embeddings") == Some(&Value::Bool(true)) && !image_embedding {
        return Err(ApiError::validation(
            "create_image_embeddings",
            "image embeddings need an embedder ([processors.<name>] with kind = \"embed\") and an http processor as processors.default to give each segment's image vector",
        )
        .details(json!({ "field": "create_image_embeddings", "setting": "[processors.<name>] kind = \"embed\"" })));
    }
    let image_embedding = image_embedding && o.get("create_image_embeddings") != Some(&Value::Bool(false));
    let prompt_id = opt_str(o, "prompt_id")?;
    let instruction = opt_str(o, "prompt_instruction")?;
    if prompt_id.is_some() == instruction.is_some() {
        return Err(ApiError::validation("prompt_id", "send exactly one of prompt_id and prompt_instruction"));
    }
    let segmentation = match opt_str(o, "segmentation_mode")? {
        None => None,
        Some("fixed") => Some("fixed"),
        Some("content_aware") => Some("content_aware"),
        Some(_) => return Err(ApiError::validation("segmentation_mode", "must be one of: content_aware, fixed")),
    };
    let duration = o.get("fixed_segment_duration_seconds").filter(|v| !v.is_null());
    if duration.is_some() && segmentation != Some("fixed") {
        return Err(ApiError::validation("fixed_segment_duration_seconds", "is only for segmentation_mode fixed"));
    }
    // The target.
    let job = opt_str(o, "import_job_id")?;
    let video_raw = strings(o, "video_ids")?;
    let index = index_of(&app, o)?;
    if job.is_some() && (!video_raw.is_empty() || index.is_some()) {
        return Err(ApiError::validation("import_job_id", "cannot be sent with video_ids, index_id or index_name"));
    }
    let target = if let Some(raw) = job {
        let job_id: spool_model::ImportJobId = raw.parse().map_err(|_| ApiError::not_found("import_job", raw))?;
        let status = app
            .rt
            .read(|st| st.imports.get(&job_id).map(|j| j.status))
            .ok_or_else(|| ApiError::not_found("import_job", raw))?;
        if status != spool_core::machines::import_job::JobStatus::Completed {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "import_job_not_completed",
                format!("import job {raw} is {}; process it once it is completed", status.as_str()),
            )
            .details(json!({ "import_job_id": raw, "status": status.as_str() })));
        }
        let mut videos = Vec::new();
        let mut from = 0u32;
        loop {
            let page = app.rt.job_files(&job_id, spool_core::imports::FileStatus::Imported, from, 1000)?;
            for f in &page {
                videos.extend(f.part_videos());
            }
            match page.last() {
                Some(last) if page.len() == 1000 => from = last.file.file_id + 1,
                _ => break,
            }
            if videos.len() > RUN_TARGET_VIDEOS_MAX {
                break;
            }
        }
        if videos.is_empty() {
            return Err(ApiError::validation("import_job_id", "the import job imported no video"));
        }
        if videos.len() > RUN_TARGET_VIDEOS_MAX {
            return Err(ApiError::validation(
                "import_job_id",
                format!("the import job made more than {RUN_TARGET_VIDEOS_MAX} videos; process its index instead"),
            ));
        }
        let index_id = app.rt.read(|st| st.imports.get(&job_id).map(|j| j.index_id));
        RunTarget::Videos { video_ids: videos, index_id }
    } else if !video_raw.is_empty() {
        let ids = video_raw
            .iter()
            .map(|r| r.parse::<VideoId>().map_err(|_| ApiError::not_found("video", r)))
            .collect::<Result<Vec<_>, _>>()?;
        RunTarget::Videos { video_ids: ids, index_id: index }
    } else if let Some(index_id) = index {
        RunTarget::Index { index_id }
    } else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "target_required",
            "name what to process: import_job_id, video_ids, index_id or index_name",
        )
        .details(json!({ "fields": ["import_job_id", "video_ids", "index_id", "index_name"] })));
    };
    // The prompt.
    let (prompt, inline) = match (prompt_id, instruction) {
        (Some(raw), _) => {
            let id: PromptId = raw.parse().map_err(|_| ApiError::not_found("prompt", raw))?;
            let p = app
                .rt
                .read(|st| st.prompts.get(&id).map(spool_core::machines::prompt::view::prompt))
                .ok_or_else(|| ApiError::not_found("prompt", raw))?;
            (p, false)
        }
        (None, Some(text)) => {
            instruction_of(o, "prompt_instruction")?;
            if app.rt.is_index_partition() {
                // Prompts are the catalog's: one made here would be unknown to GET /prompts.
                return Err(ApiError::validation(
                    "prompt_instruction",
                    "this cluster makes prompts in its catalog: define it first (POST /workflow/define) and send its prompt_id",
                ));
            }
            // A retried process finds the prompt its first try saved, without asking again.
            let key = idempotency_key(&headers, &who, "POST", "/workflow/process/prompt", text.trim().as_bytes())?;
            let saved = match &key {
                Some(k) => app.rt.replay(k)?.and_then(|r| serde_json::from_slice::<Value>(&r.body).ok()),
                None => None,
            };
            match saved.filter(|p| p.get("prompt_id").is_some()) {
                Some(p) => (p, true),
                None => {
                    let d = definition(&app, text.trim()).await?;
                    (save_definition(&app, &who, &headers, "/workflow/process/prompt", text.trim(), &d).await?, true)
                }
            }
        }
        (None, None) => unreachable_prompt()?,
    };
    let prompt_id: PromptId = prompt["prompt_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::internal("a prompt without an id".to_string()))?;
    let options = super::prompt_run::RunOptions {
        video_segmentation_type: segmentation,
        audio_segmentation_type: segmentation,
        video_segment_duration: duration,
        audio_segment_duration: duration,
        processing_model: None,
        enable_transcription: Some(false),
        enable_image_embedding: Some(image_embedding),
    };
    let settings = super::prompt_run::run_settings(&app, "", &options)?;
    let cmd = PromptRunCommand::ExecuteRun { prompt_id, target, settings, executed_by: who.id.clone() };
    let render = move |st: &spool_core::State, out: Outcome| {
        let run = match out {
            Outcome::PromptRun(id) => st.prompt_runs.get(&id),
            _ => None,
        };
        super::view_reply(
            StatusCode::ACCEPTED,
            run.map(|r| {
                json!({
                    "prompt": prompt,
                    "run": super::prompt_run::run_view(st, r, u64::MAX),
                    "status_url": format!("/api/v2/prompt-runs/{}", r.run_id),
                    "prompt_created_inline": inline,
                })
            }),
        )
    };
    run_command(&app, Command::PromptRun(cmd), idem, Vec::new(), render).await
}

fn unreachable_prompt() -> Result<(Value, bool), ApiError> {
    Err(ApiError::validation("prompt_id", "send exactly one of prompt_id and prompt_instruction"))
}

/// A search's ranked hits, kept for its cursor.
struct Snapshot {
    made_at_ms: u64,
    /// The rendered hits' size.
    bytes: usize,
    who: String,
    mode: &'static str,
    level: &'static str,
    items: Vec<Value>,
    truncated: bool,
    scope: Value,
    coverage: Value,
    warnings: Vec<String>,
}

/// The snapshots of this process (`GET /workflow/search/page` reads them; a restart forgets
/// them and their cursors answer 404).
#[derive(Default)]
pub struct Snapshots(Mutex<std::collections::BTreeMap<String, Snapshot>>);

fn page_json(id: &str, s: &Snapshot, offset: usize, limit: usize) -> Value {
    let end = offset.saturating_add(limit).min(s.items.len());
    let data: Vec<Value> = s.items.get(offset..end).unwrap_or_default().to_vec();
    let next = (end < s.items.len()).then(|| super::import_job::encode_cursor(&format!("{id}:{end}:{limit}")));
    json!({
        "data": data,
        "mode": s.mode,
        "result_level": s.level,
        "scope": s.scope,
        "coverage": s.coverage,
        "warnings": s.warnings,
        "pagination": {
            "limit": limit,
            "count": data.len(),
            "has_more": next.is_some(),
            "next_cursor": next,
            "result_window": RESULT_WINDOW,
            "truncated": s.truncated,
        },
    })
}

/// `POST /workflow/search`: a lexical query (`mode: "vector"` is the only name the SDK has for
/// a ranked search; `warnings` says the ranking is lexical) or filter conditions
/// (`"condition"`), over the runs, videos and index named (else every run), as a snapshot of
/// at most [`RESULT_WINDOW`] hits; `result_level: "video"` keeps each video's best hit.
pub async fn search(State(app): State<AppState>, who: Principal, body: JsonBody<Value>) -> Result<Response, ApiError> {
    who.require(KeyScope::Read)?;
    let o = body.value.as_object().ok_or_else(|| ApiError::validation("body", "must be a JSON object"))?;
    let limit = spool_model::num::sat_usize(int_field(o, "limit", 10, 1, 50)?);
    let level = match o.get("result_level").and_then(Value::as_str).unwrap_or("segment") {
        "segment" => "segment",
        "video" => "video",
        _ => return Err(ApiError::validation("result_level", "must be one of: segment, video")),
    };
    let query = opt_str(o, "query")?.map(str::to_string);
    let filters = o.get("filters").filter(|f| !f.is_null() && f.as_array().is_none_or(|a| !a.is_empty()));
    if query.is_some() == filters.is_some() {
        return Err(ApiError::validation("query", "send exactly one of query and filters"));
    }
    let runs = known_runs(&app, &strings(o, "prompt_run_ids")?)?;
    let videos: Vec<String> = strings(o, "video_ids")?;
    let index = index_of(&app, o)?;
    let scope = Scope {
        run_ids: runs.iter().map(ToString::to_string).collect(),
        index_ids: index.iter().map(ToString::to_string).collect(),
        video_ids: videos.clone(),
    };
    // Which runs are covered, and which are still on their way (their results partial).
    let (searched, pending) = app.rt.read(|st| {
        let mut searched = 0u64;
        let mut pending = Vec::new();
        let all: Vec<PromptRunId> = if runs.is_empty() {
            match index {
                Some(i) => st.runs_by_index.get(&i).map(|s| s.iter().map(|(_, id)| *id).collect()).unwrap_or_default(),
                None => st.runs_by_created.iter().map(|(_, id)| *id).take(10_000).collect(),
            }
        } else {
            runs.clone()
        };
        let position = app.rt.search_index().map_or(u64::MAX, |s| s.position());
        for id in &all {
            if let Some(r) = st.prompt_runs.get(id) {
                searched += 1;
                let done = matches!(r.status, RunStatus::Completed | RunStatus::CompletedWithFailures);
                if !done || position < r.finished_seq {
                    pending.push(id.to_string());
                }
            }
        }
        (searched, pending)
    });
    let mut warnings: Vec<String> =
        pending.iter().take(10).map(|r| format!("run {r} is still processing: its results are partial")).collect();
    let (mode, mut items, truncated) = match (&query, filters) {
        (Some(q), _) => {
            if app.rt.embedder().is_none() {
                warnings.push(
                    "lexical ranking: no embedder configured (BM25; similarity_score is the lexical score)".into(),
                );
            }
            let hits = ranked(&app, q, &[], &scope, RESULT_WINDOW + 1).await?;
            let truncated = hits.len() > RESULT_WINDOW;
            let items: Vec<Value> =
                hits.iter().take(RESULT_WINDOW).map(|h| result_json(&app, &h.doc, h.score, &[])).collect();
            ("vector", items, truncated)
        }
        (None, f) => {
            let conds = parse_conditions(f, "filters", CONDITIONS_MAX)?;
            let fields: Vec<String> = conds.iter().map(|c| c.field.clone()).collect();
            let (docs, next) = filter_page(&app, &conds, &scope, None, RESULT_WINDOW)?;
            let items: Vec<Value> = docs.iter().map(|d| result_json(&app, d, None, &fields)).collect();
            ("condition", items, next.is_some())
        }
    };
    if level == "video" {
        let mut seen = std::collections::HashSet::new();
        items.retain(|v| seen.insert(v["video_id"].as_str().unwrap_or_default().to_string()));
        for v in &mut items {
            v["result_type"] = json!("video");
            for (from, to) in [
                ("segment_id", "preview_segment_id"),
                ("start_time", "preview_start_time"),
                ("end_time", "preview_end_time"),
            ] {
                if let Some(x) = v.as_object_mut().and_then(|m| m.remove(from)) {
                    v[to] = x;
                }
            }
        }
    }
    let bytes = items.iter().map(|v| serde_json::to_vec(v).map_or(0, |b| b.len())).sum::<usize>();
    let snapshot = Snapshot {
        bytes,
        made_at_ms: app.rt.now_ms(),
        who: who.id.clone(),
        mode,
        level,
        items,
        truncated,
        scope: json!({
            "index_ids": index.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "prompt_run_ids": runs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "video_ids": videos,
        }),
        coverage: json!({ "runs_searched": searched, "runs_pending": pending.len() }),
        warnings,
    };
    let id = app.rt.new_ulid().to_string();
    let page = page_json(&id, &snapshot, 0, limit);
    let now = app.rt.now_ms();
    let mut all = app.snapshots.0.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|_, s| now.saturating_sub(s.made_at_ms) < SNAPSHOT_TTL_MS);
    // Ids are ULIDs: key order is age order.
    let mine: Vec<String> = all.iter().filter(|(_, s)| s.who == who.id).map(|(k, _)| k.clone()).collect();
    for k in mine.iter().take((mine.len() + 1).saturating_sub(SNAPSHOTS_PER_CALLER_MAX)) {
        all.remove(k);
    }
    let mut held: usize = all.values().map(|s| s.bytes).sum();
    while !all.is_empty() && (all.len() >= SNAPSHOTS_MAX || held + snapshot.bytes > SNAPSHOT_BYTES_MAX) {
        let Some(oldest) = all.keys().next().cloned() else { break };
        if let Some(s) = all.remove(&oldest) {
            held -= s.bytes;
        }
    }
    all.insert(id, snapshot);
    drop(all);
    Ok(json(StatusCode::OK, &page))
}

/// `GET /workflow/search/page?cursor=`: the next page of a snapshot (404 when it is unknown,
/// expired or another caller's).
pub async fn search_page(
    State(app): State<AppState>,
    who: Principal,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    who.require(KeyScope::Read)?;
    let q = crate::body::Query::parse(q.as_deref())?;
    let raw = q.get("cursor").unwrap_or_default().to_string();
    let gone = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "resource_search_cursor_not_found",
            "the search cursor is unknown or expired; search again",
        )
        .details(json!({ "resource": "search_cursor" }))
    };
    let key = super::import_job::decode_cursor(Some(&raw)).map_err(|_| gone())?.ok_or_else(gone)?;
    let mut parts = key.splitn(3, ':');
    let (Some(id), Some(offset), Some(limit)) = (parts.next(), parts.next(), parts.next()) else { return Err(gone()) };
    let offset: usize = offset.parse().map_err(|_| gone())?;
    let limit: usize = limit.parse().map_err(|_| gone())?;
    let now = app.rt.now_ms();
    let all = app.snapshots.0.lock().unwrap_or_else(|p| p.into_inner());
    let s = all
        .get(id)
        .filter(|s| s.who == who.id && now.saturating_sub(s.made_at_ms) < SNAPSHOT_TTL_MS)
        .ok_or_else(gone)?;
    let page = page_json(id, s, offset, limit.clamp(1, 50));
    drop(all);
    Ok(json(StatusCode::OK, &page))
}
