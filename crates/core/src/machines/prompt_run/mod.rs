//! The prompt run machine (engine-spec/machines/prompt-run.md): a prompt sent over the
//! segments of a set of videos. The run lists its videos in pages, plans each video's segments
//! from its media facts (and the boundaries its media offers), runs one task per segment (and
//! one video-level task per video when the prompt has `video_level`) on a processor, and ends
//! `completed`, `completed_with_failures`, `failed` or `cancelled`.
//!
//! Every task keeps its status in a per-status index (`tasks`), so an outcome, a count or the
//! next pending task costs O(log n) in the size of the run.

mod decide;
mod effects;
mod evolve;
pub mod plan;
pub mod view;

pub use decide::*;
pub use effects::{PromptRunEffect, effects_for, work_key};
pub use evolve::evolve;

use serde::{Deserialize, Serialize};
use spool_model::{
    CallUsage, IndexId, MediaType, PromptId, PromptRunId, RetryId, RunPrompt, RunSettings, RunTarget, RunTask,
    TaskAnswer, TaskFailure, TimeRange, VideoId,
};
use std::collections::BTreeMap;

/// Videos added to a run per listing page.
pub const RUN_VIDEOS_PAGE_MAX: usize = 500;
/// Videos of one `target.videos`.
pub const RUN_TARGET_VIDEOS_MAX: usize = 1000;
/// Videos of the run an import automation starts on its job (every part of every imported
/// file): more than a request may list, since one drop of files makes one job.
pub const AUTOMATION_RUN_VIDEOS_MAX: usize = 100_000;
/// Ids of a `videos` target a run's JSON lists (`run_context.video_ids`); past it the list is
/// cut and `video_count` says how many there are.
pub const RUN_CONTEXT_VIDEO_IDS_MAX: usize = RUN_TARGET_VIDEOS_MAX;
/// Tasks offered per run at once (the processor's concurrency bounds them further).
pub const RUN_TASKS_OFFERED_MAX: usize = 64;
/// Videos planned per run at once.
pub const RUN_PLANS_OFFERED_MAX: usize = 8;
/// Attempts of a task before a retryable failure fails it.
pub const TASK_ATTEMPTS_MAX: u32 = 3;
/// Wait before attempt n+1 after a retryable failure of attempt n (index n-1), ±20% jitter.
pub const TASK_RETRY_BACKOFF_MS: [u64; 2] = [1_000, 5_000];
/// `prompt_run.progress` is raised at most this often per run.
pub const RUN_PROGRESS_INTERVAL_MS: u64 = 2_000;
/// Processor calls `llm-calls` lists per run: the last this many (every call is a row of
/// `run_calls`).
pub const RUN_LLM_CALLS_KEPT_MAX: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PromptRunCommand {
    ExecuteRun {
        prompt_id: PromptId,
        target: RunTarget,
        settings: RunSettings,
        executed_by: String,
    },
    /// Effect outcome: add the next page of the run's videos.
    AddRunVideos {
        run_id: PromptRunId,
    },
    /// Effect outcome: what a video's media offers as segment boundaries (absolute
    /// microseconds; `None` when it was not read: fixed segmentation, an image, no media).
    RecordVideoAnalysis {
        run_id: PromptRunId,
        video: u32,
        boundaries_us: Option<Vec<u64>>,
        source: String,
    },
    /// An attempt begins (the executor records it before calling the processor).
    StartTask {
        run_id: PromptRunId,
        task: RunTask,
        attempt: u32,
    },
    RecordTaskSucceeded {
        run_id: PromptRunId,
        task: RunTask,
        attempt: u32,
        answer: TaskAnswer,
        usage: CallUsage,
        /// The segment's image vector the processor gave (little-endian `f32`s; empty: none).
        #[serde(default)]
        image_vector_le: Vec<u8>,
    },
    RecordTaskFailed {
        run_id: PromptRunId,
        task: RunTask,
        attempt: u32,
        failure: TaskFailure,
        usage: Option<CallUsage>,
    },
    CancelRun {
        run_id: PromptRunId,
        requested_by: String,
    },
    /// `POST …/segments/{segment_id}/retry`: a failed segment runs again.
    RetrySegment {
        run_id: PromptRunId,
        video_id: VideoId,
        segment: u32,
    },
    /// Effect outcome: end the run if it is done (or cancelled with nothing running).
    FinishRun {
        run_id: PromptRunId,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskStatus {
    Pending,
    Started,
    /// A retryable failure below the attempt limit, waiting for its timer.
    Waiting,
    Succeeded,
    Failed,
}

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskStatus::Succeeded | TaskStatus::Failed)
    }
}

