//! The video machine (engine-spec/machines/video.md): a video in an index (created by an import
//! job today; uploads and registration come with the media issue), and its deletion
//! (draining → deleting → deleted, the media-store object removed).

mod decide;
mod effects;
mod evolve;
pub mod view;

pub use decide::decide;
pub use effects::{VideoEffect, effects_for, work_key};
pub use evolve::evolve;

use serde::{Deserialize, Serialize};
use spool_model::{ConnectorId, DeletionId, IndexId, MediaType, VideoId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VideoCommand {
    /// Start (or, when started, resume) the deletion of a video.
    DeleteVideo { video_id: VideoId },
    /// Effect outcome: nothing of the video runs any more.
    RecordVideoDrained { video_id: VideoId, deletion_id: DeletionId },
    /// Effect outcome: its media-store object is gone.
    RecordVideoPurged { video_id: VideoId, deletion_id: DeletionId },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Video {
    pub video_id: VideoId,
    pub index_id: IndexId,
    pub title: String,
    pub media_type: MediaType,
    pub connector_id: Option<ConnectorId>,
    pub source_path: String,
    pub source_etag: Option<String>,
    pub size_bytes: u64,
    pub sha256: [u8; 32],
    pub media_path: String,
    pub created_at_ms: u64,
    #[serde(default)]
    pub deletion: Option<crate::Deletion>,
}

impl Video {
    /// Visible to the API (no deletion has started).
    pub fn is_live(&self) -> bool {
        self.deletion.is_none()
    }
}
