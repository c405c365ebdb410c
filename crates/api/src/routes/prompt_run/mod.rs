//! Prompt runs (contract §2.9): execute over an index, videos or the playground; list,
//! retrieve, cancel; results, video-level results, failed segments, segment retries, the cost
//! estimate and the processor calls. Also `POST /videos/{id}/process`,
//! `GET /videos/{id}/prompt-runs` and `GET /indexes/{id}/prompt-runs`.

use super::{json, run_command, view_reply};
use crate::body::{JsonBody, PathParam, PathParams, Query, idempotency_key};
use crate::{ApiError, AppState, Principal};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use spool_core::machines::prompt_run::{PromptRun, PromptRunCommand, parse_segment_id, view};
use spool_core::{Command, Outcome};
use spool_model::{IndexId, PromptId, PromptRunId, RetryId, RunSettings, RunStatus, RunTarget, Scope, Segmentation, VideoId};

/// How far the search projection has read (`u64::MAX` without one): a finished run reads as
/// finished only past it.
fn searched(app: &AppState) -> u64 {
    app.rt.search_index().map_or(u64::MAX, |s| s.position())
}

use super::ops_prelude::*;

/// This machine's `/api/v2` routes (`crate::routes::api_ops`).
pub(crate) fn ops() -> Vec<Op> {
    use Resp::*;
    vec![
        op!(get "/indexes/{index_id}/prompt-runs" index_runs, "listIndexPromptRuns", "prompt-runs", Page("PromptRun"), query = &[LIMIT_100, CURSOR]),
        op!(get "/prompt-runs" list, "listPromptRuns", "prompt-runs", Array("PromptRun"), query = &[LIMIT_1000]),
        op!(post "/prompt-runs/execute" execute, "executePromptRun", "prompt-runs", Model("PromptRun"), body = json_body("ExecuteRun")),
        op!(post "/prompt-runs/estimate" estimate, "estimatePromptRun", "prompt-runs", Model("PromptRunCostEstimate"), body = json_body("ExecuteRun")),
        op!(get "/prompt-runs/{run_id}" retrieve, "getPromptRun", "prompt-runs", Model("PromptRun")),
        op!(post "/prompt-runs/{run_id}/cancel" cancel, "cancelPromptRun", "prompt-runs", Model("PromptRun")),
        op!(get "/prompt-runs/{run_id}/results" results, "listPromptRunResults", "prompt-runs", Page("SegmentRunResult"),
                query = &[LIMIT_100, CURSOR, q("video_id", QKind::Str)]),
        op!(get "/prompt-runs/{run_id}/failed-segments" failed_segments, "getPromptRunFailedSegments", "prompt-runs", Model("PromptRunFailedSegmentsManifest")),
        op!(get "/prompt-runs/{run_id}/llm-calls" llm_calls, "listPromptRunLlmCalls", "prompt-runs", Array("LlmCall")),
        op!(get "/prompt-runs/{run_id}/videos/{video_id}/video-result" video_result, "getPromptRunVideoResult", "prompt-runs", Model("PromptRunVideoResult")),
        op!(post "/prompt-runs/{run_id}/videos/{video_id}/segments/{segment_id}/retry" retry_segment, "retryPromptRunSegment", "prompt-runs",
                Model("PromptRunSegmentRetry"), ok = 202),
        op!(get "/prompt-runs/{run_id}/videos/{video_id}/segments/{segment_id}/retries/{retry_id}" retry_status, "getPromptRunSegmentRetry",
                "prompt-runs", Model("PromptRunSegmentRetryStatus")),
        op!(post "/videos/{video_id}/process" process_video, "processVideo", "prompt-runs", Model("ProcessingStartedResponse"), ok = 202,
                query = &[q("prompt_id", QKind::Str), q("segment_duration", QKind::Int(1, 300))]),
        op!(get "/videos/{video_id}/prompt-runs" video_runs, "listVideoPromptRuns", "prompt-runs", Array("PromptRun"), query = &[LIMIT_1000]),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteBody {
    prompt_id: String,
    target: Value,
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

fn parse_run(raw: &str) -> Result<PromptRunId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("prompt_run", raw))
}

fn duration(field: &str, v: Option<&Value>) -> Result<Option<u32>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| (1..=300).contains(&n)) => {
            Ok(n.as_u64().map(spool_model::num::sat_u32))
        }
        Some(_) => Err(ApiError::validation(field, "must be an integer from 1 to 300")),
    }
}

