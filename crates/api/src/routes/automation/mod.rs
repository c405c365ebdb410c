//! Index automations (contract §5; the responses are its recommendations, engine-spec/api.md):
//! GET / PUT `/indexes/{id}/automations/{import|export}`, and `…/pause`, `…/resume`.

use super::{run_command, view_reply};
use crate::body::{JsonBody, PathParam, idempotency_key};
use crate::{ApiError, AppState, Principal};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;
use spool_core::machines::automation::{AutomationCommand, AutomationKind, DEBOUNCE_INTERVALS, view};
use spool_core::{Command, Outcome};
use spool_model::{AutomationConfig, ConnectorId, IndexId, PromptId, Scope};

use super::ops_prelude::*;

/// This machine's `/api/v2` routes (`crate::routes::api_ops`).
pub(crate) fn ops() -> Vec<Op> {
    use Resp::*;
    vec![
        op!(get "/indexes/{index_id}/automations/import" get_import, "getImportAutomation", "automations", Local("Automation")),
        op!(put "/indexes/{index_id}/automations/import" put_import, "putImportAutomation", "automations", Local("Automation"), body = json_body("ImportAutomationBody")),
        op!(post "/indexes/{index_id}/automations/import/pause" pause_import, "pauseImportAutomation", "automations", Local("Automation")),
        op!(post "/indexes/{index_id}/automations/import/resume" resume_import, "resumeImportAutomation", "automations", Local("Automation")),
        op!(get "/indexes/{index_id}/automations/export" get_export, "getExportAutomation", "automations", Local("Automation")),
        op!(put "/indexes/{index_id}/automations/export" put_export, "putExportAutomation", "automations", Local("Automation"), body = json_body("ExportAutomationBody")),
        op!(post "/indexes/{index_id}/automations/export/pause" pause_export, "pauseExportAutomation", "automations", Local("Automation")),
        op!(post "/indexes/{index_id}/automations/export/resume" resume_export, "resumeExportAutomation", "automations", Local("Automation")),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetBody {
    prompt_id: String,
    #[serde(default)]
    video_segmentation_type: Option<String>,
    #[serde(default)]
    audio_segmentation_type: Option<String>,
    #[serde(default)]
    video_segment_duration: Option<Value>,
    #[serde(default)]
    audio_segment_duration: Option<Value>,
    #[serde(default)]
    processing_model: Option<String>,
    #[serde(default)]
    enable_transcription: Option<bool>,
    #[serde(default)]
    enable_image_embedding: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    paused: bool,
    connector_id: String,
    source_prefix: String,
    file_pattern: String,
    #[serde(default = "yes")]
    recursive: bool,
    debounce_interval: String,
    prompt_preset: PresetBody,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportBody {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    paused: bool,
    destination_connector_id: String,
    #[serde(default)]
    destination_subpath: Option<String>,
}

fn yes() -> bool {
    true
}

fn index(raw: &str) -> Result<IndexId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("index", raw))
}

fn connector(raw: &str) -> Result<ConnectorId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("connector", raw))
}

fn render(st: &spool_core::State, out: Outcome) -> spool_runtime::Reply {
    let v = match out {
        Outcome::Automation(id) => st.automations.get(&id).map(|a| view::automation(st, a)),
        _ => None,
    };
    view_reply(StatusCode::OK, v)
}

fn not_found(index_id: &IndexId, kind: AutomationKind) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "automation_not_found",
        format!("index {index_id} has no {} automation", kind.as_str()),
    )
}

async fn get(app: &AppState, raw: &str, kind: AutomationKind) -> Result<Response, ApiError> {
    let index_id = index(raw)?;
    let v = app.rt.read(|st| -> Result<Value, ApiError> {
        st.live_index(&index_id).ok_or_else(|| ApiError::not_found("index", raw))?;
        st.automation_by_index
            .get(&(index_id, kind))
            .and_then(|id| st.automations.get(id))
            .map(|a| view::automation(st, a))
            .ok_or_else(|| not_found(&index_id, kind))
    })?;
    Ok(super::json(StatusCode::OK, &v))
}

