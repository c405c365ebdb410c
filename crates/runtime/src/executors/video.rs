//! The video machine's executor: drain (nothing runs on a video yet) and purge (delete its
//! media-store object; deleting is idempotent, so a purge that runs twice is harmless).

use crate::Runtime;
use spool_core::{Command, VideoCommand};
use spool_model::{DeletionId, VideoId};
use std::sync::Arc;

impl Runtime {
    pub(super) async fn drain_video(
        self: &Arc<Self>,
        video_id: &VideoId,
        deletion_id: &DeletionId,
    ) -> Result<(), crate::RuntimeError> {
        self.execute(Command::Video(VideoCommand::RecordVideoDrained {
            video_id: *video_id,
            deletion_id: *deletion_id,
        }))
        .await
        .map(|_| ())
    }

    pub(super) async fn purge_video(
        self: &Arc<Self>,
        video_id: &VideoId,
        deletion_id: &DeletionId,
    ) -> Result<(), crate::RuntimeError> {
        use object_store::ObjectStoreExt;
        if self.read(|st| !st.videos_deleting.contains(video_id)) {
            return Ok(());
        }
        let Some(row) = self.video_row(video_id)? else {
            // Its row is written with the video: missing, the tables are damaged (the purge
            // stays pending, and says why).
            return Err(crate::RuntimeError::Log(spool_log::Error::Storage(format!(
                "the row of video {video_id} is missing from the videos table"
            ))));
        };
        // A later part's row names the first part, whose row lists every part.
        let first = match row.parts.first() {
            Some(f) if f != video_id => self.video_row(f)?,
            _ => None,
        };
        let parts = spool_core::parts_of_file(video_id, &row, first.as_deref());
        let unshared = self.read(|st| spool_core::media_unshared(st, video_id, parts));
        let path = row.media_path.clone();
        // Parts share one stored object: it goes with the last live part.
        let delete = if unshared {
            self.executors.media.inner.delete(&object_store::path::Path::from(path.as_str())).await
        } else {
            Ok(())
        };
        match delete {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                return Err(crate::RuntimeError::Log(spool_log::Error::Storage(format!("deleting {path}: {e}"))));
            }
        }
        self.execute(Command::Video(VideoCommand::RecordVideoPurged { video_id: *video_id, deletion_id: *deletion_id }))
            .await
            .map(|_| ())
    }
}

impl super::Execute for spool_core::VideoEffect {
    async fn run(&self, rt: &Arc<Runtime>) -> Result<(), crate::RuntimeError> {
        match self {
            spool_core::VideoEffect::DrainVideo { video_id, deletion_id } => {
                rt.drain_video(video_id, deletion_id).await
            }
            spool_core::VideoEffect::PurgeVideo { video_id, deletion_id } => {
                rt.purge_video(video_id, deletion_id).await
            }
        }
    }
}