fn segmentation(
    field: &str,
    v: Option<&str>,
    default: Segmentation,
    allowed: &[&str],
) -> Result<Segmentation, ApiError> {
    match v {
        None => Ok(default),
        Some(s) if allowed.contains(&s) => Segmentation::parse(s).ok_or_else(|| ApiError::validation(field, "unknown")),
        Some(_) => Err(ApiError::validation(field, format!("must be one of: {}", allowed.join(", ")))
            .details(json!({ "field": field, "allowed": allowed }))),
    }
}

fn target(v: &Value) -> Result<RunTarget, ApiError> {
    let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or("");
    let index = |field: &str, raw: Option<&Value>| -> Result<Option<IndexId>, ApiError> {
        match raw {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| ApiError::not_found("index", s)),
            Some(_) => Err(ApiError::validation(field, "must be an index id")),
        }
    };
    match kind {
        "index" => match index("target.index_id", v.get("index_id"))? {
            Some(index_id) => Ok(RunTarget::Index { index_id }),
            None => Err(ApiError::validation("target.index_id", "is required when target.type is `index`")),
        },
        "videos" => {
            let ids = v
                .get("video_ids")
                .and_then(|a| a.as_array())
                .ok_or_else(|| ApiError::validation("target.video_ids", "must be a non-empty array of video ids"))?;
            let mut video_ids = Vec::new();
            for id in ids {
                let s = id.as_str().ok_or_else(|| ApiError::validation("target.video_ids", "must hold video ids"))?;
                video_ids.push(s.parse::<VideoId>().map_err(|_| ApiError::not_found("video", s))?);
            }
            Ok(RunTarget::Videos { video_ids, index_id: index("target.index_id", v.get("index_id"))? })
        }
        "playground" => Ok(RunTarget::Playground),
        _ => Err(ApiError::validation("target.type", "must be one of: index, videos, playground")
            .details(json!({ "field": "target.type", "allowed": ["index", "videos", "playground"] }))),
    }
}

/// The fields of an execute body that say how a run goes (also an automation's
/// `prompt_preset`): checked one way for both.
pub(crate) struct RunOptions<'a> {
    pub video_segmentation_type: Option<&'a str>,
    pub audio_segmentation_type: Option<&'a str>,
    pub video_segment_duration: Option<&'a Value>,
    pub audio_segment_duration: Option<&'a Value>,
    pub processing_model: Option<&'a str>,
    pub enable_transcription: Option<bool>,
    pub enable_image_embedding: Option<bool>,
}

/// A run's settings from its options, field names prefixed with `prefix` in errors (`""` or
/// `"prompt_preset."`), the processor resolved from the configuration.
pub(crate) fn run_settings(app: &AppState, prefix: &str, o: &RunOptions<'_>) -> Result<RunSettings, ApiError> {
    let field = |name: &str| format!("{prefix}{name}");
    let processor = app.rt.processors().resolve(o.processing_model).map_err(|allowed| {
        let f = field("processing_model");
        ApiError::validation(
            &f,
            format!(
                "names no configured processor; this server has: {} (see [processors.<name>] in the configuration)",
                allowed.join(", ")
            ),
        )
        .details(json!({ "field": f, "allowed": allowed }))
    })?;
    let s = RunSettings {
        video_segmentation: segmentation(
            &field("video_segmentation_type"),
            o.video_segmentation_type,
            Segmentation::Smart,
            &["smart", "fixed", "content_aware"],
        )?,
        audio_segmentation: segmentation(
            &field("audio_segmentation_type"),
            o.audio_segmentation_type,
            Segmentation::ContentAware,
            &["fixed", "content_aware"],
        )?,
        video_segment_s: duration(&field("video_segment_duration"), o.video_segment_duration)?,
        audio_segment_s: duration(&field("audio_segment_duration"), o.audio_segment_duration)?,
        processing_model: o.processing_model.map(str::to_string).filter(|m| !m.trim().is_empty()),
        processor,
        enable_transcription: o.enable_transcription.unwrap_or(true),
        enable_image_embedding: o.enable_image_embedding.unwrap_or(true),
    };
    spool_core::machines::prompt_run::check_settings(&s)?;
    Ok(s)
}