async fn pause_or_resume(app: &AppState, raw: &str, kind: AutomationKind, pause: bool) -> Result<Response, ApiError> {
    let index_id = index(raw)?;
    let cmd = if pause {
        AutomationCommand::PauseAutomation { index_id, kind }
    } else {
        AutomationCommand::ResumeAutomation { index_id, kind }
    };
    run_command(app, Command::Automation(cmd), None, Vec::new(), render).await
}

pub async fn get_import(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    get(&app, &raw, AutomationKind::Import).await
}

pub async fn get_export(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    get(&app, &raw, AutomationKind::Export).await
}

pub async fn put_import(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    PathParam(raw): PathParam,
    body: JsonBody<ImportBody>,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let index_id = index(&raw)?;
    let idem =
        idempotency_key(&headers, &who, "PUT", &format!("/indexes/{index_id}/automations/import"), &body.canonical)?;
    let b = body.value;
    let debounce_ms = DEBOUNCE_INTERVALS
        .iter()
        .find(|(n, _)| *n == b.debounce_interval)
        .map(|(_, ms)| *ms)
        .ok_or_else(|| ApiError::validation("debounce_interval", "must be one of 5m, 10m, 1h, 1d"))?;
    let p = &b.prompt_preset;
    let prompt_id: PromptId = p.prompt_id.parse().map_err(|_| ApiError::not_found("prompt", &p.prompt_id))?;
    let options = super::prompt_run::RunOptions {
        video_segmentation_type: p.video_segmentation_type.as_deref(),
        audio_segmentation_type: p.audio_segmentation_type.as_deref(),
        video_segment_duration: p.video_segment_duration.as_ref(),
        audio_segment_duration: p.audio_segment_duration.as_ref(),
        processing_model: p.processing_model.as_deref(),
        enable_transcription: p.enable_transcription,
        enable_image_embedding: p.enable_image_embedding,
    };
    let preset = super::prompt_run::run_settings(&app, "prompt_preset.", &options)?;
    // The prefix and pattern are checked by the decision, as an import job's are (spool-model's
    // `rules`: the watch's job uses them).
    let config = AutomationConfig::Import {
        enabled: b.enabled,
        connector_id: connector(&b.connector_id)?,
        source_prefix: b.source_prefix,
        file_pattern: b.file_pattern,
        recursive: b.recursive,
        debounce_ms,
        prompt_id,
        preset,
    };
    let cmd = AutomationCommand::SaveAutomation { index_id, config, paused: b.paused };
    run_command(&app, Command::Automation(cmd), idem, Vec::new(), render).await
}

pub async fn put_export(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    PathParam(raw): PathParam,
    body: JsonBody<ExportBody>,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let index_id = index(&raw)?;
    let idem =
        idempotency_key(&headers, &who, "PUT", &format!("/indexes/{index_id}/automations/export"), &body.canonical)?;
    let b = body.value;
    let config = AutomationConfig::Export {
        enabled: b.enabled,
        connector_id: connector(&b.destination_connector_id)?,
        subpath: b.destination_subpath.unwrap_or_default(),
    };
    let cmd = AutomationCommand::SaveAutomation { index_id, config, paused: b.paused };
    run_command(&app, Command::Automation(cmd), idem, Vec::new(), render).await
}

pub async fn pause_import(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    pause_or_resume(&app, &raw, AutomationKind::Import, true).await
}

pub async fn resume_import(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    pause_or_resume(&app, &raw, AutomationKind::Import, false).await
}

pub async fn pause_export(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    pause_or_resume(&app, &raw, AutomationKind::Export, true).await
}

pub async fn resume_export(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    pause_or_resume(&app, &raw, AutomationKind::Export, false).await
}
