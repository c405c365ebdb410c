use crate::{State, WorkKey};
use serde::Serialize;
use spool_model::{DeletionId, DeletionStage, Event, VideoId};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum VideoEffect {
    /// Stop the video's running work (none yet: prompt runs come later); `RecordVideoDrained`.
    DrainVideo { video_id: VideoId, deletion_id: DeletionId },
    /// Remove its media-store object; `RecordVideoPurged`.
    PurgeVideo { video_id: VideoId, deletion_id: DeletionId },
}

impl VideoEffect {
    pub fn work_key(&self) -> WorkKey {
        match self {
            VideoEffect::DrainVideo { video_id, .. } | VideoEffect::PurgeVideo { video_id, .. } => {
                WorkKey::Video(*video_id)
            }
        }
    }
}

/// The video whose effects this event can change.
pub fn work_key(event: &Event) -> Option<WorkKey> {
    match event {
        Event::VideoDeletionRequested { video_id, .. }
        | Event::VideoDeletionStarted { video_id, .. }
        | Event::VideoDrained { video_id, .. }
        | Event::VideoDeleted { video_id, .. } => Some(WorkKey::Video(*video_id)),
        _ => None,
    }
}

/// What the video's deletion needs next.
pub fn effects_for(state: &State, id: VideoId) -> Vec<VideoEffect> {
    let Some(d) = state.video_deletions.get(&id) else { return Vec::new() };
    match d.stage {
        DeletionStage::Draining => vec![VideoEffect::DrainVideo { video_id: id, deletion_id: d.deletion_id }],
        DeletionStage::Deleting => vec![VideoEffect::PurgeVideo { video_id: id, deletion_id: d.deletion_id }],
        DeletionStage::Deleted => Vec::new(),
    }
}