/// The run a request asks for, with its processor resolved from the configuration.
fn settings(app: &AppState, b: &ExecuteBody) -> Result<(PromptId, RunTarget, RunSettings), ApiError> {
    let prompt_id: PromptId = b.prompt_id.parse().map_err(|_| ApiError::not_found("prompt", &b.prompt_id))?;
    let target = target(&b.target)?;
    let options = RunOptions {
        video_segmentation_type: b.video_segmentation_type.as_deref(),
        audio_segmentation_type: b.audio_segmentation_type.as_deref(),
        video_segment_duration: b.video_segment_duration.as_ref(),
        audio_segment_duration: b.audio_segment_duration.as_ref(),
        processing_model: b.processing_model.as_deref(),
        enable_transcription: b.enable_transcription,
        enable_image_embedding: b.enable_image_embedding,
    };
    Ok((prompt_id, target, run_settings(app, "", &options)?))
}

fn render_run(st: &spool_core::State, out: Outcome) -> spool_runtime::Reply {
    let r = match out {
        Outcome::PromptRun(id) => st.prompt_runs.get(&id),
        _ => None,
    };
    view_reply(StatusCode::OK, r.map(|r| run_view(st, r, u64::MAX)))
}

/// A run's JSON with its `waiting_on` (why it is not moving; only while it has not ended).
pub(crate) fn run_view(st: &spool_core::State, r: &spool_core::machines::prompt_run::PromptRun, searched: u64) -> Value {
    let mut v = view::run(r);
    // `completed` means searchable: until the search projection passed the event that finished
    // the run (`searched`: its position, read before the state), it reads as still processing
    // (`engine-spec/search.md`).
    let done = matches!(r.status, RunStatus::Completed | RunStatus::CompletedWithFailures);
    if done && searched < r.finished_seq {
        v["status"] = json!("processing");
    }
    if let Some(w) = spool_core::waiting::of_run(st, r) {
        v["waiting_on"] = w.json();
    }
    v
}

pub async fn execute(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    body: JsonBody<ExecuteBody>,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let idem = idempotency_key(&headers, &who, "POST", "/prompt-runs/execute", &body.canonical)?;
    let (prompt_id, target, settings) = settings(&app, &body.value)?;
    let cmd = PromptRunCommand::ExecuteRun { prompt_id, target, settings, executed_by: who.id.clone() };
    run_command(&app, Command::PromptRun(cmd), idem, Vec::new(), render_run).await
}

