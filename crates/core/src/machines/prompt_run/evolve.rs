use super::*;
use crate::State;
use spool_model::{Envelope, Event};

pub fn evolve(state: &mut State, env: &Envelope) {
    let at = env.at_ms;
    match &env.event {
        Event::PromptRunCreated { run_id, prompt_id, prompt, target, settings, executed_by } => {
            let run = PromptRun {
                run_id: *run_id,
                prompt_id: *prompt_id,
                prompt: prompt.clone(),
                target: target.clone(),
                settings: settings.clone(),
                executed_by: executed_by.clone(),
                status: RunStatus::Pending,
                error: None,
                created_at_ms: at,
                updated_at_ms: at,
                finished_at_ms: None,
                finished_seq: 0,
                stop: None,
                listing_done: false,
                list_after: None,
                list_pos: 0,
                videos: Vec::new(),
                video_pos: BTreeMap::new(),
                unplanned: Default::default(),
                segments: Vec::new(),
                tasks: Default::default(),
                completed_segments: 0,
                failed_segments: 0,
                field_extraction_failures: 0,
                processing_failures: 0,
                video_level_total: 0,
                video_level_completed: 0,
                video_level_failed: 0,
                counts: BTreeMap::new(),
                total_ms: 0,
                calls: 0,
                retries: BTreeMap::new(),
                last_progress_ms: at,
            };
            if let Some(index_id) = run.index_id() {
                state.runs_by_index.entry(index_id).or_default().insert((at, *run_id));
            }
            state.runs_by_created.insert((at, *run_id));
            state.active_runs.insert(*run_id);
            state.prompt_runs.insert(*run_id, run);
        }
        // Logs before the tables: the fold finds each video's media type in the state.
        Event::PromptRunVideosAdded { run_id, videos, done } => {
            let listed: Vec<(VideoId, spool_model::MediaType)> = videos
                .iter()
                .map(|id| (*id, state.video_row(id).map_or(spool_model::MediaType::Video, |v| v.media_type)))
                .collect();
            let after = videos.last().and_then(|id| Some((state.video_row(id)?.created_at_ms, *id)));
            videos_listed(state, run_id, &listed, after, *done, at);
        }
        Event::PromptRunVideosListed { run_id, videos, after, done } => {
            videos_listed(state, run_id, videos, *after, *done, at);
        }
        Event::PromptRunVideoPlanned { run_id, video, segments, method } => {
            let Some(run) = state.prompt_runs.get_mut(run_id) else { return };
            let first = spool_model::num::sat_u32(run.segments.len());
            let Some(v) = run.videos.get_mut(*video as usize) else { return };
            if v.planned {
                return;
            }
            v.planned = true;
            v.method = method.clone();
            v.seg_first = first;
            v.seg_count = spool_model::num::sat_u32(segments.len());
            v.seconds_ms = segments.iter().map(|r| (r.end_us - r.start_us) / 1000).sum();
            run.total_ms += v.seconds_ms;
            for (i, r) in segments.iter().enumerate() {
                run.segments.push(RunSegment { video: *video, range: *r, task: TaskState::new(at) });
                run.tasks.insert(TaskStatus::Pending, RunTask::Segment(first + spool_model::num::sat_u32(i)));
            }
            run.unplanned.remove(video);
            settle_video(run, *video);
            run.updated_at_ms = at;
        }
        Event::PromptTaskStarted { run_id, task, attempt } => {
            let Some(run) = state.prompt_runs.get_mut(run_id) else { return };
            if move_task(run, *task, TaskStatus::Started, at).is_none() {
                return;
            }
            if let Some(t) = run.task_mut(*task) {
                t.attempts = *attempt;
            }
            if let (RunTask::Segment(_), Some(v)) = (task, run.task_video(*task)) {
                run.videos[v as usize].running += 1;
            }
            run.updated_at_ms = at;
        }
        Event::PromptTaskSucceeded { run_id, task, attempt, answer, usage } => {
            {
                let Some(run) = state.prompt_runs.get_mut(run_id) else { return };
                record_call(run, &mut state.rows, *task, *attempt, true, *usage, at);
                if move_task(run, *task, TaskStatus::Succeeded, at).is_none() {
                    return;
                }
                if let Some(t) = run.task_mut(*task) {
                    t.failure = None;
                }
                if let Some(v) = run.task_video(*task) {
                    match task {
                        RunTask::Segment(_) => {
                            run.completed_segments += 1;
                            let rv = &mut run.videos[v as usize];
                            rv.running = rv.running.saturating_sub(1);
                            rv.succeeded += 1;
                        }
                        RunTask::Video(_) => run.video_level_completed += 1,
                    }
                    settle_video(run, v);
                    run.updated_at_ms = at;
                    if at.saturating_sub(run.last_progress_ms) >= RUN_PROGRESS_INTERVAL_MS {
                        run.last_progress_ms = at;
                    }
                }
            }
            // The answer is a row (`run_answers`), not state: written in this event's commit.
            if state.rows.emit {
                state.rows.answered(*run_id, *task, answer.clone());
            }
        }
        Event::PromptTaskFailed { run_id, task, attempt, failure, usage, retry_due_ms } => {
            let timer_due = *retry_due_ms;
            {
                let Some(run) = state.prompt_runs.get_mut(run_id) else { return };
                record_call(run, &mut state.rows, *task, *attempt, false, usage.unwrap_or_default(), at);
                let to = if timer_due.is_some() { TaskStatus::Waiting } else { TaskStatus::Failed };
                if move_task(run, *task, to, at).is_none() {
                    return;
                }
                if let Some(t) = run.task_mut(*task) {
                    t.failure = Some(failure.clone());
                }
                let Some(v) = run.task_video(*task) else { return };
                if let RunTask::Segment(_) = task {
                    let rv = &mut run.videos[v as usize];
                    rv.running = rv.running.saturating_sub(1);
                }
                if to == TaskStatus::Failed {
                    match task {
                        RunTask::Segment(_) => {
                            run.failed_segments += 1;
                            run.videos[v as usize].failed += 1;
                            if failure.stage == spool_model::FailureStage::FieldExtraction {
                                run.field_extraction_failures += 1;
                            } else {
                                run.processing_failures += 1;
                            }
                        }
                        RunTask::Video(_) => run.video_level_failed += 1,
                    }
                    settle_video(run, v);
                }
                run.updated_at_ms = at;
                // `decide` raises `prompt_run.progress` only with a final failure.
                if to == TaskStatus::Failed && at.saturating_sub(run.last_progress_ms) >= RUN_PROGRESS_INTERVAL_MS {
                    run.last_progress_ms = at;
                }
            }
            if let Some(due) = timer_due {
                state.set_timer(crate::Timer::PromptTaskRetry { run_id: *run_id, task: *task, attempt: *attempt }, due);
            }
        }
        Event::PromptTaskRetryDue { run_id, task, attempt } => {
            state.clear_timer(&crate::Timer::PromptTaskRetry { run_id: *run_id, task: *task, attempt: *attempt });
            let Some(run) = state.prompt_runs.get_mut(run_id) else { return };
            if run.task(*task).is_some_and(|t| t.status == TaskStatus::Waiting) {
                move_task(run, *task, TaskStatus::Pending, at);
            }
        }
        Event::PromptTaskRetryRequested { run_id, task, retry_id } => {
            let reopened = {
                let Some(run) = state.prompt_runs.get_mut(run_id) else { return };
                let Some(v) = run.task_video(*task) else { return };
                if run.task(*task).is_none_or(|t| t.status != TaskStatus::Failed) {
                    return;
                }
                let stage = run.task(*task).and_then(|t| t.failure.as_ref()).map(|f| f.stage);
                move_task(run, *task, TaskStatus::Pending, at);
                if let Some(t) = run.task_mut(*task) {
                    t.attempts_base = t.attempts;
                }
                if let RunTask::Segment(_) = task {
                    run.failed_segments = run.failed_segments.saturating_sub(1);
                    match stage {
                        Some(spool_model::FailureStage::FieldExtraction) => {
                            run.field_extraction_failures = run.field_extraction_failures.saturating_sub(1)
                        }
                        _ => run.processing_failures = run.processing_failures.saturating_sub(1),
                    }
                    let rv = &mut run.videos[v as usize];
                    rv.failed = rv.failed.saturating_sub(1);
                    // The video's video-level answer is asked again once its segments end.
                    if let Some(vl) = rv.video_level.take() {
                        rv.video_level_attempts = vl.attempts;
                        let key = RunTask::Video(v);
                        run.tasks.remove(vl.status, key);
                        run.video_level_total = run.video_level_total.saturating_sub(1);
                        match vl.status {
                            TaskStatus::Succeeded => {
                                run.video_level_completed = run.video_level_completed.saturating_sub(1)
                            }
                            TaskStatus::Failed => run.video_level_failed = run.video_level_failed.saturating_sub(1),
                            _ => {}
                        }
                    }
                }
                unsettle_video(run, v);
                let attempt = run.task(*task).map_or(1, |t| t.attempts + 1);
                let video_id = run.videos[v as usize].video_id;
                run.retries.insert(*retry_id, SegmentRetry { task: *task, video_id, created_at_ms: at, attempt });
                let reopened = run.status.is_terminal();
                if reopened {
                    run.status = RunStatus::Processing;
                    run.finished_at_ms = None;
                    run.error = None;
                }
                run.updated_at_ms = at;
                reopened
            };
            if reopened {
                state.active_runs.insert(*run_id);
            }
        }
        Event::PromptRunCancelRequested { run_id, requested_by } => {
            let Some(run) = state.prompt_runs.get_mut(run_id) else { return };
            if run.stop.is_none() {
                run.stop =
                    Some(StopState { requested_at_ms: at, requested_by: requested_by.clone(), completed_at_ms: None });
            }
            run.updated_at_ms = at;
        }
        Event::PromptRunFinished { run_id, status, error } => {
            let Some(run) = state.prompt_runs.get_mut(run_id) else { return };
            run.status = *status;
            run.error = error.clone();
            run.finished_at_ms = Some(at);
            run.finished_seq = env.seq;
            run.updated_at_ms = at;
            if let Some(stop) = run.stop.as_mut() {
                stop.completed_at_ms = Some(at);
            }
            state.active_runs.remove(run_id);
        }
        _ => {}
    }
}

