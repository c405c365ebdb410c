//! Usage by calendar month (UTC), folded from the log for the `usage` resource
//! (`/work/notes/issue28-decisions.md`, "Usage"). Counters only: per-event usage records are not
//! kept (`/usage/details` answers `usage_details_unavailable`).
//!
//! Each partition of a partitioned cluster folds its own events: its [`Usage`] counts what
//! happened there (prompt runs and videos live in index partitions); the catalog's mirrored
//! events (`evolve_mirrored`: keys, connectors, prompts) count nothing here.
//!
//! Stored bytes are not a total here: a video's deletion (`VideoDeletionStarted`,
//! `VideoDeleted`) does not carry its size and the state does not hold video rows
//! (`engine-spec/tables.md`), so only the bytes imported per month are counted.

use crate::State;
use serde::{Deserialize, Serialize};
use spool_model::{CallUsage, Envelope, Event, RunTask};
use std::collections::BTreeMap;

/// The most months kept (ten years); past it the oldest month is dropped.
pub const MONTHS_KEPT: usize = 120;

const DAY_MS: u64 = 86_400_000;

/// The usage counters, by month (`year * 100 + month`, UTC: `202612` is December 2026).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub months: BTreeMap<u32, MonthUsage>,
}

/// What one month counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthUsage {
    /// Milliseconds of media probed: each `VideoImported`'s part (its time range of the file;
    /// the parts of a file add up to the file's duration). `VideoCreated` (before the probe): 0.
    pub video_ms_probed: u64,
    /// Milliseconds of media of the segments that succeeded (the segment's time range, floored
    /// to ms as `llm-calls` shows it); video-level results add 0.
    pub video_ms_processed: u64,
    /// `PromptTaskSucceeded` of a segment.
    pub segments_processed: u64,
    /// `PromptTaskSucceeded` of a video-level task.
    pub video_results: u64,
    /// Processor calls: every `PromptTaskSucceeded`, and every `PromptTaskFailed` with a usage
    /// (`None` there: no call was made, e.g. the video was gone or the processor not configured).
    pub processor_calls: u64,
    /// Calls whose processor reported no tokens (input + output = 0).
    pub calls_without_token_usage: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Videos made by imports and uploads (`VideoCreated` / `VideoImported`): each part of a
    /// long file is a video.
    pub videos_uploaded: u64,
    /// Runs that ended `completed` or `completed_with_failures` (a run reopened by a segment
    /// retry and ended again counts again).
    pub runs_completed: u64,
    /// Bytes stored by imports (`ImportFileImported`: once per file, whatever its parts).
    pub bytes_imported: u64,
}

impl MonthUsage {
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    fn add(&mut self, d: &MonthUsage) {
        self.video_ms_probed = self.video_ms_probed.saturating_add(d.video_ms_probed);
        self.video_ms_processed = self.video_ms_processed.saturating_add(d.video_ms_processed);
        self.segments_processed = self.segments_processed.saturating_add(d.segments_processed);
        self.video_results = self.video_results.saturating_add(d.video_results);
        self.processor_calls = self.processor_calls.saturating_add(d.processor_calls);
        self.calls_without_token_usage = self.calls_without_token_usage.saturating_add(d.calls_without_token_usage);
        self.input_tokens = self.input_tokens.saturating_add(d.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(d.output_tokens);
        self.videos_uploaded = self.videos_uploaded.saturating_add(d.videos_uploaded);
        self.runs_completed = self.runs_completed.saturating_add(d.runs_completed);
        self.bytes_imported = self.bytes_imported.saturating_add(d.bytes_imported);
    }
}

impl Usage {
    /// A month's counters, if it counted anything (and is still kept).
    pub fn month(&self, ym: u32) -> Option<&MonthUsage> {
        self.months.get(&ym)
    }