/// `POST /prompt-runs/estimate`: what `execute` would do, checked the same way. Spool bills
/// nothing, so the cost is zero and the balance always sufficient; the breakdown counts the
/// videos and their seconds.
pub async fn estimate(
    State(app): State<AppState>,
    who: Principal,
    body: JsonBody<ExecuteBody>,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let (prompt_id, target, settings) = settings(&app, &body.value)?;
    let listed = match &target {
        RunTarget::Videos { video_ids, .. }
            if video_ids.len() <= spool_core::machines::prompt_run::RUN_TARGET_VIDEOS_MAX =>
        {
            video_ids.clone()
        }
        _ => Vec::new(),
    };
    let rows = app.rt.video_rows(listed)?;
    let v = app.rt.read(|st| -> Result<Value, ApiError> {
        if st.prompts.get(&prompt_id).is_none_or(|p| !p.is_live()) {
            return Err(ApiError::not_found("prompt", &prompt_id.to_string()));
        }
        // O(1) for an index or the playground (the size of its set and its kept total of
        // media); summed over a list of videos (at most RUN_TARGET_VIDEOS_MAX), checked as
        // execute checks it.
        let (videos, seconds) = match &target {
            RunTarget::Index { index_id } => {
                st.live_index(index_id).ok_or_else(|| ApiError::not_found("index", &index_id.to_string()))?;
                let ms = st.index_media_ms.get(index_id).copied().unwrap_or(0);
                (spool_model::num::sat_usize(st.index_counts.get(index_id).copied().unwrap_or(0)), Some(ms as f64 / 1e3))
            }
            RunTarget::Playground => {
                let p = spool_core::imports::PLAYGROUND;
                let ms = st.index_media_ms.get(&p).copied().unwrap_or(0);
                (spool_model::num::sat_usize(st.index_counts.get(&p).copied().unwrap_or(0)), Some(ms as f64 / 1e3))
            }
            RunTarget::Videos { video_ids, index_id } => {
                let max = spool_core::machines::prompt_run::RUN_TARGET_VIDEOS_MAX;
                if video_ids.is_empty() || video_ids.len() > max {
                    return Err(ApiError::validation("target.video_ids", format!("must hold 1 to {max} video ids")));
                }
                let mut seen = std::collections::BTreeSet::new();
                let mut total = 0.0;
                for id in video_ids {
                    let (v, _) = crate::routes::shown(st, &rows, id)
                        .ok_or_else(|| ApiError::not_found("video", &id.to_string()))?;
                    if let Some(i) = index_id
                        && v.index_id != *i
                    {
                        return Err(ApiError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "video_not_in_index",
                            format!("video {id} is not in index {i}"),
                        ));
                    }
                    if seen.insert(*id) {
                        total += v.range_seconds().1 - v.range_seconds().0;
                    }
                }
                (seen.len(), Some(total))
            }
        };
        Ok(json!({
            "estimated_mt": 0.0,
            "breakdown": {
                "videos": videos,
                "video_seconds": seconds,
                "processor": settings.processor,
                "note": "Spool runs your own processors and bills nothing",
            },
            "sufficient_balance": true,
            "current_balance_mt": 0.0,
        }))
    })?;
    Ok(json(StatusCode::OK, &v))
}

/// `GET /prompt-runs?limit=`: a bare array, newest first.
pub async fn list(State(app): State<AppState>, who: Principal, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let q = Query::parse(q.as_deref())?;
    let limit = spool_model::num::sat_usize(q.int("limit", 200, 1, 1000)?);
    let searched = searched(&app);
    let v = app.rt.read(|st| {
        let runs: Vec<Value> = st
            .runs_by_created
            .iter()
            .rev()
            .take(limit)
            .filter_map(|(_, id)| st.prompt_runs.get(id))
            .map(|r| run_view(st, r, searched))
            .collect();
        Value::Array(runs)
    });
    Ok(json(StatusCode::OK, &v))
}

pub async fn retrieve(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let searched = searched(&app);
    super::show(&app, "prompt_run", &raw, |st, id: PromptRunId| st.prompt_runs.get(&id).map(|r| run_view(st, r, searched)))
}

pub async fn cancel(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let run_id = parse_run(&raw)?;
    let idem = idempotency_key(&headers, &who, "POST", &format!("/prompt-runs/{run_id}/cancel"), b"")?;
    let cmd = PromptRunCommand::CancelRun { run_id, requested_by: who.id.clone() };
    run_command(&app, Command::PromptRun(cmd), idem, Vec::new(), render_run).await
}

/// A run and the number of one of its videos, or 404.
fn run_video<'a>(st: &'a spool_core::State, run: &str, video: &str) -> Result<(&'a PromptRun, u32), ApiError> {
    let run_id = parse_run(run)?;
    let r = st.prompt_runs.get(&run_id).ok_or_else(|| ApiError::not_found("prompt_run", run))?;
    let video_id: VideoId = video.parse().map_err(|_| ApiError::not_found("video", video))?;
    let n = r.video_pos.get(&video_id).copied().ok_or_else(|| ApiError::not_found("video", video))?;
    Ok((r, n))
}