/// Move a task to another status, keeping the per-status sets in step.
fn move_task(run: &mut PromptRun, task: RunTask, to: TaskStatus, at: u64) -> Option<TaskStatus> {
    let t = run.task_mut(task)?;
    let from = t.status;
    t.status = to;
    t.updated_at_ms = at;
    run.tasks.moved(task, from, to);
    Some(from)
}

/// A processor call is a row of `run_calls` (its number in the run, from 0), not state: the run
/// counts them.
fn record_call(
    run: &mut PromptRun,
    rows: &mut crate::Rows,
    task: RunTask,
    attempt: u32,
    ok: bool,
    usage: CallUsage,
    at: u64,
) {
    let video_ms = match task {
        RunTask::Segment(n) => run.segments.get(n as usize).map_or(0, |s| (s.range.end_us - s.range.start_us) / 1000),
        RunTask::Video(v) => run.videos.get(v as usize).map_or(0, |v| v.seconds_ms),
    };
    let n = run.calls;
    run.calls += 1;
    if rows.emit {
        let call = LlmCallRecord { task, attempt, ok, usage, video_ms, at_ms: at };
        rows.written.push(crate::RowWrite::Call(run.run_id, n, std::sync::Arc::new(call)));
    }
}

/// After a video's segments all ended: its video-level task is due (when the prompt has one
/// and some segment succeeded), or the video has its outcome.
fn settle_video(run: &mut PromptRun, v: u32) {
    let wants_video_level = run.prompt.video_level.is_some();
    let Some(rv) = run.videos.get_mut(v as usize) else { return };
    if !rv.segments_done() || rv.outcome.is_some() {
        return;
    }
    if wants_video_level && rv.succeeded > 0 {
        match &rv.video_level {
            None => {
                let mut t = TaskState::new(run.updated_at_ms);
                t.attempts = rv.video_level_attempts;
                t.attempts_base = rv.video_level_attempts;
                rv.video_level = Some(t);
                run.tasks.insert(TaskStatus::Pending, RunTask::Video(v));
                run.video_level_total += 1;
                return;
            }
            Some(t) if !t.status.is_terminal() => return,
            Some(_) => {}
        }
    }
    let vl_failed = rv.video_level.as_ref().is_some_and(|t| t.status == TaskStatus::Failed);
    let outcome = if rv.failed == 0 && !vl_failed {
        VideoOutcome::Completed
    } else if rv.succeeded == 0 {
        VideoOutcome::Failed
    } else {
        VideoOutcome::Partial
    };
    rv.outcome = Some(outcome);
    let c = run.counts.entry(rv.media_type).or_default();
    match outcome {
        VideoOutcome::Completed => c.completed += 1,
        VideoOutcome::Partial => c.partial += 1,
        VideoOutcome::Failed => c.failed += 1,
    }
}

