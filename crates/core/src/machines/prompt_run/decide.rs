use super::*;
use crate::{Ctx, Decision, DomainError, Outcome, State};
use spool_model::{Event, Segmentation};

/// Decide a prompt run command.
pub fn decide(state: &State, cmd: &PromptRunCommand, ctx: &mut Ctx) -> Result<Decision, DomainError> {
    match cmd {
        PromptRunCommand::ExecuteRun { prompt_id, target, settings, executed_by } => {
            execute(state, prompt_id, target, settings, executed_by, RUN_TARGET_VIDEOS_MAX, ctx)
        }
        PromptRunCommand::AddRunVideos { run_id } => add_videos(state, run_id),
        PromptRunCommand::RecordVideoAnalysis { run_id, video, boundaries_us, source } => {
            plan_video(state, run_id, *video, boundaries_us.as_deref(), source)
        }
        PromptRunCommand::StartTask { run_id, task, attempt } => start_task(state, run_id, *task, *attempt),
        PromptRunCommand::RecordTaskSucceeded { run_id, task, attempt, answer, usage, image_vector_le } => {
            task_succeeded(state, run_id, *task, *attempt, (answer, image_vector_le), *usage, ctx)
        }
        PromptRunCommand::RecordTaskFailed { run_id, task, attempt, failure, usage } => {
            task_failed(state, run_id, *task, *attempt, failure, *usage, ctx)
        }
        PromptRunCommand::CancelRun { run_id, requested_by } => cancel(state, run_id, requested_by),
        PromptRunCommand::RetrySegment { run_id, video_id, segment } => {
            retry_segment(state, run_id, video_id, *segment, ctx)
        }
        PromptRunCommand::FinishRun { run_id } => finish(state, run_id),
    }
}

fn run<'a>(state: &'a State, id: &PromptRunId) -> Result<&'a PromptRun, DomainError> {
    state.prompt_runs.get(id).ok_or_else(|| DomainError::NotFound { kind: "prompt_run", id: id.to_string() })
}

fn nothing(run_id: &PromptRunId) -> Result<Decision, DomainError> {
    Ok(Decision::nothing(Outcome::PromptRun(*run_id)))
}

fn domain(name: spool_model::DomainEventName, subject: String, data: serde_json::Value) -> Event {
    Event::DomainEventRaised { name, subject, data_json: data.to_string() }
}

fn index_json(r: &PromptRun) -> serde_json::Value {
    match r.index_id() {
        Some(i) => serde_json::json!(i.to_string()),
        None => serde_json::Value::Null,
    }
}

/// The counters a `prompt_run.*` event carries.
pub fn summary_json(r: &PromptRun) -> serde_json::Value {
    serde_json::json!({
        "run_id": r.run_id.to_string(),
        "prompt_id": r.prompt_id.to_string(),
        "index_id": index_json(r),
        "status": r.status.as_str(),
        "total_videos": r.videos.len(),
        "total_segments": r.segments.len(),
        "completed_segments": r.completed_segments,
        "failed_segments": r.failed_segments,
    })
}

/// Largest `video_segment_duration` / `audio_segment_duration`.
pub const SEGMENT_SECONDS_MAX: u32 = 300;

pub fn check_settings(settings: &RunSettings) -> Result<(), DomainError> {
    for (field, seg, secs) in [
        ("video_segment_duration", settings.video_segmentation, settings.video_segment_s),
        ("audio_segment_duration", settings.audio_segmentation, settings.audio_segment_s),
    ] {
        if let Some(s) = secs
            && !(1..=SEGMENT_SECONDS_MAX).contains(&s)
        {
            return Err(DomainError::invalid(
                field,
                format!("must be an integer from 1 to {SEGMENT_SECONDS_MAX} (got {s})"),
            ));
        }
        if seg == Segmentation::Fixed && secs.is_none() {
            return Err(DomainError::invalid(field, "is required when the matching segmentation type is `fixed`"));
        }
    }
    if settings.audio_segmentation == Segmentation::Smart {
        return Err(DomainError::invalid("audio_segmentation_type", "must be `fixed` or `content_aware`"));
    }
    Ok(())
}