/// `GET /prompt-runs/{id}/results?video_id=`: a video's segment results, in time order.
pub async fn results(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let q = Query::parse(q.as_deref())?;
    let limit = spool_model::num::sat_usize(q.int("limit", 50, 1, 100)?);
    let video =
        q.get("video_id").filter(|v| !v.is_empty()).ok_or_else(|| ApiError::validation("video_id", "is required"))?;
    let from = super::import_job::decode_file_cursor(q.get("cursor"))?;
    // The video's row (its title is each result's `video_name`), read before the page.
    let video_row = match video.parse::<spool_model::VideoId>() {
        Ok(id) => app.rt.video_rows([id])?,
        Err(_) => Default::default(),
    };
    // Only segments with a result are listed: the first `limit + 1` from the cursor (a scan
    // bounded by the video's segments), whose answers are rows (`run_answers`).
    let page_keys = |st: &spool_core::State| -> Result<Vec<spool_core::AnswerKey>, ApiError> {
        let (r, n) = run_video(st, &raw, video)?;
        let mut keys = Vec::new();
        view::video_answer_keys(r, n, from, limit + 1, &mut keys);
        keys.retain(|k| matches!(k.task, spool_model::RunTask::Segment(_)));
        Ok(keys)
    };
    let v = app.rt.read_with_answers(
        |st| page_keys(st).unwrap_or_default(),
        |st, answers| -> Result<Value, ApiError> {
            let (r, _) = run_video(st, &raw, video)?;
            let keys = page_keys(st)?;
            let rows = spool_core::ViewRows { videos: &video_row, answers };
            let segment = |k: &spool_core::AnswerKey| match k.task {
                spool_model::RunTask::Segment(s) => Some(s),
                spool_model::RunTask::Video(_) => None,
            };
            // The cursor is the next segment with a result, whether or not a row was read.
            let next = keys.get(limit).and_then(segment);
            let data: Vec<Value> =
                keys.iter().take(limit).filter_map(segment).filter_map(|s| view::result(r, s, &rows)).collect();
            Ok(json!({
                "data": data,
                "pagination": {
                    "limit": limit,
                    "has_more": next.is_some(),
                    "next_cursor": next.map(|s| super::import_job::encode_cursor(&s.to_string())),
                },
            }))
        },
    )??;
    Ok(json(StatusCode::OK, &v))
}

pub async fn video_result(
    State(app): State<AppState>,
    who: Principal,
    PathParams(p): PathParams,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let [run, video] = p.as_slice() else { return Err(ApiError::not_found("prompt_run", "")) };
    // Its answer is a row (`run_answers`): read when the task succeeded.
    let key = |st: &spool_core::State| {
        let (r, n) = run_video(st, run, video).ok()?;
        let t = r.videos.get(n as usize)?.video_level.as_ref()?;
        (t.status == spool_core::machines::prompt_run::TaskStatus::Succeeded)
            .then_some(spool_core::AnswerKey { run_id: r.run_id, task: spool_model::RunTask::Video(n) })
    };
    let v = app.rt.read_with_answers(|st| key(st).into_iter().collect(), |st, answers| -> Result<Value, ApiError> {
        let (r, n) = run_video(st, run, video)?;
        if r.prompt.video_level.is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "resource_video_result_not_found",
                "this run's prompt has no video_level part, so it has no video-level results",
            ));
        }
        view::video_result(r, n, answers).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "resource_video_result_not_found",
                "the video-level result is not there yet: it is asked once the video's segments have ended (and one succeeded)",
            )
        })
    })??;
    Ok(json(StatusCode::OK, &v))
}

pub async fn failed_segments(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    super::show(&app, "prompt_run", &raw, |st, id: PromptRunId| st.prompt_runs.get(&id).map(view::failed_segments))
}

