//! Segmentation: how a video's time range becomes segments. Pure: the facts (and, for `smart`
//! and `content_aware`, the boundaries the executor read from the media) in, segments out.
//!
//! - images: one segment (0 to 0);
//! - `fixed`: consecutive segments of the given duration (the last one shorter);
//! - `smart` / `content_aware`: a target length T (the given duration, else 10 s for video and
//!   30 s for audio); from each start s, while more than 1.5·T is left, the cut is the boundary
//!   closest to s + T within [s + T/2, min(s + 2T, end − T/2)], or s + T when none is there;
//!   the rest is the last segment. With no boundaries at all this is fixed segmentation
//!   (`method` says `fixed` then).

use spool_model::{MediaType, RunSettings, Segmentation, TimeRange};

/// Default target of `smart` / `content_aware` for video.
pub const SMART_VIDEO_TARGET_S: u64 = 10;
/// Default target of `smart` / `content_aware` for audio.
pub const SMART_AUDIO_TARGET_S: u64 = 30;
/// Default duration of `fixed` when none is given.
pub const FIXED_DEFAULT_S: u64 = 10;

/// The segmentation and target length (µs) the settings ask for this media type.
pub fn rule(settings: &RunSettings, media_type: MediaType) -> (Segmentation, u64) {
    let (seg, given, smart_default) = match media_type {
        MediaType::Audio => (settings.audio_segmentation, settings.audio_segment_s, SMART_AUDIO_TARGET_S),
        _ => (settings.video_segmentation, settings.video_segment_s, SMART_VIDEO_TARGET_S),
    };
    let secs = match (seg, given) {
        (_, Some(s)) => s as u64,
        (Segmentation::Fixed, None) => FIXED_DEFAULT_S,
        _ => smart_default,
    };
    (seg, secs.max(1) * 1_000_000)
}

/// Whether the executor should read the media for boundaries.
pub fn wants_boundaries(settings: &RunSettings, media_type: MediaType) -> bool {
    media_type != MediaType::Image && rule(settings, media_type).0 != Segmentation::Fixed
}

/// The segments of `range`, and the method used.
pub fn segments(
    settings: &RunSettings,
    media_type: MediaType,
    range: (u64, u64),
    boundaries: Option<&[u64]>,
) -> (Vec<TimeRange>, &'static str) {
    let (start, end) = range;
    if media_type == MediaType::Image {
        return (vec![TimeRange { start_us: 0, end_us: 0 }], "image");
    }
    if end <= start {
        return (vec![TimeRange { start_us: start, end_us: start }], "none");
    }
    let (seg, target) = rule(settings, media_type);
    let cuts: Vec<u64> = match (seg, boundaries) {
        (Segmentation::Fixed, _) | (_, None) => Vec::new(),
        (_, Some(b)) => b.iter().copied().filter(|c| *c > start && *c < end).collect(),
    };
    let mut out = Vec::new();
    let mut s = start;
    let mut used_boundary = false;
    if seg == Segmentation::Fixed {
        while end - s > target {
            out.push(TimeRange { start_us: s, end_us: s + target });
            s += target;
        }
    } else {
        while (end - s) * 2 > target * 3 {
            let lo = s + target / 2;
            let hi = (s + 2 * target).min(end - target / 2);
            let want = s + target;
            // `cuts` is sorted (the executor sends positions in order); the few inside the
            // window are scanned from a binary search.
            let from = cuts.partition_point(|c| *c < lo);
            let best = cuts[from..].iter().take_while(|c| **c <= hi).min_by_key(|c| c.abs_diff(want)).copied();
            let cut = match best {
                Some(c) => {
                    used_boundary = true;
                    c
                }
                None => want,
            };
            out.push(TimeRange { start_us: s, end_us: cut });
            s = cut;
        }
    }
    out.push(TimeRange { start_us: s, end_us: end });
    let method = match (seg, used_boundary, media_type) {
        (Segmentation::Fixed, _, _) | (_, false, _) => "fixed",
        (_, true, MediaType::Audio) => "silence",
        (_, true, _) => "keyframes",
    };
    (out, method)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(seg: Segmentation, secs: Option<u32>) -> RunSettings {
        RunSettings {
            video_segmentation: seg,
            audio_segmentation: seg,
            video_segment_s: secs,
            audio_segment_s: secs,
            processing_model: None,
            processor: "probe".into(),
            enable_transcription: true,
            enable_image_embedding: true,
        }
    }

    fn secs(v: &[TimeRange]) -> Vec<(u64, u64)> {
        v.iter().map(|r| (r.start_us / 1_000_000, r.end_us / 1_000_000)).collect()
    }

    #[test]
    fn fixed_cuts_every_duration_and_keeps_the_rest() {
        let (s, m) = segments(&settings(Segmentation::Fixed, Some(4)), MediaType::Video, (0, 10_000_000), None);
        assert_eq!((secs(&s), m), (vec![(0, 4), (4, 8), (8, 10)], "fixed"));
    }

    #[test]
    fn smart_cuts_at_the_keyframe_nearest_the_target() {
        let b = [7_000_000, 19_000_000];
        let (s, m) = segments(&settings(Segmentation::Smart, None), MediaType::Video, (0, 30_000_000), Some(&b));
        assert_eq!((secs(&s), m), (vec![(0, 7), (7, 19), (19, 30)], "keyframes"));
    }

    #[test]
    fn smart_without_boundaries_is_fixed() {
        let (s, m) = segments(&settings(Segmentation::Smart, None), MediaType::Video, (0, 30_000_000), Some(&[]));
        assert_eq!((secs(&s), m), (vec![(0, 10), (10, 20), (20, 30)], "fixed"));
    }

    #[test]
    fn content_aware_audio_cuts_at_silence_within_a_part() {
        let b = [2_000_000, 3_000_000_000, 3_031_000_000];
        let (s, m) = segments(
            &settings(Segmentation::ContentAware, None),
            MediaType::Audio,
            (3_000_000_000, 3_100_000_000),
            Some(&b),
        );
        assert_eq!(m, "silence");
        assert_eq!(s.first().map(|r| r.end_us), Some(3_031_000_000));
        assert_eq!(s.last().map(|r| r.end_us), Some(3_100_000_000));
    }

    #[test]
    fn images_are_one_segment() {
        let (s, m) = segments(&settings(Segmentation::Smart, None), MediaType::Image, (0, 0), None);
        assert_eq!((secs(&s), m), (vec![(0, 0)], "image"));
    }
}