/// Create a run. `max_videos` bounds a `Videos` target: `RUN_TARGET_VIDEOS_MAX` for a request
/// body, `AUTOMATION_RUN_VIDEOS_MAX` for the run an import automation starts on its job.
pub fn execute(
    state: &State,
    prompt_id: &PromptId,
    target: &RunTarget,
    settings: &RunSettings,
    executed_by: &str,
    max_videos: usize,
    ctx: &mut Ctx,
) -> Result<Decision, DomainError> {
    let prompt = state
        .prompts
        .get(prompt_id)
        .filter(|p| p.is_live())
        .ok_or_else(|| DomainError::NotFound { kind: "prompt", id: prompt_id.to_string() })?;
    check_settings(settings)?;
    let target = match target {
        RunTarget::Index { index_id } => {
            state
                .live_index(index_id)
                .ok_or_else(|| DomainError::NotFound { kind: "index", id: index_id.to_string() })?;
            target.clone()
        }
        RunTarget::Videos { video_ids, index_id } => {
            if video_ids.is_empty() || video_ids.len() > max_videos {
                return Err(DomainError::invalid("target.video_ids", format!("must hold 1 to {max_videos} video ids")));
            }
            if let Some(i) = index_id {
                state.live_index(i).ok_or_else(|| DomainError::NotFound { kind: "index", id: i.to_string() })?;
            }
            let mut seen = std::collections::BTreeSet::new();
            let mut ids = Vec::new();
            for id in video_ids {
                let v = state
                    .video(id)
                    .filter(|v| v.visible(state))
                    .ok_or_else(|| DomainError::NotFound { kind: "video", id: id.to_string() })?;
                if let Some(i) = index_id
                    && v.index_id != *i
                {
                    return Err(DomainError::Unprocessable {
                        code: "video_not_in_index",
                        message: format!("video {id} is not in index {i}"),
                    });
                }
                if seen.insert(*id) {
                    ids.push(*id);
                }
            }
            RunTarget::Videos { video_ids: ids, index_id: *index_id }
        }
        RunTarget::Playground => RunTarget::Playground,
    };
    let run_id = PromptRunId(ctx.new_ulid());
    let created = Event::PromptRunCreated {
        run_id,
        prompt_id: *prompt_id,
        prompt: RunPrompt {
            name: prompt.name.clone(),
            prompt_text: prompt.prompt_text.clone(),
            json_schema: prompt.json_schema.clone(),
            video_level: prompt.video_level.clone(),
        },
        target: target.clone(),
        settings: settings.clone(),
        executed_by: executed_by.to_string(),
    };
    let index = match &target {
        RunTarget::Index { index_id } => Some(*index_id),
        RunTarget::Videos { index_id, .. } => *index_id,
        RunTarget::Playground => None,
    };
    let started = domain(
        spool_model::DomainEventName::PromptRunStarted,
        run_id.to_string(),
        serde_json::json!({
            "run_id": run_id.to_string(),
            "prompt_id": prompt_id.to_string(),
            "index_id": index.map(|i| i.to_string()),
            "status": "pending",
        }),
    );
    Ok(Decision::one(run_id.to_string(), vec![created, started], Outcome::PromptRun(run_id)))
}

