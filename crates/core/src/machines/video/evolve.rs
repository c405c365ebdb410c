use super::Video;
use crate::State;
use spool_model::{DeletionStage, Envelope, Event, IndexId, VideoId};

/// The milliseconds of media a video covers (its part's range), rounded.
pub fn media_ms(v: &Video) -> u64 {
    let (a, b) = v.range_us;
    (b.saturating_sub(a) + 500) / 1000
}

/// Fold the video's events; others are not this machine's. The state holds no video: a new one
/// is a row (emitted for the `videos` table), a place on its index's pages (`index_videos`) and
/// its index's counters; a deletion is an entry of `video_deletions`.
pub fn evolve(state: &mut State, env: &Envelope) {
    let at = env.at_ms;
    match &env.event {
        // Logs before the probe hold `VideoCreated`; imports since write `VideoImported`, the
        // same fields with the facts.
        Event::VideoCreated { video_id, .. } | Event::VideoImported { video_id, .. } => {
            let Some(crate::RowWrite::Video(_, row)) = crate::rows::of_event(env) else { return };
            let v = Video::of(*video_id, &row, None);
            *state.index_counts.entry(v.index_id).or_default() += 1;
            *state.index_media_ms.entry(v.index_id).or_default() += media_ms(&v);
            if state.rows.emit {
                state.rows.written.push(crate::RowWrite::Video(*video_id, row.clone()));
                state.rows.videos.insert(*video_id, (env.seq, row));
                state.rows.index_video(v.index_id, v.created_at_ms, v.video_id, true, env.seq);
            }
        }
        // Logs before the tables: the fold finds the video's index and range in its row, loaded
        // for it by the replay (`crate::rows::fold_reads`).
        Event::VideoDeletionRequested { video_id, deletion_id } => {
            let place = state.video(video_id).map(|v| (v.index_id, v.created_at_ms, media_ms(&v)));
            start_deletion(state, video_id, deletion_id, (at, env.seq), place);
        }
        Event::VideoDeletionStarted { video_id, deletion_id, index_id, created_at_ms, media_ms } => {
            start_deletion(state, video_id, deletion_id, (at, env.seq), Some((*index_id, *created_at_ms, *media_ms)));
        }
        Event::VideoDrained { video_id, .. } => {
            if let Some(d) = state.video_deletions.get_mut(video_id) {
                d.stage = DeletionStage::Deleting;
            }
        }
        Event::VideoDeleted { video_id, .. } => {
            if let Some(d) = state.video_deletions.get_mut(video_id) {
                d.stage = DeletionStage::Deleted;
                d.finished_at_ms = Some(at);
            }
            state.videos_deleting.remove(video_id);
        }
        _ => {}
    }
}

/// A video's deletion starts: gone from its index's pages and counters at once (`place`: its
/// index, creation time and milliseconds of media; unknown only for an old event whose row was
/// not kept).
fn start_deletion(
    state: &mut State,
    video_id: &VideoId,
    deletion_id: &spool_model::DeletionId,
    (at, seq): (u64, u64),
    place: Option<(IndexId, u64, u64)>,
) {
    if state.video_deletions.contains_key(video_id) {
        return;
    }
    state.video_deletions.insert(
        *video_id,
        crate::Deletion {
            deletion_id: *deletion_id,
            stage: DeletionStage::Draining,
            requested_at_ms: at,
            finished_at_ms: None,
        },
    );
    if let Some((index_id, created_at_ms, ms)) = place {
        if let Some(n) = state.index_counts.get_mut(&index_id) {
            *n = n.saturating_sub(1);
        }
        if let Some(m) = state.index_media_ms.get_mut(&index_id) {
            *m = m.saturating_sub(ms);
        }
        if state.rows.emit {
            state.rows.index_video(index_id, created_at_ms, *video_id, false, seq);
        }
    }
    state.videos_deleting.insert(*video_id);
}