pub async fn llm_calls(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    // The calls are rows (`run_calls`): the last `RUN_LLM_CALLS_KEPT_MAX` of those the run has
    // recorded, read after the run is found, then rendered with it.
    let run_id = parse_run(&raw)?;
    let recorded = app.rt.read(|st| st.prompt_runs.get(&run_id).map(|r| r.calls));
    let Some(recorded) = recorded else { return Err(ApiError::not_found("prompt_run", &raw)) };
    let kept = spool_core::machines::prompt_run::RUN_LLM_CALLS_KEPT_MAX;
    let from = recorded.saturating_sub(kept as u64);
    let calls = app.rt.run_calls(&run_id, from, usize::try_from(recorded - from).unwrap_or(kept))?;
    let v = app.rt.read(|st| st.prompt_runs.get(&run_id).map(|r| view::llm_calls(r, &calls)));
    let v = v.ok_or_else(|| ApiError::not_found("prompt_run", &raw))?;
    Ok(json(StatusCode::OK, &v))
}

pub async fn retry_segment(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    PathParams(p): PathParams,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let [run, video, seg] = p.as_slice() else { return Err(ApiError::not_found("prompt_run", "")) };
    let run_id = parse_run(run)?;
    let video_id: VideoId = video.parse().map_err(|_| ApiError::not_found("video", video))?;
    let segment = parse_segment_id(&run_id, seg).ok_or_else(|| ApiError::not_found("segment", seg))?;
    let path = format!("/prompt-runs/{run_id}/videos/{video_id}/segments/{seg}/retry");
    let idem = idempotency_key(&headers, &who, "POST", &path, b"")?;
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    let cmd = PromptRunCommand::RetrySegment { run_id, video_id, segment };
    let render = move |st: &spool_core::State, out: Outcome| {
        let v = match out {
            Outcome::SegmentRetry(run_id, retry_id) => st.prompt_runs.get(&run_id).and_then(|r| {
                r.retries.get(&retry_id).map(|rt| {
                    let mut v = view::retry(r, &retry_id, rt, true);
                    v["idempotency_key"] = json!(key);
                    v
                })
            }),
            _ => None,
        };
        view_reply(StatusCode::ACCEPTED, v)
    };
    run_command(&app, Command::PromptRun(cmd), idem, Vec::new(), render).await
}

pub async fn retry_status(
    State(app): State<AppState>,
    who: Principal,
    PathParams(p): PathParams,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let [run, video, seg, retry] = p.as_slice() else { return Err(ApiError::not_found("prompt_run", "")) };
    let searched = searched(&app);
    let v = app.rt.read(|st| -> Result<Value, ApiError> {
        let (r, _) = run_video(st, run, video)?;
        let retry_id: RetryId = retry.parse().map_err(|_| ApiError::not_found("segment_retry", retry))?;
        let rt = r.retries.get(&retry_id).ok_or_else(|| ApiError::not_found("segment_retry", retry))?;
        if parse_segment_id(&r.run_id, seg).is_none_or(|n| rt.task != spool_model::RunTask::Segment(n)) {
            return Err(ApiError::not_found("segment_retry", retry));
        }
        let mut v = view::retry(r, &retry_id, rt, false);
        // Completed means searchable here too: the retried segment's answer is indexed once the
        // run, finished again, is passed by the search projection.
        let run_done = matches!(r.status, RunStatus::Completed | RunStatus::CompletedWithFailures);
        if v["status"] == "completed" && (!run_done || searched < r.finished_seq) {
            v["status"] = json!("processing");
        }
        Ok(v)
    })?;
    Ok(json(StatusCode::OK, &v))
}

