//! The vocabulary of prompt runs: what a run was asked to do (target, segmentation, processor)
//! and what its tasks report. Persisted in the run's events: these types only grow at their end.

use crate::event::PromptVideoLevel;
use crate::ids::{IndexId, VideoId};
use serde::{Deserialize, Serialize};

/// How a run cuts a video or an audio file into segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Segmentation {
    /// Boundaries from the media (keyframes for video, silence for audio), else fixed.
    Smart,
    /// Segments of the given duration.
    Fixed,
    /// Like smart (Spool's rule is the same; see engine-spec/machines/prompt-run.md).
    ContentAware,
}

impl Segmentation {
    pub fn as_str(self) -> &'static str {
        match self {
            Segmentation::Smart => "smart",
            Segmentation::Fixed => "fixed",
            Segmentation::ContentAware => "content_aware",
        }
    }

    pub fn parse(s: &str) -> Option<Segmentation> {
        Some(match s {
            "smart" => Segmentation::Smart,
            "fixed" => Segmentation::Fixed,
            "content_aware" => Segmentation::ContentAware,
            _ => return None,
        })
    }
}

/// What `execute` was asked, as recorded: the processor is resolved from the configuration
/// when the run is created, so a later change of the configuration does not change a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSettings {
    pub video_segmentation: Segmentation,
    pub audio_segmentation: Segmentation,
    pub video_segment_s: Option<u32>,
    pub audio_segment_s: Option<u32>,
    /// As the request named it (`processing_model`), if it did.
    pub processing_model: Option<String>,
    /// The configured processor that runs the tasks.
    pub processor: String,
    pub enable_transcription: bool,
    pub enable_image_embedding: bool,
}

/// The media a run covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunTarget {
    Index { index_id: IndexId },
    Videos { video_ids: Vec<VideoId>, index_id: Option<IndexId> },
    Playground,
}

/// The prompt as the run took it (later edits of the prompt do not change a run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPrompt {
    pub name: String,
    pub prompt_text: String,
    pub json_schema: String,
    pub video_level: Option<PromptVideoLevel>,
}

/// One unit of a run's work: a segment (by its number in the run) or a video's video-level
/// call (by the video's number in the run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RunTask {
    Segment(u32),
    Video(u32),
}

/// A time range of a video, in microseconds of its stored media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    pub start_us: u64,
    pub end_us: u64,
}

/// A processor's answer that passed the schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAnswer {
    /// The `metadata` object's JSON text.
    pub metadata_json: String,
    pub metadata_text: String,
}

/// What one processor call cost, as the processor reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub duration_ms: u64,
}

/// Why a task attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// `processing` (the call failed) or `field_extraction` (the answer did not fit the schema).
    pub stage: crate::FailureStage,
    pub code: String,
    pub message: String,
    pub retryable: bool,
    /// The validator's error paths (JSON pointers into the answer), for `field_extraction`.
    pub error_paths: Vec<String>,
}
