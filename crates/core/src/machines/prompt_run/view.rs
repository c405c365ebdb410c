//! The JSON of prompt runs and their results (contract §2.9).

use super::*;
use serde_json::{Value, json};
use spool_model::FailureStage;
use spool_model::time::rfc3339_ms;

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

fn target_json(t: &RunTarget) -> Value {
    match t {
        RunTarget::Index { index_id } => json!({ "type": "index", "index_id": index_id.to_string() }),
        RunTarget::Videos { video_ids, index_id } => {
            let mut v = json!({
                "type": "videos",
                "video_ids": video_ids.iter().take(RUN_CONTEXT_VIDEO_IDS_MAX).map(|v| v.to_string()).collect::<Vec<_>>(),
                "index_id": index_id.map(|i| i.to_string()),
            });
            if video_ids.len() > RUN_CONTEXT_VIDEO_IDS_MAX {
                v["video_count"] = json!(video_ids.len());
            }
            v
        }
        RunTarget::Playground => json!({ "type": "playground" }),
    }
}

/// `PromptRun`.
pub fn run(r: &PromptRun) -> Value {
    let v = r.media(MediaType::Video);
    let a = r.media(MediaType::Audio);
    let i = r.media(MediaType::Image);
    let cancelled = |c: MediaCounts| {
        if r.status == RunStatus::Cancelled { c.total - c.completed - c.failed - c.partial } else { 0 }
    };
    let terminal = r.status.is_terminal();
    let ok = |failures: u64| terminal.then_some(failures == 0);
    json!({
        "run_id": r.run_id.to_string(),
        "prompt_id": r.prompt_id.to_string(),
        "prompt_name": r.prompt.name,
        "prompt_type": "custom",
        "executed_at": rfc3339_ms(r.created_at_ms),
        "executed_by": r.executed_by,
        "status": r.status.as_str(),
        "run_context": target_json(&r.target),
        "total_videos": v.total, "completed_videos": v.completed, "failed_videos": v.failed,
        "partial_videos": v.partial, "cancelled_videos": cancelled(v),
        "total_audios": a.total, "completed_audios": a.completed, "failed_audios": a.failed,
        "partial_audios": a.partial, "cancelled_audios": cancelled(a),
        "total_images": i.total, "completed_images": i.completed, "failed_images": i.failed,
        "partial_images": i.partial, "cancelled_images": cancelled(i),
        "total_segments": r.segments.len(),
        "completed_segments": r.completed_segments,
        "failed_segments": r.failed_segments,
        "field_extraction_failures": r.field_extraction_failures,
        "processing_failures": r.processing_failures,
        "transcription_failures": 0,
        "image_embedding_failures": 0,
        "field_extraction_succeeded": ok(r.field_extraction_failures + r.processing_failures),
        "transcription_succeeded": Value::Null,
        "image_embedding_succeeded": Value::Null,
        "error_message": r.error,
        "video_segmentation_type": r.settings.video_segmentation.as_str(),
        "audio_segmentation_type": r.settings.audio_segmentation.as_str(),
        "image_segmentation_type": "image",
        "video_segment_duration": r.settings.video_segment_s,
        "audio_segment_duration": r.settings.audio_segment_s,
        "created_new_segments": !r.segments.is_empty(),
        "processing_model": r.settings.processing_model.clone().unwrap_or_else(|| r.settings.processor.clone()),
        "processor": r.settings.processor,
        "total_video_seconds": r.total_ms as f64 / 1e3,
        "enable_transcription": r.settings.enable_transcription,
        "enable_image_embedding": r.settings.enable_image_embedding,
        "video_level_enabled": r.prompt.video_level.is_some(),
        "video_level_total_items": r.video_level_total,
        "video_level_completed_items": r.video_level_completed,
        "video_level_failed_items": r.video_level_failed,
        "video_level_partial_items": 0,
        "stop_state": match &r.stop {
            Some(s) => json!({
                "requested_at": rfc3339_ms(s.requested_at_ms),
                "requested_by": s.requested_by,
                "mode": "drain",
                "observed_at": rfc3339_ms(s.requested_at_ms),
                "completed_at": s.completed_at_ms.map(rfc3339_ms),
            }),
            None => json!({}),
        },
        "billing_estimated_mt": 0.0,
        "billing_actual_mt": 0.0,
        "billing_status": "not_billed",
        "created_at": rfc3339_ms(r.created_at_ms),
        "updated_at": rfc3339_ms(r.updated_at_ms),
        "completed_at": r.finished_at_ms.map(rfc3339_ms),
    })
}

