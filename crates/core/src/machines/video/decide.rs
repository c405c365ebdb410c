use super::VideoCommand;
use crate::{Ctx, Decision, DomainError, Outcome, State};
use spool_model::{DeletionId, DeletionStage, Event, VideoId};

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
        VideoCommand::RecordVideoDrained { video_id, deletion_id } => Ok(step(
            state,
            (video_id, deletion_id),
            DeletionStage::Draining,
            Event::VideoDrained { video_id: *video_id, deletion_id: *deletion_id },
        )),
        VideoCommand::RecordVideoPurged { video_id, deletion_id } => Ok(step(
            state,
            (video_id, deletion_id),
            DeletionStage::Deleting,
            Event::VideoDeleted { video_id: *video_id, deletion_id: *deletion_id },
        )),
    }
}

/// An effect's outcome moves the deletion on when it is the deletion under way at `stage`;
/// a late or repeated one changes nothing.
fn step(
    state: &State,
    (video_id, deletion_id): (&VideoId, &DeletionId),
    stage: DeletionStage,
    next: Event,
) -> Decision {
    match state.video_deletions.get(video_id) {
        Some(d) if d.deletion_id == *deletion_id && d.stage == stage => {
            Decision::one(video_id.to_string(), vec![next], Outcome::Done)
        }
        _ => Decision::nothing(Outcome::Done),
    }
}
