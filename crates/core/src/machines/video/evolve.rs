use super::Video;
use crate::State;
use spool_model::{Envelope, Event};

/// Fold the video's events; others are not this machine's (one today; more come with uploads).
#[allow(clippy::single_match)]
pub fn evolve(state: &mut State, env: &Envelope) {
    let at = env.at_ms;
    match &env.event {
        Event::VideoCreated {
            video_id,
            index_id,
            title,
            media_type,
            connector_id,
            source_path,
            source_etag,
            size_bytes,
            sha256,
            media_path,
        } => {
            state.videos.insert(
                *video_id,
                Video {
                    video_id: *video_id,
                    index_id: *index_id,
                    title: title.clone(),
                    media_type: *media_type,
                    connector_id: *connector_id,
                    source_path: source_path.clone(),
                    source_etag: source_etag.clone(),
                    size_bytes: *size_bytes,
                    sha256: *sha256,
                    media_path: media_path.clone(),
                    created_at_ms: at,
                },
            );
            state.index_videos.entry(*index_id).or_default().insert((at, *video_id));
        }
        _ => {}
    }
}
