use super::VideoCommand;
use crate::{Ctx, Decision, DomainError, Outcome, State};
use spool_model::{DeletionId, DeletionStage, Event};

pub fn decide(state: &State, cmd: &VideoCommand, ctx: &mut Ctx) -> Result<Decision, DomainError> {
    match cmd {
        VideoCommand::DeleteVideo { video_id } => {
            // Its row was loaded for this decision (`crate::rows::needs`).
            let v = state
                .video(video_id)
                .filter(|v| v.visible(state) || v.deletion.is_some())
                .ok_or_else(|| DomainError::NotFound { kind: "video", id: video_id.to_string() })?;
            if v.deletion.is_some() {
                // Start or resume: a repeated DELETE returns the deletion under way.
                return Ok(Decision::nothing(Outcome::Video(*video_id)));
            }
            let deletion_id = DeletionId(ctx.new_ulid());
            Ok(Decision::one(
                video_id.to_string(),
                vec![Event::VideoDeletionStarted {
                    video_id: *video_id,
                    deletion_id,
                    index_id: v.index_id,
                    created_at_ms: v.created_at_ms,
                    media_ms: super::evolve::media_ms(&v),
                }],
                Outcome::Video(*video_id),
            ))
        }
        VideoCommand::RecordVideoDrained { video_id, deletion_id } => match state.video_deletions.get(video_id) {
            Some(d) if d.deletion_id == *deletion_id && d.stage == DeletionStage::Draining => Ok(Decision::one(
                video_id.to_string(),
                vec![Event::VideoDrained { video_id: *video_id, deletion_id: *deletion_id }],
                Outcome::Done,
            )),
            _ => Ok(Decision::nothing(Outcome::Done)),
        },
        VideoCommand::RecordVideoPurged { video_id, deletion_id } => match state.video_deletions.get(video_id) {
            Some(d) if d.deletion_id == *deletion_id && d.stage == DeletionStage::Deleting => Ok(Decision::one(
                video_id.to_string(),
                vec![Event::VideoDeleted { video_id: *video_id, deletion_id: *deletion_id }],
                Outcome::Done,
            )),
            _ => Ok(Decision::nothing(Outcome::Done)),
        },
    }
}
