//! A page of an index's videos for a decision: the keys read from the `index_videos` table
//! merged with the places written by events in flight (`Rows::index_page`).

use spool_core::rows::{IndexPage, Rows};
use spool_model::{IndexId, VideoId};

fn v(n: u128) -> VideoId {
    VideoId(ulid::Ulid::from_parts(5, n))
}

#[test]
fn a_page_merges_the_table_with_the_places_in_flight() {
    let index = IndexId(ulid::Ulid::from_parts(1, 1));
    let other = IndexId(ulid::Ulid::from_parts(1, 2));
    let mut rows = Rows::default();
    // The table holds 1..=4 (asked for 4: full, so more may follow 4).
    rows.index_pages
        .insert((index, None), IndexPage { n: 4, keys: (1..=4u64).map(|i| (i, v(u128::from(i)))).collect() });
    // In flight: 2 deleted, 3 twice (no matter), a new one at 0, one past the table's last key,
    // and one of another index.
    rows.index_video(index, 2, v(2), false, 9);
    rows.index_video(index, 0, v(0), true, 9);
    rows.index_video(index, 9, v(9), true, 9);
    rows.index_video(other, 1, v(7), true, 9);
    let (keys, through, end) = rows.index_page(&index, None, 3);
    assert_eq!(keys, vec![(0, v(0)), (1, v(1)), (3, v(3))]);
    assert_eq!(through, Some((3, v(3))));
    assert!(!end, "the table had more than it returned");
    // A table page that was not full ends the index: what is in flight after it belongs to it.
    rows.index_pages.insert((index, Some((3, v(3)))), IndexPage { n: 4, keys: vec![(4, v(4))] });
    let (keys, through, end) = rows.index_page(&index, Some((3, v(3))), 3);
    assert_eq!(keys, vec![(4, v(4)), (9, v(9))]);
    assert_eq!(through, Some((9, v(9))));
    assert!(end);
}

/// A full page of the table whose every key is being deleted in flight: nothing to list, but
/// the cursor moves past the table's last key (an index run does not list the same page again
/// until the deletions are durable).
#[test]
fn a_page_whose_keys_are_all_deleted_in_flight_moves_the_cursor_past_them() {
    let index = IndexId(ulid::Ulid::from_parts(1, 1));
    let mut rows = Rows::default();
    rows.index_pages
        .insert((index, None), IndexPage { n: 3, keys: (1..=3u64).map(|i| (i, v(u128::from(i)))).collect() });
    for i in 1..=3u64 {
        rows.index_video(index, i, v(u128::from(i)), false, 9);
    }
    let (keys, through, end) = rows.index_page(&index, None, 2);
    assert!(keys.is_empty());
    assert_eq!(through, Some((3, v(3))));
    assert!(!end, "more may follow the table's page");
}