pub use spool_model::RunStatus;

/// One task's state: its attempts and its last failure. A succeeded task's answer is a row of
/// the `run_answers` table (keyed by [`crate::AnswerKey`]), written in the commit of its
/// `PromptTaskSucceeded`: the views read it through [`crate::RowSource::answer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState {
    pub status: TaskStatus,
    pub attempts: u32,
    /// Attempts before the last manual retry: the automatic retry limit counts from here.
    pub attempts_base: u32,
    pub failure: Option<TaskFailure>,
    pub updated_at_ms: u64,
}

impl TaskState {
    fn new(at: u64) -> TaskState {
        TaskState { status: TaskStatus::Pending, attempts: 0, attempts_base: 0, failure: None, updated_at_ms: at }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSegment {
    pub video: u32,
    pub range: TimeRange,
    pub task: TaskState,
}

/// How a video ended in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VideoOutcome {
    Completed,
    Partial,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunVideo {
    pub video_id: VideoId,
    pub media_type: MediaType,
    pub planned: bool,
    pub method: String,
    /// Its segments are `seg_first .. seg_first + seg_count` of the run.
    pub seg_first: u32,
    pub seg_count: u32,
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub video_level: Option<TaskState>,
    /// Attempts of earlier video-level tasks of this video (a segment retry asks the video level
    /// again): the next one continues the count, so every call is its own (task, attempt).
    pub video_level_attempts: u32,
    pub outcome: Option<VideoOutcome>,
    /// Seconds of media its segments cover, in milliseconds.
    pub seconds_ms: u64,
}

impl RunVideo {
    pub fn segments(&self) -> std::ops::Range<u32> {
        self.seg_first..self.seg_first + self.seg_count
    }

    /// Every segment ended.
    pub fn segments_done(&self) -> bool {
        self.planned && self.succeeded + self.failed == self.seg_count
    }
}

/// Totals per media type (`total_videos`, `completed_audios`, …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaCounts {
    pub total: u32,
    pub completed: u32,
    pub failed: u32,
    pub partial: u32,
}

/// One processor call (`llm-calls`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmCallRecord {
    pub task: RunTask,
    pub attempt: u32,
    pub ok: bool,
    pub usage: CallUsage,
    pub video_ms: u64,
    pub at_ms: u64,
}