/// The next page of the run's videos: from the index (or the playground) after the cursor, or
/// from the target's list after its position. Only visible videos.
fn add_videos(state: &State, run_id: &PromptRunId) -> Result<Decision, DomainError> {
    let r = run(state, run_id)?;
    if !r.takes_work() || r.listing_done {
        return nothing(run_id);
    }
    let (videos, after, done) = next_videos(state, r);
    let listed: Vec<(VideoId, spool_model::MediaType)> = videos
        .iter()
        .map(|id| (*id, state.video_row(id).map_or(spool_model::MediaType::Video, |v| v.media_type)))
        .collect();
    let mut events = vec![Event::PromptRunVideosListed { run_id: *run_id, videos: listed, after, done }];
    for id in &videos {
        events.push(domain(
            spool_model::DomainEventName::MediaProcessingStarted,
            id.to_string(),
            serde_json::json!({ "video_id": id.to_string(), "run_id": run_id.to_string(), "index_id": index_json(r) }),
        ));
    }
    Ok(Decision::one(run_id.to_string(), events, Outcome::PromptRun(*run_id)))
}

/// The next visible videos of an index after the cursor, the cursor after the keys looked at
/// (visible or not), and whether they were the last: from the page of the `index_videos`
/// table loaded for this decision (`crate::rows::needs`) and the places in flight.
fn page_of(
    state: &State,
    index_id: IndexId,
    after: Option<(u64, VideoId)>,
) -> (Vec<VideoId>, Option<(u64, VideoId)>, bool) {
    let (keys, through, end) = state.rows.index_page(&index_id, after, RUN_VIDEOS_PAGE_MAX);
    let ids = keys.iter().filter(|(_, id)| state.video_shown(id, &index_id)).map(|(_, id)| *id).collect();
    (ids, through, end)
}

/// A video's segments from its facts and the boundaries its media offered.
fn plan_video(
    state: &State,
    run_id: &PromptRunId,
    video: u32,
    boundaries: Option<&[u64]>,
    source: &str,
) -> Result<Decision, DomainError> {
    let r = run(state, run_id)?;
    let Some(rv) = r.videos.get(video as usize) else {
        return Err(DomainError::NotFound { kind: "run_video", id: format!("{run_id}/{video}") });
    };
    if rv.planned || !r.takes_work() {
        return nothing(run_id);
    }
    let (segments, method) = match state.video(&rv.video_id) {
        Some(v) => {
            let (a, b) = v.range_seconds();
            let range =
                (spool_model::num::f64_to_u64((a * 1e6).round()), spool_model::num::f64_to_u64((b * 1e6).round()));
            let mut sorted: Option<Vec<u64>> = boundaries.map(|b| b.to_vec());
            if let Some(s) = sorted.as_mut() {
                s.sort_unstable();
            }
            let (segs, m) = plan::segments(&r.settings, v.media_type, range, sorted.as_deref());
            // A cut at a boundary is named by where the boundaries came from (a video's audio
            // silences when its container has no keyframe table).
            let m = if matches!(m, "keyframes" | "silence") && matches!(source, "keyframes" | "silence") {
                source
            } else {
                m
            };
            (segs, m.to_string())
        }
        // Gone since it was listed: one segment, whose task fails `video_not_found`.
        None => (vec![TimeRange { start_us: 0, end_us: 0 }], "none".to_string()),
    };
    Ok(Decision::one(
        run_id.to_string(),
        vec![Event::PromptRunVideoPlanned { run_id: *run_id, video, segments, method }],
        Outcome::PromptRun(*run_id),
    ))
}

fn start_task(state: &State, run_id: &PromptRunId, task: RunTask, attempt: u32) -> Result<Decision, DomainError> {
    let r = run(state, run_id)?;
    let t = r.task(task).ok_or_else(|| DomainError::NotFound { kind: "run_task", id: format!("{run_id}/{task:?}") })?;
    match t.status {
        TaskStatus::Pending if attempt == t.attempts + 1 && r.takes_work() => Ok(Decision::one(
            run_id.to_string(),
            vec![Event::PromptTaskStarted { run_id: *run_id, task, attempt }],
            Outcome::PromptRun(*run_id),
        )),
        // Resuming after a crash: the started attempt goes on (also while a cancel waits).
        TaskStatus::Started if attempt == t.attempts && !r.status.is_terminal() => nothing(run_id),
        _ => Err(DomainError::Stale(format!("task {task:?} of {run_id} cannot start attempt {attempt}"))),
    }
}

