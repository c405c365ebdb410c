use super::Video;
use crate::State;
use spool_model::{DeletionStage, Envelope, Event};

/// A new video, on its index's pages.
fn insert(state: &mut State, v: Video) {
    state.index_videos.entry(v.index_id).or_default().insert((v.created_at_ms, v.video_id));
    *state.index_media_ms.entry(v.index_id).or_default() += media_ms(&v);
    state.videos.insert(v.video_id, v);
}

/// The milliseconds of media a video covers (its part's range).
pub fn media_ms(v: &Video) -> u64 {
    let (a, b) = v.range_seconds();
    spool_model::num::f64_to_u64(((b - a).max(0.0) * 1000.0).round())
}

/// Fold the video's events; others are not this machine's.
pub fn evolve(state: &mut State, env: &Envelope) {
    let at = env.at_ms;
    match &env.event {
        // Logs before the probe hold `VideoCreated`; imports since write `VideoImported`, the
        // same fields with the facts.
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
        }
        | Event::VideoImported {
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
            ..
        } => {
            let (facts, part, parts) = match &env.event {
                Event::VideoImported { facts, part, parts, .. } => (Some(facts.clone()), Some(*part), parts.clone()),
                _ => (None, None, Vec::new()),
            };
            let v = Video {
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
                deletion: None,
                facts,
                part,
                parts,
            };
            insert(state, v);
        }
        Event::VideoDeletionRequested { video_id, deletion_id } => {
            if let Some(v) = state.videos.get_mut(video_id) {
                v.deletion = Some(crate::Deletion {
                    deletion_id: *deletion_id,
                    stage: DeletionStage::Draining,
                    requested_at_ms: at,
                    finished_at_ms: None,
                });
                // Gone from its index's pages at once.
                if let Some(set) = state.index_videos.get_mut(&v.index_id)
                    && set.remove(&(v.created_at_ms, *video_id))
                    && let Some(ms) = state.index_media_ms.get_mut(&v.index_id)
                {
                    *ms = ms.saturating_sub(media_ms(v));
                }
                state.videos_deleting.insert(*video_id);
            }
        }
        Event::VideoDrained { video_id, .. } => {
            if let Some(d) = state.videos.get_mut(video_id).and_then(|v| v.deletion.as_mut()) {
                d.stage = DeletionStage::Deleting;
            }
        }
        Event::VideoDeleted { video_id, .. } => {
            if let Some(d) = state.videos.get_mut(video_id).and_then(|v| v.deletion.as_mut()) {
                d.stage = DeletionStage::Deleted;
                d.finished_at_ms = Some(at);
            }
            state.videos_deleting.remove(video_id);
        }
        _ => {}
    }
}