/// A manual segment retry (`retry_segment` and its status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRetry {
    pub task: RunTask,
    pub video_id: VideoId,
    pub created_at_ms: u64,
    /// The attempt the retry is (the segment's attempts + 1 when it was asked).
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopState {
    pub requested_at_ms: u64,
    pub requested_by: String,
    pub completed_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptRun {
    pub run_id: PromptRunId,
    pub prompt_id: PromptId,
    pub prompt: RunPrompt,
    pub target: RunTarget,
    pub settings: RunSettings,
    pub executed_by: String,
    pub status: RunStatus,
    pub error: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// The log position of the event that last finished it (0 before): the search projection
    /// must have passed it before the run reads as finished (`engine-spec/search.md`).
    pub finished_seq: u64,
    pub stop: Option<StopState>,
    pub listing_done: bool,
    /// Where the listing goes on: after this (created, id) of the index, or this position of
    /// `target.video_ids`.
    pub list_after: Option<(u64, VideoId)>,
    pub list_pos: usize,
    pub videos: Vec<RunVideo>,
    pub video_pos: BTreeMap<VideoId, u32>,
    /// Videos waiting for their plan.
    pub unplanned: std::collections::BTreeSet<u32>,
    pub segments: Vec<RunSegment>,
    pub tasks: crate::workset::StatusSets<TaskStatus, RunTask>,
    pub completed_segments: u64,
    pub failed_segments: u64,
    pub field_extraction_failures: u64,
    pub processing_failures: u64,
    pub video_level_total: u64,
    pub video_level_completed: u64,
    pub video_level_failed: u64,
    pub counts: BTreeMap<MediaType, MediaCounts>,
    pub total_ms: u64,
    /// Processor calls recorded (each a row of `run_calls`, numbered from 0).
    pub calls: u64,
    pub retries: BTreeMap<RetryId, SegmentRetry>,
    pub last_progress_ms: u64,
}

impl PromptRun {
    /// Accepts new work: new tasks, plans, pages.
    pub fn takes_work(&self) -> bool {
        !self.status.is_terminal() && self.stop.is_none()
    }

    pub fn running(&self) -> usize {
        self.tasks.count(TaskStatus::Started)
    }

    pub fn task(&self, task: RunTask) -> Option<&TaskState> {
        match task {
            RunTask::Segment(n) => self.segments.get(n as usize).map(|s| &s.task),
            RunTask::Video(v) => self.videos.get(v as usize).and_then(|v| v.video_level.as_ref()),
        }
    }

    fn task_mut(&mut self, task: RunTask) -> Option<&mut TaskState> {
        match task {
            RunTask::Segment(n) => self.segments.get_mut(n as usize).map(|s| &mut s.task),
            RunTask::Video(v) => self.videos.get_mut(v as usize).and_then(|v| v.video_level.as_mut()),
        }
    }

    /// The video a task works on.
    pub fn task_video(&self, task: RunTask) -> Option<u32> {
        match task {
            RunTask::Segment(n) => self.segments.get(n as usize).map(|s| s.video),
            RunTask::Video(v) => Some(v),
        }
    }

    /// The index the run's target names, if any.
    pub fn index_id(&self) -> Option<IndexId> {
        match &self.target {
            RunTarget::Index { index_id } => Some(*index_id),
            RunTarget::Videos { index_id, .. } => *index_id,
            RunTarget::Playground => None,
        }
    }

    pub fn media(&self, t: MediaType) -> MediaCounts {
        self.counts.get(&t).copied().unwrap_or_default()
    }
}

/// The public id of a run's segment: `seg_<run ulid>_<number>` (parsed back by
/// [`parse_segment_id`], so a lookup is O(1)).
pub fn segment_id(run_id: &PromptRunId, n: u32) -> String {
    format!("seg_{}_{n}", run_id.0)
}

/// The segment number of a segment id of this run.
pub fn parse_segment_id(run_id: &PromptRunId, s: &str) -> Option<u32> {
    let rest = s.strip_prefix("seg_")?;
    let (ulid, n) = rest.split_once('_')?;
    (ulid == run_id.0.to_string()).then_some(())?;
    n.parse().ok()
}

/// This machine in the registry (`crate::machines::for_each_machine!`).
pub struct Machine;

impl super::Machine for Machine {
    type Command = PromptRunCommand;
    type Effect = PromptRunEffect;
    type Key = spool_model::PromptRunId;

    fn decide(
        state: &crate::State,
        cmd: &PromptRunCommand,
        ctx: &mut crate::Ctx,
    ) -> Result<crate::Decision, crate::DomainError> {
        decide(state, cmd, ctx)
    }

    fn evolve(state: &mut crate::State, env: &spool_model::Envelope) {
        evolve(state, env)
    }

    fn work_key(event: &spool_model::Event) -> Option<crate::WorkKey> {
        work_key(event)
    }

    fn effects_for(state: &crate::State, key: spool_model::PromptRunId) -> Vec<PromptRunEffect> {
        effects_for(state, key)
    }

    fn with_work(state: &crate::State) -> Vec<spool_model::PromptRunId> {
        state.active_runs.iter().copied().collect()
    }

    fn fire(
        state: &crate::State,
        timer: &crate::Timer,
        _ctx: &mut crate::Ctx,
    ) -> Option<Result<crate::Decision, crate::DomainError>> {
        match timer {
            crate::Timer::PromptTaskRetry { .. } => Some(fire_retry(state, timer)),
            _ => None,
        }
    }
}