/// Whether an outcome fits: the task's started attempt, on a run that has not ended.
fn fits(r: &PromptRun, task: RunTask, attempt: u32) -> bool {
    r.task(task).is_some_and(|t| t.status == TaskStatus::Started && t.attempts == attempt) && !r.status.is_terminal()
}

/// `media.processing.completed` / `failed` when this outcome ends the task's video.
fn video_events(r: &PromptRun, task: RunTask, ok: bool, events: &mut Vec<Event>) {
    let Some(outcome) = evolve::outcome_after(r, task, ok) else { return };
    let Some(rv) = r.task_video(task).and_then(|v| r.videos.get(v as usize)) else { return };
    let (succeeded, failed) = match (task, ok) {
        (RunTask::Segment(_), true) => (rv.succeeded + 1, rv.failed),
        (RunTask::Segment(_), false) => (rv.succeeded, rv.failed + 1),
        _ => (rv.succeeded, rv.failed),
    };
    let name = if outcome == VideoOutcome::Failed {
        spool_model::DomainEventName::MediaProcessingFailed
    } else {
        spool_model::DomainEventName::MediaProcessingCompleted
    };
    events.push(domain(
        name,
        rv.video_id.to_string(),
        serde_json::json!({
            "video_id": rv.video_id.to_string(),
            "run_id": r.run_id.to_string(),
            "index_id": index_json(r),
            "total_segments": rv.seg_count,
            "successful_segments": succeeded,
            "failed_segments": failed,
        }),
    ));
}

fn progress_if_due(r: &PromptRun, events: &mut Vec<Event>, now_ms: u64, ok: u64, failed: u64) {
    if now_ms.saturating_sub(r.last_progress_ms) >= RUN_PROGRESS_INTERVAL_MS {
        let mut s = summary_json(r);
        s["completed_segments"] = serde_json::json!(r.completed_segments + ok);
        s["failed_segments"] = serde_json::json!(r.failed_segments + failed);
        events.push(domain(spool_model::DomainEventName::PromptRunProgress, r.run_id.to_string(), s));
    }
}

fn task_succeeded(
    state: &State,
    run_id: &PromptRunId,
    task: RunTask,
    attempt: u32,
    (answer, image_vector_le): (&TaskAnswer, &Vec<u8>),
    usage: CallUsage,
    ctx: &mut Ctx,
) -> Result<Decision, DomainError> {
    let r = run(state, run_id)?;
    // A duplicate or stale outcome (effects run at least once): results never duplicate.
    if !fits(r, task, attempt) {
        return nothing(run_id);
    }
    let answer = TaskAnswer {
        metadata_json: answer.metadata_json.clone(),
        metadata_text: answer.metadata_text.chars().take(TEXT_CHARS_MAX).collect(),
    };
    let mut events = vec![Event::PromptTaskSucceeded { run_id: *run_id, task, attempt, answer, usage }];
    // A segment's image vector, when the run asked for one and it is a vector's size.
    if r.settings.enable_image_embedding
        && matches!(task, RunTask::Segment(_))
        && !image_vector_le.is_empty()
        && image_vector_le.len().is_multiple_of(4)
        && image_vector_le.len() <= IMAGE_VECTOR_BYTES_MAX
    {
        events.push(Event::PromptTaskImageVector {
            run_id: *run_id,
            task,
            attempt,
            vector_le: image_vector_le.clone(),
        });
    }
    video_events(r, task, true, &mut events);
    progress_if_due(r, &mut events, ctx.now_ms, u64::from(matches!(task, RunTask::Segment(_))), 0);
    Ok(Decision::one(run_id.to_string(), events, Outcome::PromptRun(*run_id)))
}

/// The largest image vector kept: 4,096 `f32`s.
pub const IMAGE_VECTOR_BYTES_MAX: usize = 4096 * 4;

