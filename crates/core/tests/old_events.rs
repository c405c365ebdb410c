//! Events a newer shape replaced fold to the same state as their replacements: a log written
//! before the tables (with `VideoDeletionRequested`, `PromptRunVideosAdded`) reads the same as
//! one written since (`VideoDeletionStarted`, `PromptRunVideosListed`).

use spool_core::{State, evolve};
use spool_model::{Envelope, Event, FORMAT_VERSION, MediaType, VideoId};

/// Fold with every row kept: as a replay that loads the rows an old event reads
/// (`spool_core::rows::fold_reads`).
fn fold(events: &[Event]) -> State {
    let mut st = State::kept_rows();
    for (n, e) in events.iter().enumerate() {
        let env = Envelope {
            seq: n as u64 + 1,
            stream: "s".into(),
            at_ms: 1_764_000_000_000 + n as u64,
            format_version: FORMAT_VERSION,
            event: e.clone(),
        };
        evolve(&mut st, &env);
    }
    st
}

fn sample(pick: impl Fn(&Event) -> bool) -> Event {
    Event::samples().into_iter().find(|e| pick(e)).expect("a sample of the variant")
}

/// An index, then `n` imported videos in it (each its own id), at seq 2.. (`at_ms` = base + seq - 1).
fn library(n: u8) -> (Vec<Event>, Vec<VideoId>) {
    let index = sample(|e| matches!(e, Event::IndexCreated { .. }));
    let Event::IndexCreated { index_id, .. } = index else { unreachable!() };
    let mut events = vec![index];
    let mut ids = Vec::new();
    for k in 0..n {
        let mut v = sample(|e| matches!(e, Event::VideoImported { .. }));
        if let Event::VideoImported { video_id, index_id: i, .. } = &mut v {
            *video_id = VideoId(ulid::Ulid::from_parts(1_764_000_000_100 + u64::from(k), u128::from(k)));
            *i = index_id;
            ids.push(*video_id);
        }
        events.push(v);
    }
    (events, ids)
}

#[test]
fn a_deletion_requested_before_the_tables_folds_as_one_started_since() {
    let (mut old, ids) = library(2);
    let mut new = old.clone();
    let st = fold(&old);
    let v = st.video(&ids[0]).expect("the video");
    let deletion_id = spool_model::DeletionId(ulid::Ulid::from_parts(1_764_000_000_900, 1));
    old.push(Event::VideoDeletionRequested { video_id: ids[0], deletion_id });
    new.push(Event::VideoDeletionStarted {
        video_id: ids[0],
        deletion_id,
        index_id: v.index_id,
        created_at_ms: v.created_at_ms,
        media_ms: spool_core::machines::video::media_ms(&v),
    });
    let (a, b) = (fold(&old), fold(&new));
    assert_eq!(a, b);
    assert_eq!(b.index_counts.get(&v.index_id), Some(&1), "the video left its index's count");
    let live: Vec<_> = b.rows.index_keys.iter().filter(|(_, (_, present))| *present).collect();
    assert_eq!(live.len(), 1, "the video left its index's pages");
    assert!(b.video_deletions.contains_key(&ids[0]));
    assert_ne!(fold(&old[..old.len() - 1]), a, "the deletion changed the state");
}

#[test]
fn a_run_page_added_before_the_tables_folds_as_one_listed_since() {
    let (mut old, ids) = library(3);
    let run = sample(|e| matches!(e, Event::PromptRunCreated { .. }));
    let Event::PromptRunCreated { run_id, .. } = &run else { unreachable!() };
    let run_id = *run_id;
    let mut run = run;
    if let (Event::PromptRunCreated { target, .. }, Some(Event::IndexCreated { index_id, .. })) =
        (&mut run, old.first())
    {
        *target = spool_model::RunTarget::Index { index_id: *index_id };
    }
    old.push(run);
    let mut new = old.clone();
    let st = fold(&old);
    let media: Vec<(VideoId, MediaType)> =
        ids.iter().map(|id| (*id, st.video(id).expect("the video").media_type)).collect();
    let last = &st.video(&ids[1]).expect("the video");
    old.push(Event::PromptRunVideosAdded { run_id, videos: ids[..2].to_vec(), done: false });
    new.push(Event::PromptRunVideosListed {
        run_id,
        videos: media[..2].to_vec(),
        after: Some((last.created_at_ms, last.video_id)),
        done: false,
    });
    let (a, b) = (fold(&old), fold(&new));
    assert_eq!(a, b);
    let r = &b.prompt_runs[&run_id];
    assert_eq!((r.videos.len(), r.list_after), (2, Some((last.created_at_ms, ids[1]))));
}