/// A video's outcome is taken back (one of its segments runs again).
fn unsettle_video(run: &mut PromptRun, v: u32) {
    let Some(rv) = run.videos.get_mut(v as usize) else { return };
    let Some(outcome) = rv.outcome.take() else { return };
    let c = run.counts.entry(rv.media_type).or_default();
    match outcome {
        VideoOutcome::Completed => c.completed = c.completed.saturating_sub(1),
        VideoOutcome::Partial => c.partial = c.partial.saturating_sub(1),
        VideoOutcome::Failed => c.failed = c.failed.saturating_sub(1),
    }
}

/// The outcome a video would have after one more segment ends (`ok` or not), without folding:
/// what `decide` needs to raise `media.processing.completed` / `failed` in the same append.
pub fn outcome_after(run: &PromptRun, task: RunTask, ok: bool) -> Option<VideoOutcome> {
    let v = run.task_video(task)?;
    let rv = run.videos.get(v as usize)?;
    if rv.outcome.is_some() {
        return None;
    }
    let (succeeded, failed) = match task {
        RunTask::Segment(_) if ok => (rv.succeeded + 1, rv.failed),
        RunTask::Segment(_) => (rv.succeeded, rv.failed + 1),
        RunTask::Video(_) => (rv.succeeded, rv.failed),
    };
    if succeeded + failed != rv.seg_count {
        return None;
    }
    let vl_failed = match task {
        RunTask::Video(_) => !ok,
        RunTask::Segment(_) => {
            if run.prompt.video_level.is_some() && succeeded > 0 {
                return None; // its video-level task comes first
            }
            false
        }
    };
    Some(if failed == 0 && !vl_failed {
        VideoOutcome::Completed
    } else if succeeded == 0 {
        VideoOutcome::Failed
    } else {
        VideoOutcome::Partial
    })
}