/// Longest `metadata_text` kept, and longest failure message.
pub const TEXT_CHARS_MAX: usize = 10_000;
pub const FAILURE_MESSAGE_CHARS_MAX: usize = 1_000;
/// Error paths kept of one failure.
pub const FAILURE_PATHS_MAX: usize = 20;

fn task_failed(
    state: &State,
    run_id: &PromptRunId,
    task: RunTask,
    attempt: u32,
    failure: &TaskFailure,
    usage: Option<CallUsage>,
    ctx: &mut Ctx,
) -> Result<Decision, DomainError> {
    let r = run(state, run_id)?;
    if !fits(r, task, attempt) {
        return nothing(run_id);
    }
    let failure = TaskFailure {
        stage: failure.stage,
        code: failure.code.clone(),
        message: failure.message.chars().take(FAILURE_MESSAGE_CHARS_MAX).collect(),
        retryable: failure.retryable,
        error_paths: failure.error_paths.iter().take(FAILURE_PATHS_MAX).cloned().collect(),
    };
    let base = r.task(task).map_or(0, |t| t.attempts_base);
    let retry_due_ms = (failure.retryable && attempt - base < TASK_ATTEMPTS_MAX && r.takes_work())
        .then(|| ctx.now_ms + backoff_ms(attempt - base, ctx));
    let mut events = vec![Event::PromptTaskFailed { run_id: *run_id, task, attempt, failure, usage, retry_due_ms }];
    if retry_due_ms.is_none() {
        video_events(r, task, false, &mut events);
        progress_if_due(r, &mut events, ctx.now_ms, 0, u64::from(matches!(task, RunTask::Segment(_))));
    }
    Ok(Decision::one(run_id.to_string(), events, Outcome::PromptRun(*run_id)))
}

/// The wait after attempt `n` (counted from the last manual retry): the schedule's step ±20%,
/// drawn here and recorded in the event.
fn backoff_ms(n: u32, ctx: &mut Ctx) -> u64 {
    let i = (n.max(1) as usize - 1).min(TASK_RETRY_BACKOFF_MS.len() - 1);
    let base = TASK_RETRY_BACKOFF_MS[i];
    let spread = base / 5;
    base - spread + spool_model::num::low_u64(ctx.new_ulid().random()) % (2 * spread + 1)
}

/// `FireTimer` of a task's retry: the task is pending again (a timer fired already adds
/// nothing).
pub fn fire_retry(state: &State, timer: &crate::Timer) -> Result<Decision, DomainError> {
    let crate::Timer::PromptTaskRetry { run_id, task, attempt } = timer else {
        return Ok(Decision::nothing(Outcome::Done));
    };
    if !state.timer_due.contains_key(timer) {
        return Ok(Decision::nothing(Outcome::Done));
    }
    Ok(Decision::one(
        run_id.to_string(),
        vec![Event::PromptTaskRetryDue { run_id: *run_id, task: *task, attempt: *attempt }],
        Outcome::Done,
    ))
}

fn cancel(state: &State, run_id: &PromptRunId, by: &str) -> Result<Decision, DomainError> {
    let r = run(state, run_id)?;
    if r.status.is_terminal() || r.stop.is_some() {
        return nothing(run_id);
    }
    Ok(Decision::one(
        run_id.to_string(),
        vec![Event::PromptRunCancelRequested { run_id: *run_id, requested_by: by.to_string() }],
        Outcome::PromptRun(*run_id),
    ))
}

