//! The video machine: a video in an index (created by an import job today; uploads and
//! registration come with the media issue).

mod evolve;
pub mod view;

pub use evolve::evolve;

use serde::{Deserialize, Serialize};
use spool_model::{ConnectorId, IndexId, MediaType, VideoId};

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
}