/// The answers a view of a video in a run reads (`run_answers`): its succeeded segments' from
/// `from` on, at most `n`, then its video-level task's when it succeeded.
pub fn video_answer_keys(r: &PromptRun, v: u32, from: u32, n: usize, out: &mut Vec<crate::AnswerKey>) {
    let Some(rv) = r.videos.get(v as usize) else { return };
    let succeeded = |t: &TaskState| t.status == TaskStatus::Succeeded;
    let segments = rv.segments().filter(|s| *s >= from);
    let done = segments.filter(|s| r.segments.get(*s as usize).is_some_and(|seg| succeeded(&seg.task)));
    out.extend(done.take(n).map(|s| crate::AnswerKey { run_id: r.run_id, task: RunTask::Segment(s) }));
    if rv.video_level.as_ref().is_some_and(succeeded) {
        out.push(crate::AnswerKey { run_id: r.run_id, task: RunTask::Video(v) });
    }
}

/// A segment's status as the API names it (`cancelled` for work a cancel left undone).
pub fn task_status(r: &PromptRun, t: &TaskState) -> &'static str {
    match t.status {
        TaskStatus::Succeeded => "completed",
        TaskStatus::Failed => "failed",
        _ if r.status == RunStatus::Cancelled => "cancelled",
        TaskStatus::Pending => "pending",
        TaskStatus::Started => "processing",
        TaskStatus::Waiting => "retrying",
    }
}

fn metadata(a: Option<&TaskAnswer>) -> Value {
    a.and_then(|a| serde_json::from_str(&a.metadata_json).ok()).unwrap_or_else(|| json!({}))
}

/// `SegmentRunResult` of a succeeded segment.
pub fn result(r: &PromptRun, n: u32, rows: &dyn crate::RowSource) -> Option<Value> {
    let s = r.segments.get(n as usize)?;
    if s.task.status != TaskStatus::Succeeded {
        return None;
    }
    let answer = rows.answer(&r.run_id, RunTask::Segment(n))?;
    let rv = r.videos.get(s.video as usize)?;
    let title = rows.video_row(&rv.video_id).map(|v| v.title.clone());
    Some(json!({
        "result_id": format!("res_{}_{n}", r.run_id.0),
        "result_type": "segment",
        "segment_id": segment_id(&r.run_id, n),
        "run_id": r.run_id.to_string(),
        "prompt_run_id": r.run_id.to_string(),
        "prompt_id": r.prompt_id.to_string(),
        "video_id": rv.video_id.to_string(),
        "video_name": title,
        "source_index_id": r.index_id().map(|i| i.to_string()),
        "executed_at": rfc3339_ms(s.task.updated_at_ms),
        "start_time": secs(s.range.start_us),
        "end_time": secs(s.range.end_us),
        "metadata": metadata(Some(&answer)),
        "metadata_text": answer.metadata_text,
        "schema_used": r.prompt.json_schema,
        "field_extraction_succeeded": true,
    }))
}

/// `PromptRunVideoResult` of a video's video-level task, when it has one (its answer from
/// `rows` when it succeeded).
pub fn video_result(r: &PromptRun, v: u32, rows: &dyn crate::RowSource) -> Option<Value> {
    let rv = r.videos.get(v as usize)?;
    let t = rv.video_level.as_ref()?;
    let answer = rows.answer(&r.run_id, RunTask::Video(v)).filter(|_| t.status == TaskStatus::Succeeded);
    Some(json!({
        "result_type": "video",
        "run_id": r.run_id.to_string(),
        "prompt_id": r.prompt_id.to_string(),
        "video_id": rv.video_id.to_string(),
        "executed_at": rfc3339_ms(t.updated_at_ms),
        "status": task_status(r, t),
        "metadata": metadata(answer.as_deref()),
        "metadata_text": answer.as_ref().map(|a| a.metadata_text.clone()).unwrap_or_default(),
        "error_message": t.failure.as_ref().map(|f| f.message.clone()),
        "schema_used": r.prompt.video_level.as_ref().map(|v| v.json_schema.clone()),
        "successful_segment_count": rv.succeeded,
        "failed_segment_count": rv.failed,
        "video_name": Value::Null,
        "source_index_id": r.index_id().map(|i| i.to_string()),
    }))
}