fn retry_segment(
    state: &State,
    run_id: &PromptRunId,
    video_id: &VideoId,
    segment: u32,
    ctx: &mut Ctx,
) -> Result<Decision, DomainError> {
    let r = run(state, run_id)?;
    let seg = r
        .segments
        .get(segment as usize)
        .filter(|s| r.videos.get(s.video as usize).is_some_and(|v| v.video_id == *video_id))
        .ok_or_else(|| DomainError::NotFound { kind: "segment", id: segment_id(run_id, segment) })?;
    if seg.task.status != TaskStatus::Failed {
        return Err(DomainError::InvalidState(format!(
            "segment {} is not failed; only a failed segment can be retried",
            segment_id(run_id, segment)
        )));
    }
    if r.stop.is_some() {
        return Err(DomainError::InvalidState(format!("prompt run {run_id} was cancelled")));
    }
    let retry_id = RetryId(ctx.new_ulid());
    let task = RunTask::Segment(segment);
    Ok(Decision::one(
        run_id.to_string(),
        vec![Event::PromptTaskRetryRequested { run_id: *run_id, task, retry_id }],
        Outcome::SegmentRetry(*run_id, retry_id),
    ))
}

/// How the run ends now, if it does.
pub fn finish_due(r: &PromptRun) -> Option<RunStatus> {
    if r.status.is_terminal() {
        return None;
    }
    if r.stop.is_some() {
        return (r.running() == 0).then_some(RunStatus::Cancelled);
    }
    let open =
        r.tasks.count(TaskStatus::Pending) + r.tasks.count(TaskStatus::Started) + r.tasks.count(TaskStatus::Waiting);
    if !r.listing_done || !r.unplanned.is_empty() || open > 0 {
        return None;
    }
    let failures = r.failed_segments + r.video_level_failed;
    Some(if failures == 0 {
        RunStatus::Completed
    } else if r.completed_segments == 0 {
        RunStatus::Failed
    } else {
        RunStatus::CompletedWithFailures
    })
}

fn finish(state: &State, run_id: &PromptRunId) -> Result<Decision, DomainError> {
    let r = run(state, run_id)?;
    let Some(status) = finish_due(r) else { return nothing(run_id) };
    let error = (status == RunStatus::Failed).then(|| {
        let first = r.tasks.iter(TaskStatus::Failed).next().and_then(|t| r.task(t)).and_then(|t| t.failure.as_ref());
        match first {
            Some(f) => format!("every segment failed; the first: {} ({})", f.message, f.code),
            None => "every segment failed".to_string(),
        }
    });
    let name = match status {
        RunStatus::Completed => spool_model::DomainEventName::PromptRunCompleted,
        RunStatus::CompletedWithFailures => spool_model::DomainEventName::PromptRunPartialCompleted,
        RunStatus::Failed => spool_model::DomainEventName::PromptRunFailed,
        _ => spool_model::DomainEventName::PromptRunCancelled,
    };
    let mut summary = summary_json(r);
    summary["status"] = serde_json::json!(status.as_str());
    if let Some(e) = &error {
        summary["error_message"] = serde_json::json!(e);
    }
    let events =
        vec![Event::PromptRunFinished { run_id: *run_id, status, error }, domain(name, run_id.to_string(), summary)];
    Ok(Decision::one(run_id.to_string(), events, Outcome::PromptRun(*run_id)))
}

/// The next page of a run's videos, the listing's cursor after it (an index's run) and whether
/// the listing is then done (`AddRunVideos`): the decision lists them, and the runtime loads
/// the index's page and their rows first (`crate::rows::needs`).
pub fn next_videos(state: &State, r: &PromptRun) -> (Vec<VideoId>, Option<(u64, VideoId)>, bool) {
    match &r.target {
        // The target's ids were checked at execute time; one deleted since is listed anyway
        // (its task fails `video_not_found`), so the position moves by what the page lists.
        RunTarget::Videos { video_ids, .. } => {
            let rest = video_ids.get(r.list_pos..).unwrap_or_default();
            let page: Vec<VideoId> = rest.iter().take(RUN_VIDEOS_PAGE_MAX).copied().collect();
            let done = r.list_pos + page.len() >= video_ids.len();
            (page, None, done)
        }
        RunTarget::Index { index_id } => page_of(state, *index_id, r.list_after),
        RunTarget::Playground => page_of(state, crate::machines::import_job::PLAYGROUND, r.list_after),
    }
}