/// `POST /videos/{id}/process?segment_duration=&prompt_id=`: a run of one video with fixed
/// segments, of `prompt_id` or else the configured default prompt (422 without either).
pub async fn process_video(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    PathParam(raw): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let video_id: VideoId = raw.parse().map_err(|_| ApiError::not_found("video", &raw))?;
    let q = Query::parse(q.as_deref())?;
    let secs = spool_model::num::sat_u32(q.int("segment_duration", 10, 1, 300)?);
    let prompt = q.get("prompt_id").filter(|p| !p.is_empty()).or(app.cfg.default_prompt.as_deref()).ok_or_else(|| {
        ApiError::validation(
            "prompt_id",
            "is required: this server has no default prompt; send prompt_id, or set one with SPOOL_DEFAULT_PROMPT (config default_prompt)",
        )
        .details(json!({ "field": "prompt_id", "setting": "SPOOL_DEFAULT_PROMPT" }))
    })?;
    let prompt_id: PromptId = prompt.parse().map_err(|_| ApiError::not_found("prompt", prompt))?;
    if !crate::routes::video_visible(&app, &video_id)? {
        return Err(ApiError::not_found("video", &raw));
    }
    let busy = app.rt.read(|st| -> Result<bool, ApiError> {
        Ok(view::video_status(st, &video_id) == "processing")
    })?;
    if busy {
        return Err(ApiError::validation("video_id", "the video is already processing; wait for its run to end"));
    }
    let idem = idempotency_key(&headers, &who, "POST", &format!("/videos/{video_id}/process?{secs}&{prompt_id}"), b"")?;
    let settings = RunSettings {
        video_segmentation: Segmentation::Fixed,
        audio_segmentation: Segmentation::Fixed,
        video_segment_s: Some(secs),
        audio_segment_s: Some(secs),
        processing_model: None,
        processor: app.rt.processors().default.clone(),
        enable_transcription: true,
        enable_image_embedding: true,
    };
    let cmd = PromptRunCommand::ExecuteRun {
        prompt_id,
        target: RunTarget::Videos { video_ids: vec![video_id], index_id: None },
        settings,
        executed_by: who.id.clone(),
    };
    let render = |st: &spool_core::State, out: Outcome| {
        let v = match out {
            Outcome::PromptRun(id) => st.prompt_runs.get(&id).map(|r| {
                json!({ "message": format!("processing started: prompt run {}", r.run_id), "run_id": r.run_id.to_string() })
            }),
            _ => None,
        };
        view_reply(StatusCode::OK, v)
    };
    run_command(&app, Command::PromptRun(cmd), idem, Vec::new(), render).await
}

/// `GET /videos/{id}/prompt-runs?limit=`: the runs a video is in, newest first (bare array).
pub async fn video_runs(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let video_id: VideoId = raw.parse().map_err(|_| ApiError::not_found("video", &raw))?;
    let q = Query::parse(q.as_deref())?;
    let limit = spool_model::num::sat_usize(q.int("limit", 50, 1, 1000)?);
    if !crate::routes::video_visible(&app, &video_id)? {
        return Err(ApiError::not_found("video", &raw));
    }
    let searched = searched(&app);
    let v = app.rt.read(|st| -> Result<Value, ApiError> {
        let runs = st.video_runs.get(&video_id).into_iter().flatten().rev().take(limit);
        Ok(Value::Array(runs.filter_map(|r| st.prompt_runs.get(r)).map(|r| run_view(st, r, searched)).collect()))
    })?;
    Ok(json(StatusCode::OK, &v))
}

/// `GET /indexes/{id}/prompt-runs`: the index's runs, newest first, as a cursor page.
pub async fn index_runs(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let index_id: IndexId = raw.parse().map_err(|_| ApiError::not_found("index", &raw))?;
    let q = Query::parse(q.as_deref())?;
    let limit = spool_model::num::sat_usize(q.int("limit", 50, 1, 100)?);
    let from: Option<(u64, PromptRunId)> = super::import_job::decode_created_cursor(q.get("cursor"))?;
    let searched = searched(&app);
    let v = app.rt.read(|st| -> Result<Value, ApiError> {
        st.live_index(&index_id).ok_or_else(|| ApiError::not_found("index", &raw))?;
        let empty = Default::default();
        let set = st.runs_by_index.get(&index_id).unwrap_or(&empty);
        let mut iter: Box<dyn Iterator<Item = &(u64, PromptRunId)>> = match from {
            Some(f) => Box::new(set.range(..=f).rev()),
            None => Box::new(set.iter().rev()),
        };
        let data: Vec<Value> =
            iter.by_ref().take(limit).filter_map(|(_, id)| st.prompt_runs.get(id)).map(|r| run_view(st, r, searched)).collect();
        let next = iter.next().map(|(ms, id)| super::import_job::encode_cursor(&format!("{ms}-{id}")));
        Ok(json!({ "data": data, "pagination": { "limit": limit, "has_more": next.is_some(), "next_cursor": next } }))
    })?;
    Ok(json(StatusCode::OK, &v))
}