fn failure_json(r: &PromptRun, n: u32, s: &RunSegment) -> Value {
    let f = s.task.failure.as_ref();
    let stage = f.map_or(FailureStage::Processing, |f| f.stage);
    json!({
        "segment_id": segment_id(&r.run_id, n),
        "failed_operations": [stage.clone()],
        "field_extraction_error": f.filter(|f| f.stage == FailureStage::FieldExtraction).map(|f| f.message.clone()),
        "processing_error": f.filter(|f| f.stage != FailureStage::FieldExtraction).map(|f| f.message.clone()),
        "failure_stage": stage,
        "failure_message": f.map(|f| f.message.clone()),
        "failure_code": f.map(|f| f.code.clone()),
        "error_paths": f.map(|f| f.error_paths.clone()).unwrap_or_default(),
        "retryable": f.map(|f| f.retryable),
        "attempts": s.task.attempts,
        "start_time": secs(s.range.start_us),
        "end_time": secs(s.range.end_us),
        "projection_only": false,
    })
}

/// `PromptRunFailedSegmentsManifest`: every failed segment, by video. O(failed segments).
pub fn failed_segments(r: &PromptRun) -> Value {
    let mut by_video: BTreeMap<u32, Vec<Value>> = BTreeMap::new();
    let mut ops = (0u64, 0u64);
    for task in r.tasks.iter(TaskStatus::Failed) {
        let RunTask::Segment(n) = task else { continue };
        let Some(s) = r.segments.get(n as usize) else { continue };
        if s.task.failure.as_ref().is_some_and(|f| f.stage == FailureStage::FieldExtraction) {
            ops.0 += 1;
        } else {
            ops.1 += 1;
        }
        by_video.entry(s.video).or_default().push(failure_json(r, n, s));
    }
    let videos: Vec<Value> = by_video
        .into_iter()
        .map(|(v, segs)| {
            let fe = segs.iter().filter(|s| s["failure_stage"] == "field_extraction").count();
            json!({
                "video_id": r.videos[v as usize].video_id.to_string(),
                "failed_segments": segs.len(),
                "operation_counts": {"field_extraction": fe, "transcription": 0, "image_embedding": 0, "processing": segs.len() - fe},
                "segments": segs,
            })
        })
        .collect();
    json!({
        "run_id": r.run_id.to_string(),
        "status": r.status.as_str(),
        "videos_with_failures": videos.len(),
        "failed_segments": ops.0 + ops.1,
        "operation_counts": {"field_extraction": ops.0, "transcription": 0, "image_embedding": 0, "processing": ops.1},
        "videos": videos,
    })
}

/// `LlmCall`s, oldest first: `calls` as read from `run_calls` (the last
/// `RUN_LLM_CALLS_KEPT_MAX`).
pub fn llm_calls(r: &PromptRun, calls: &[LlmCallRecord]) -> Value {
    let calls: Vec<Value> = calls
        .iter()
        .map(|c| {
            let (purpose, task_id) = match c.task {
                RunTask::Segment(n) => ("segment_extraction", segment_id(&r.run_id, n)),
                RunTask::Video(v) => (
                    "video_level_extraction",
                    r.videos.get(v as usize).map(|rv| rv.video_id.to_string()).unwrap_or_default(),
                ),
            };
            json!({
                "llm_call_id": format!("llm_{}_{}_{}", r.run_id.0, task_id.rsplit('_').next().unwrap_or(""), c.attempt),
                "user_id": r.executed_by,
                "model": r.settings.processor,
                "purpose": purpose,
                "status": if c.ok { "succeeded" } else { "failed" },
                "input_tokens": c.usage.input_tokens,
                "output_tokens": c.usage.output_tokens,
                "total_tokens": c.usage.input_tokens + c.usage.output_tokens,
                "video_seconds": c.video_ms as f64 / 1e3,
                "duration_ms": c.usage.duration_ms,
                "invoked_at": rfc3339_ms(c.at_ms),
                "prompt_run_id": r.run_id.to_string(),
                "target_id": task_id,
                "attempt": c.attempt,
            })
        })
        .collect();
    Value::Array(calls)
}

