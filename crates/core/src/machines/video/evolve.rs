use super::Video;
use crate::State;
use spool_model::{DeletionStage, Envelope, Event};

/// A new video, on its index's pages.
fn insert(state: &mut State, v: Video) {
    state.index_videos.entry(v.index_id).or_default().insert((v.created_at_ms, v.video_id));
    *state.index_media_ms.entry(v.index_id).or_default() += media_ms(&v);
    state.videos.insert(v.video_id, v);
}

/// The milliseconds of media a video covers (its part's range), rounded.
pub fn media_ms(v: &Video) -> u64 {
    let (a, b) = v.range_us;
    (b.saturating_sub(a) + 500) / 1000
}

/// Fold the video's events; others are not this machine's.
pub fn evolve(state: &mut State, env: &Envelope) {
    let at = env.at_ms;
    match &env.event {
        // Logs before the probe hold `VideoCreated`; imports since write `VideoImported`, the
        // same fields with the facts.
        Event::VideoCreated { video_id, index_id, media_type, .. }
        | Event::VideoImported { video_id, index_id, media_type, .. } => {
            let range = match &env.event {
                Event::VideoImported { facts, part, .. } => super::range_us(Some(part), Some(facts)),
                _ => (0, 0),
            };
            let v = Video {
                video_id: *video_id,
                index_id: *index_id,
                media_type: *media_type,
                created_at_ms: at,
                range_us: range,
                deletion: None,
            };
            if state.rows.emit
                && let Some(crate::RowWrite::Video(id, row)) = crate::rows::of_event(&env.event)
            {
                state.rows.written.push(crate::RowWrite::Video(id, row.clone()));
                state.rows.videos.insert(id, (env.seq, row));
            }
            insert(state, v);
        }
        // Logs before the tables: the fold finds the video's index and range in the state.
        Event::VideoDeletionRequested { video_id, deletion_id } => {
            if let Some(v) = state.videos.get(video_id) {
                let (index_id, created_at_ms, ms) = (v.index_id, v.created_at_ms, media_ms(v));
                start_deletion(state, video_id, deletion_id, at, (index_id, created_at_ms, ms));
            }
        }
        Event::VideoDeletionStarted { video_id, deletion_id, index_id, created_at_ms, media_ms } => {
            start_deletion(state, video_id, deletion_id, at, (*index_id, *created_at_ms, *media_ms));
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

/// A video's deletion starts: gone from its index's pages and counters at once.
fn start_deletion(
    state: &mut State,
    video_id: &spool_model::VideoId,
    deletion_id: &spool_model::DeletionId,
    at: u64,
    (index_id, created_at_ms, ms): (spool_model::IndexId, u64, u64),
) {
    let Some(v) = state.videos.get_mut(video_id) else { return };
    v.deletion = Some(Box::new(crate::Deletion {
        deletion_id: *deletion_id,
        stage: DeletionStage::Draining,
        requested_at_ms: at,
        finished_at_ms: None,
    }));
    if let Some(set) = state.index_videos.get_mut(&index_id)
        && set.remove(&(created_at_ms, *video_id))
        && let Some(m) = state.index_media_ms.get_mut(&index_id)
    {
        *m = m.saturating_sub(ms);
    }
    state.videos_deleting.insert(*video_id);
}
