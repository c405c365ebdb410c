//! The video machine (engine-spec/machines/video.md): a video in an index (created by an import
//! job today; uploads and registration come with the media issue), and its deletion
//! (draining → deleting → deleted, the media-store object removed).

mod decide;
mod effects;
mod evolve;
pub mod view;

pub use decide::decide;
pub use effects::{VideoEffect, effects_for, work_key};
pub use evolve::{evolve, media_ms};

use serde::{Deserialize, Serialize};
use spool_model::{ConnectorId, DeletionId, IndexId, MediaFacts, MediaType, PartRange, VideoId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VideoCommand {
    /// Start (or, when started, resume) the deletion of a video.
    DeleteVideo { video_id: VideoId },
    /// Effect outcome: nothing of the video runs any more.
    RecordVideoDrained { video_id: VideoId, deletion_id: DeletionId },
    /// Effect outcome: its media-store object is gone.
    RecordVideoPurged { video_id: VideoId, deletion_id: DeletionId },
}

/// A video as decisions and views see it: its row's brief fields and its deletion, if one
/// started. Not held by the state (`engine-spec/tables.md`): made from its [`VideoRow`] (read
/// from the `videos` table, or loaded into the state for a decision) and the state's
/// `video_deletions` by [`Video::of`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Video {
    pub video_id: VideoId,
    pub index_id: IndexId,
    pub media_type: MediaType,
    pub created_at_ms: u64,
    /// The time range of the stored media this video covers, in microseconds (its part's, or
    /// the whole file's; `(0, 0)` for videos imported before the probe).
    pub range_us: (u64, u64),
    pub deletion: Option<Box<crate::Deletion>>,
}

/// The immutable facts of a video, written once (with its `VideoImported`) into the `videos`
/// table and read from there: by the API and the executors from the log's store, by a decision
/// from the rows the runtime loaded for it ([`crate::Rows`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoRow {
    pub index_id: IndexId,
    pub media_type: MediaType,
    /// When its `VideoImported` (or `VideoCreated`) was recorded.
    pub created_at_ms: u64,
    pub title: String,
    pub connector_id: Option<ConnectorId>,
    pub source_path: String,
    pub source_etag: Option<String>,
    pub size_bytes: u64,
    pub sha256: [u8; 32],
    pub media_path: String,
    /// The probe's facts of the stored media (none for videos imported before the probe).
    pub facts: Option<MediaFacts>,
    /// The part of the stored media this video covers.
    pub part: Option<PartRange>,
    /// Every part's video of the same stored media, in order (empty: this video alone). The
    /// first part's row lists them all; a later part's lists the first part alone.
    pub parts: Vec<VideoId>,
}

/// The format of a [`VideoRow`] in the table (its first byte): a row of another format is
/// rebuilt from the log at start (`crate::rows::TABLES_FORMAT`).
pub const VIDEO_ROW_FORMAT: u8 = 2;

impl VideoRow {
    /// The time range of the stored media this video covers, in microseconds.
    pub fn range_us(&self) -> (u64, u64) {
        range_us(self.part.as_ref(), self.facts.as_ref())
    }

    pub fn encode(&self) -> Vec<u8> {
        crate::rows::encode_row(VIDEO_ROW_FORMAT, self)
    }

    /// `None` for bytes of another format or damaged ones.
    pub fn decode(bytes: &[u8]) -> Option<VideoRow> {
        crate::rows::decode_row(VIDEO_ROW_FORMAT, bytes)
    }
}

impl Video {
    /// The video of a row, with its deletion (the state's `video_deletions`), if one started.
    pub fn of(video_id: VideoId, row: &VideoRow, deletion: Option<&crate::Deletion>) -> Video {
        Video {
            video_id,
            index_id: row.index_id,
            media_type: row.media_type,
            created_at_ms: row.created_at_ms,
            range_us: row.range_us(),
            deletion: deletion.map(|d| Box::new(d.clone())),
        }
    }

    /// Visible to the API (no deletion has started).
    pub fn is_live(&self) -> bool {
        self.deletion.is_none()
    }

    /// Shown by the API: live, and in a live index or the playground.
    pub fn visible(&self, st: &crate::State) -> bool {
        self.is_live() && (self.in_playground() || st.live_index(&self.index_id).is_some())
    }

    /// In the playground (an upload without an index).
    pub fn in_playground(&self) -> bool {
        self.index_id == crate::machines::import_job::PLAYGROUND
    }

    /// The time range of the stored media this video covers, in seconds.
    pub fn range_seconds(&self) -> (f64, f64) {
        (self.range_us.0 as f64 / 1e6, self.range_us.1 as f64 / 1e6)
    }
}

/// The time range a video covers, in microseconds: its part's, else the whole file's.
pub fn range_us(part: Option<&PartRange>, facts: Option<&MediaFacts>) -> (u64, u64) {
    match (part, facts) {
        (Some(p), _) => (p.start_us, p.end_us),
        (None, Some(f)) => (0, f.duration_us.unwrap_or(0)),
        (None, None) => (0, 0),
    }
}

/// Every part's video over the same stored file, in order (empty for a file of one part).
/// The first part's `VideoImported` lists them all; a later part's lists the first part alone
/// (since format 2 of the field's use: older logs list them all on every part, which reads the
/// same), so a file of n parts costs O(n) bytes of log, not O(n²). `first` is the first
/// part's row when this is a later part.
pub fn parts_of_file<'a>(video_id: &VideoId, row: &'a VideoRow, first: Option<&'a VideoRow>) -> &'a [VideoId] {
    match (row.parts.first(), first) {
        (Some(f), Some(first)) if f != video_id => &first.parts,
        _ => &row.parts,
    }
}

/// Whether a video's stored media may be removed: no other part over it is live.
pub fn media_unshared(state: &crate::State, video_id: &VideoId, parts: &[VideoId]) -> bool {
    parts.iter().filter(|p| *p != video_id).all(|p| state.video_deletions.contains_key(p))
}

/// This machine in the registry (`crate::machines::for_each_machine!`).
pub struct Machine;

impl super::Machine for Machine {
    type Command = VideoCommand;
    type Effect = VideoEffect;
    type Key = spool_model::VideoId;
    const NOT_FOUND: &'static [(&'static str, &'static str)] = &[("video", "resource_video_not_found")];

    fn decide(
        state: &crate::State,
        cmd: &VideoCommand,
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

    fn effects_for(state: &crate::State, key: spool_model::VideoId) -> Vec<VideoEffect> {
        effects_for(state, key)
    }

    fn with_work(state: &crate::State) -> Vec<spool_model::VideoId> {
        state.videos_deleting.iter().copied().collect()
    }
}