    /// Add to a month: O(log n). A new month past [`MONTHS_KEPT`] drops the oldest; a month
    /// older than every kept one (when all are kept) is dropped at once.
    fn add(&mut self, ym: u32, d: &MonthUsage) {
        if self.months.len() >= MONTHS_KEPT && !self.months.contains_key(&ym) {
            if self.months.first_key_value().is_some_and(|(first, _)| ym < *first) {
                return;
            }
            self.months.pop_first();
        }
        self.months.entry(ym).or_default().add(d);
    }
}

/// Fold one event into `state.usage`, in the month of `env.at_ms`. Called by `evolve` before
/// the machines fold the event: it reads the run's segment in the state as it was (a segment's
/// range never changes once planned, so before or after reads the same). Not called for the
/// catalog's events mirrored into an index partition.
pub fn fold(state: &mut State, env: &Envelope) {
    if let Some(d) = delta(state, &env.event) {
        state.usage.add(month_of(env.at_ms), &d);
    }
}

/// What one event adds, if anything.
fn delta(state: &State, event: &Event) -> Option<MonthUsage> {
    let mut d = MonthUsage::default();
    match event {
        Event::VideoCreated { .. } => d.videos_uploaded = 1,
        Event::VideoImported { part, .. } => {
            d.videos_uploaded = 1;
            // Rounded as the index's media milliseconds are (`video::media_ms`).
            d.video_ms_probed = part.end_us.saturating_sub(part.start_us).saturating_add(500) / 1000;
        }
        Event::ImportFileImported { bytes, .. } => d.bytes_imported = *bytes,
        Event::PromptTaskSucceeded { run_id, task, usage, .. } => {
            let run = state.prompt_runs.get(run_id)?;
            call(&mut d, usage);
            match task {
                RunTask::Segment(n) => {
                    d.segments_processed = 1;
                    d.video_ms_processed = run
                        .segments
                        .get(spool_model::num::sat_usize(*n))
                        .map_or(0, |s| s.range.end_us.saturating_sub(s.range.start_us) / 1000);
                }
                RunTask::Video(_) => d.video_results = 1,
            }
        }
        Event::PromptTaskFailed { run_id, usage: Some(usage), .. } => {
            if !state.prompt_runs.contains_key(run_id) {
                return None;
            }
            call(&mut d, usage);
        }
        Event::PromptRunFinished { run_id, status, .. } if status.has_results() => {
            if !state.prompt_runs.contains_key(run_id) {
                return None;
            }
            d.runs_completed = 1;
        }
        _ => return None,
    }
    Some(d)
}

/// One processor call and the tokens it reported.
fn call(d: &mut MonthUsage, usage: &CallUsage) {
    d.processor_calls = 1;
    d.input_tokens = usage.input_tokens;
    d.output_tokens = usage.output_tokens;
    if usage.input_tokens.saturating_add(usage.output_tokens) == 0 {
        d.calls_without_token_usage = 1;
    }
}

/// The month (`year * 100 + month`, UTC) of milliseconds since the Unix epoch. Saturates at
/// `u32::MAX` past year 42,949,672.
pub fn month_of(ms: u64) -> u32 {
    // At most u64::MAX / 86,400,000 days: always an i64.
    let days = i64::try_from(ms / DAY_MS).unwrap_or(i64::MAX);
    let (y, m, _) = spool_model::time::civil_from_days(days);
    u32::try_from(y).ok().and_then(|y| y.checked_mul(100)).and_then(|v| v.checked_add(m)).unwrap_or(u32::MAX)
}

/// The month after `ym` (a month outside 1..=12 is taken as its nearest, as in [`month_bounds`]).
pub fn next_month(ym: u32) -> u32 {
    let (y, m) = (ym / 100, (ym % 100).clamp(1, 12));
    if m == 12 { y.saturating_add(1).saturating_mul(100).saturating_add(1) } else { y * 100 + m + 1 }
}

/// The milliseconds a month covers, UTC: its first instant and the first of the next month
/// (exclusive). A month number outside 1..=12 is taken as its nearest; instants before 1970
/// are 0.
pub fn month_bounds(ym: u32) -> (u64, u64) {
    (month_start(ym), month_start(next_month(ym)))
}

fn month_start(ym: u32) -> u64 {
    let (y, m) = (ym / 100, (ym % 100).clamp(1, 12));
    spool_model::num::non_negative(spool_model::time::days_from_civil(i64::from(y), m, 1)).saturating_mul(DAY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spool_model::time::parse_rfc3339_ms;
    use spool_model::{
        FORMAT_VERSION, FailureStage, IndexId, MediaFacts, MediaType, PartRange, PromptId, PromptRunId,
        PromptVideoLevel, RunPrompt, RunSettings, RunStatus, RunTarget, Segmentation, TaskAnswer, TaskFailure,
        TimeRange, VideoId,
    };
    use ulid::Ulid;

    /// 2026-12-31T23:59:59.999Z and the next millisecond, 2027-01-01T00:00:00.000Z.
    const DEC_LAST: u64 = 1_798_761_599_999;
    const JAN_FIRST: u64 = 1_798_761_600_000;

    fn at(s: &str) -> u64 {
        parse_rfc3339_ms(s).unwrap_or_else(|| panic!("{s} parses"))
    }

    struct Log {
        st: State,
        seq: u64,
    }

    impl Log {
        fn new() -> Log {
            Log { st: State::default(), seq: 0 }
        }

        /// Fold through `evolve`, as the runtime does.
        fn fold(&mut self, at_ms: u64, event: Event) {
            self.seq += 1;
            let env = Envelope { seq: self.seq, stream: "s".into(), at_ms, format_version: FORMAT_VERSION, event };
            crate::evolve(&mut self.st, &env);
        }

        fn month(&self, ym: u32) -> MonthUsage {
            self.st.usage.month(ym).copied().unwrap_or_default()
        }
    }

    fn imported(video_id: VideoId, start_us: u64, end_us: u64) -> Event {
        Event::VideoImported {
            video_id,
            index_id: IndexId(Ulid::from_parts(1, 1)),
            title: "clip.mp4".into(),
            media_type: MediaType::Video,
            connector_id: None,
            source_path: "clip.mp4".into(),
            source_etag: None,
            size_bytes: 1000,
            sha256: [0; 32],
            media_path: "videos/clip.mp4".into(),
            facts: MediaFacts {
                container: "mp4".into(),
                duration_us: Some(3_000_000_000),
                bit_rate: None,
                streams: vec![],
            },
            part: PartRange { part_index: 0, part_count: 2, start_us, end_us },
            parts: vec![],
        }
    }

    #[test]
    fn the_instants_fall_in_their_months() {
        assert_eq!(at("2026-12-31T23:59:59.999Z"), DEC_LAST);
        assert_eq!(at("2027-01-01T00:00:00Z"), JAN_FIRST);
        assert_eq!(month_of(DEC_LAST), 202_612);
        assert_eq!(month_of(JAN_FIRST), 202_701);
        assert_eq!(month_of(0), 197_001);
        assert_eq!(month_of(at("2028-02-29T12:00:00Z")), 202_802);
        assert_eq!(month_of(at("2028-03-01T00:00:00Z")), 202_803);
        assert_eq!(month_of(u64::MAX), u32::MAX);
    }

    #[test]
    fn a_month_covers_its_days() {
        assert_eq!(month_bounds(202_612), (at("2026-12-01T00:00:00Z"), JAN_FIRST));
        assert_eq!(month_bounds(197_001), (0, at("1970-02-01T00:00:00Z")));
        let days = |ym| {
            let (a, b) = month_bounds(ym);
            (b - a) / DAY_MS
        };
        assert_eq!(days(202_602), 28);
        assert_eq!(days(202_802), 29);
        assert_eq!(days(210_002), 28);
        assert_eq!(days(200_002), 29);
        assert_eq!(next_month(202_612), 202_701);
        assert_eq!(next_month(202_601), 202_602);
        // Every month from 1970 to 2100: its bounds hold it, and follow each other.
        let mut ym = 197_001;
        while ym < 210_001 {
            let (a, b) = month_bounds(ym);
            assert!(a < b, "{ym}");
            assert_eq!(month_of(a), ym);
            assert_eq!(month_of(b - 1), ym);
            assert_eq!(month_bounds(next_month(ym)).0, b);
            ym = next_month(ym);
        }
    }

    #[test]
    fn a_run_counts_calls_tokens_and_segments_in_their_months() {
        let mut log = Log::new();
        let run_id = PromptRunId(Ulid::from_parts(2, 2));
        let video_id = VideoId(Ulid::from_parts(3, 3));
        let t0 = at("2026-12-31T22:00:00Z");
        log.fold(
            t0,
            Event::PromptRunCreated {
                run_id,
                prompt_id: PromptId(Ulid::from_parts(4, 4)),
                prompt: RunPrompt {
                    name: "Facts".into(),
                    prompt_text: "Describe.".into(),
                    json_schema: r#"{"type":"object"}"#.into(),
                    video_level: Some(PromptVideoLevel {
                        instructions_text: "Sum up.".into(),
                        json_schema: r#"{"type":"object"}"#.into(),
                    }),
                },
                target: RunTarget::Videos { video_ids: vec![video_id], index_id: None },
                settings: RunSettings {
                    video_segmentation: Segmentation::Fixed,
                    audio_segmentation: Segmentation::Fixed,
                    video_segment_s: Some(7),
                    audio_segment_s: None,
                    processing_model: None,
                    processor: "probe".into(),
                    enable_transcription: false,
                    enable_image_embedding: false,
                },
                executed_by: "key_x".into(),
            },
        );
        log.fold(
            t0,
            Event::PromptRunVideosListed {
                run_id,
                videos: vec![(video_id, MediaType::Video)],
                after: None,
                done: true,
            },
        );
        log.fold(
            t0,
            Event::PromptRunVideoPlanned {
                run_id,
                video: 0,
                segments: vec![
                    TimeRange { start_us: 0, end_us: 7_000_000 },
                    TimeRange { start_us: 7_000_000, end_us: 9_500_000 },
                ],
                method: "fixed".into(),
            },
        );
        let answer = TaskAnswer { metadata_json: "{}".into(), metadata_text: String::new() };
        let failure = |retryable| TaskFailure {
            stage: FailureStage::Processing,
            code: "processor_failed".into(),
            message: "no".into(),
            retryable,
            error_paths: vec![],
        };
        // December: segment 0 succeeds at the month's last millisecond; segment 1 fails without a
        // call (usage `None`).
        log.fold(t0, Event::PromptTaskStarted { run_id, task: RunTask::Segment(0), attempt: 1 });
        log.fold(
            DEC_LAST,
            Event::PromptTaskSucceeded {
                run_id,
                task: RunTask::Segment(0),
                attempt: 1,
                answer: answer.clone(),
                usage: CallUsage { input_tokens: 120, output_tokens: 30, duration_ms: 42 },
            },
        );
        log.fold(DEC_LAST, Event::PromptTaskStarted { run_id, task: RunTask::Segment(1), attempt: 1 });
        log.fold(
            DEC_LAST,
            Event::PromptTaskFailed {
                run_id,
                task: RunTask::Segment(1),
                attempt: 1,
                failure: failure(false),
                usage: None,
                retry_due_ms: None,
            },
        );
        // January: the video-level task fails once after a call that reported no tokens, then
        // succeeds; the run ends.
        log.fold(JAN_FIRST, Event::PromptTaskStarted { run_id, task: RunTask::Video(0), attempt: 1 });
        log.fold(
            JAN_FIRST,
            Event::PromptTaskFailed {
                run_id,
                task: RunTask::Video(0),
                attempt: 1,
                failure: failure(true),
                usage: Some(CallUsage::default()),
                retry_due_ms: Some(JAN_FIRST + 1000),
            },
        );
        log.fold(JAN_FIRST + 1000, Event::PromptTaskRetryDue { run_id, task: RunTask::Video(0), attempt: 1 });
        log.fold(JAN_FIRST + 1000, Event::PromptTaskStarted { run_id, task: RunTask::Video(0), attempt: 2 });
        log.fold(
            JAN_FIRST + 2000,
            Event::PromptTaskSucceeded {
                run_id,
                task: RunTask::Video(0),
                attempt: 2,
                answer,
                usage: CallUsage { input_tokens: 5, output_tokens: 7, duration_ms: 1 },
            },
        );
        log.fold(
            JAN_FIRST + 3000,
            Event::PromptRunFinished { run_id, status: RunStatus::CompletedWithFailures, error: None },
        );

        let dec = log.month(202_612);
        assert_eq!(
            dec,
            MonthUsage {
                video_ms_processed: 7_000,
                segments_processed: 1,
                processor_calls: 1,
                input_tokens: 120,
                output_tokens: 30,
                ..MonthUsage::default()
            }
        );
        let jan = log.month(202_701);
        assert_eq!(
            jan,
            MonthUsage {
                video_results: 1,
                processor_calls: 2,
                calls_without_token_usage: 1,
                input_tokens: 5,
                output_tokens: 7,
                runs_completed: 1,
                ..MonthUsage::default()
            }
        );
        assert_eq!(jan.total_tokens(), 12);
        assert_eq!(log.st.usage.months.len(), 2);
        // A snapshot keeps the counters.
        assert_eq!(State::from_snapshot(&log.st.to_snapshot()).map(|s| s.usage), Some(log.st.usage.clone()));
    }

    #[test]
    fn an_outcome_of_an_unknown_run_counts_nothing() {
        let mut log = Log::new();
        log.fold(
            JAN_FIRST,
            Event::PromptTaskSucceeded {
                run_id: PromptRunId(Ulid::from_parts(9, 9)),
                task: RunTask::Segment(0),
                attempt: 1,
                answer: TaskAnswer { metadata_json: "{}".into(), metadata_text: String::new() },
                usage: CallUsage { input_tokens: 1, output_tokens: 1, duration_ms: 1 },
            },
        );
        assert!(log.st.usage.months.is_empty());
    }

    #[test]
    fn imports_count_videos_probed_media_and_bytes_by_month() {
        let mut log = Log::new();
        let (first, second) = (VideoId(Ulid::from_parts(5, 5)), VideoId(Ulid::from_parts(6, 6)));
        log.fold(
            DEC_LAST,
            Event::ImportFileImported {
                job_id: spool_model::ImportJobId(Ulid::from_parts(7, 7)),
                file_id: 0,
                video_id: first,
                bytes: 52_428,
                sha256: [0; 32],
            },
        );
        log.fold(DEC_LAST, imported(first, 0, 2_400_000_000));
        log.fold(JAN_FIRST, imported(second, 2_400_000_000, 3_000_000_000));
        assert_eq!(
            log.month(202_612),
            MonthUsage {
                video_ms_probed: 2_400_000,
                videos_uploaded: 1,
                bytes_imported: 52_428,
                ..MonthUsage::default()
            }
        );
        assert_eq!(
            log.month(202_701),
            MonthUsage { video_ms_probed: 600_000, videos_uploaded: 1, ..MonthUsage::default() }
        );
    }

    #[test]
    fn at_most_120_months_are_kept() {
        let mut log = Log::new();
        let mut ym = 201_501;
        let mut months = vec![];
        for n in 0..130u64 {
            months.push(ym);
            log.fold(month_bounds(ym).0, imported(VideoId(Ulid::from_parts(100 + n, 1)), 0, 1_000));
            ym = next_month(ym);
        }
        let kept: Vec<u32> = log.st.usage.months.keys().copied().collect();
        assert_eq!(kept, months[10..].to_vec());
        // A month older than every kept one is dropped; a kept month still counts.
        log.fold(month_bounds(months[0]).0, imported(VideoId(Ulid::from_parts(900, 1)), 0, 1_000));
        assert_eq!(log.st.usage.months.len(), MONTHS_KEPT);
        assert_eq!(log.st.usage.month(months[0]), None);
        log.fold(month_bounds(months[10]).0, imported(VideoId(Ulid::from_parts(901, 1)), 0, 1_000));
        assert_eq!(log.month(months[10]).videos_uploaded, 2);
        assert_eq!(log.st.usage.months.len(), MONTHS_KEPT);
    }
}