/// The next page of a run's videos: numbered in order (an id already in the run is skipped);
/// an index's run moves its cursor to `after`.
fn videos_listed(
    state: &mut State,
    run_id: &PromptRunId,
    videos: &[(VideoId, spool_model::MediaType)],
    after: Option<(u64, VideoId)>,
    done: bool,
    at: u64,
) {
    let Some(run) = state.prompt_runs.get_mut(run_id) else { return };
    for (video_id, media_type) in videos {
        if run.video_pos.contains_key(video_id) {
            continue;
        }
        let n = spool_model::num::sat_u32(run.videos.len());
        run.counts.entry(*media_type).or_default().total += 1;
        run.videos.push(RunVideo {
            video_id: *video_id,
            media_type: *media_type,
            planned: false,
            method: String::new(),
            seg_first: 0,
            seg_count: 0,
            running: 0,
            succeeded: 0,
            failed: 0,
            video_level: None,
            video_level_attempts: 0,
            outcome: None,
            seconds_ms: 0,
        });
        run.video_pos.insert(*video_id, n);
        run.unplanned.insert(n);
        state.video_runs.entry(*video_id).or_default().push(*run_id);
    }
    match &run.target {
        RunTarget::Videos { .. } => run.list_pos += videos.len(),
        _ => {
            if after.is_some() {
                run.list_after = after;
            }
        }
    }
    run.listing_done = done;
    if run.status == RunStatus::Pending {
        run.status = RunStatus::Processing;
    }
    run.updated_at_ms = at;
}