/// `PromptRunSegmentRetry` (`with_message`) or `PromptRunSegmentRetryStatus`.
pub fn retry(r: &PromptRun, retry_id: &RetryId, rt: &SegmentRetry, with_message: bool) -> Value {
    let t = r.task(rt.task);
    // A later manual retry of the same segment supersedes this one: it then reads as ended.
    let status = match t {
        Some(t) if t.attempts < rt.attempt => "queued",
        Some(t) if t.attempts == rt.attempt => match t.status {
            TaskStatus::Succeeded => "completed",
            TaskStatus::Failed => "failed",
            _ if r.status == RunStatus::Cancelled => "cancelled",
            _ => "processing",
        },
        Some(t) => match t.status {
            TaskStatus::Succeeded => "completed",
            TaskStatus::Failed => "failed",
            _ => "processing",
        },
        None => "failed",
    };
    let RunTask::Segment(n) = rt.task else { return Value::Null };
    let done = matches!(status, "completed" | "failed" | "cancelled");
    let mut v = json!({
        "run_id": r.run_id.to_string(),
        "retry_id": retry_id.to_string(),
        "status": status,
        "video_id": rt.video_id.to_string(),
        "segment_id": segment_id(&r.run_id, n),
        "created_at": rfc3339_ms(rt.created_at_ms),
        "started_at": t.filter(|t| t.attempts >= rt.attempt).map(|_| rfc3339_ms(rt.created_at_ms)),
        "completed_at": t.filter(|_| done).map(|t| rfc3339_ms(t.updated_at_ms)),
        "error": t.filter(|t| t.status == TaskStatus::Failed).and_then(|t| t.failure.as_ref()).map(|f| f.message.clone()),
        "field_extraction_succeeded": t.filter(|_| done).map(|t| t.status == TaskStatus::Succeeded),
    });
    if with_message {
        v["message"] = json!("the segment runs again");
    }
    v
}

/// A segment as `GET /videos/{id}/segments` lists it (its answer from `rows` when it
/// succeeded).
pub fn segment(r: &PromptRun, n: u32, rows: &dyn crate::RowSource) -> Option<Value> {
    let s = r.segments.get(n as usize)?;
    let answer = rows.answer(&r.run_id, RunTask::Segment(n)).filter(|_| s.task.status == TaskStatus::Succeeded);
    let rv = r.videos.get(s.video as usize)?;
    Some(json!({
        "segment_id": segment_id(&r.run_id, n),
        "video_id": rv.video_id.to_string(),
        "start_time": secs(s.range.start_us),
        "end_time": secs(s.range.end_us),
        "metadata": answer.as_deref().map(|a| metadata(Some(a))),
        "metadata_text": answer.as_ref().map(|a| a.metadata_text.clone()),
        "segment_status": task_status(r, &s.task),
        "processed": s.task.status == TaskStatus::Succeeded,
        "from_run_id": r.run_id.to_string(),
        "segmentation_method": rv.method,
    }))
}

/// `PromptRunProcessingStatus` of one video in one run.
pub fn processing_status(r: &PromptRun, v: u32) -> Option<Value> {
    let rv = r.videos.get(v as usize)?;
    let pending = rv.seg_count.saturating_sub(rv.running + rv.succeeded + rv.failed);
    let status = match rv.outcome {
        Some(VideoOutcome::Failed) => "failed",
        Some(VideoOutcome::Partial) => "completed_with_failures",
        Some(VideoOutcome::Completed) => "completed",
        None if r.status == RunStatus::Cancelled => "cancelled",
        None if rv.planned => "processing",
        None => "pending",
    };
    Some(json!({
        "run_id": r.run_id.to_string(),
        "prompt_id": r.prompt_id.to_string(),
        "status": status,
        "total_segments": rv.seg_count,
        "pending_segments": pending,
        "processing_segments": rv.running,
        "successful_segments": rv.succeeded,
        "failed_segments": rv.failed,
        "created_at": rfc3339_ms(r.created_at_ms),
        "updated_at": rfc3339_ms(r.updated_at_ms),
        "video_level": rv.video_level.as_ref().map(|t| json!({ "status": task_status(r, t) })),
    }))
}

/// A video's status over its runs: `processing` while a run that has not ended still works on
/// it, else as its latest run ended it (`failed` when every segment failed), else
/// `not_processed`.
pub fn video_status(st: &crate::State, video_id: &VideoId) -> &'static str {
    let Some(runs) = st.video_runs.get(video_id) else { return "not_processed" };
    let mut last: Option<VideoOutcome> = None;
    for run_id in runs {
        let Some(r) = st.prompt_runs.get(run_id) else { continue };
        let Some(v) = r.video_pos.get(video_id).and_then(|v| r.videos.get(*v as usize)) else { continue };
        match v.outcome {
            None if !r.status.is_terminal() => return "processing",
            None => {}
            Some(o) => last = Some(o),
        }
    }
    match last {
        Some(VideoOutcome::Failed) => "failed",
        Some(_) => "processed",
        None => "not_processed",
    }
}
