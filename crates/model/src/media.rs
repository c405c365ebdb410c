//! Media facts: what the probe reads from a stored file (container, duration, streams,
//! bitrate). Persisted in `VideoImported`, so integers only (times in
//! microseconds, frame rates as fractions): events derive `Eq`.

use serde::{Deserialize, Serialize};

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    Video,
    Audio,
    Subtitle,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Video => "video",
            StreamKind::Audio => "audio",
            StreamKind::Subtitle => "subtitle",
        }
    }
}

/// One stream (track) of a file. Codec names are ffprobe's (`h264`, `aac`, `pcm_s16le`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamFacts {
    pub kind: StreamKind,
    pub codec: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Frames per second as `numerator / denominator`.
    pub frame_rate: Option<(u32, u32)>,
    pub sample_rate: Option<u32>,
    pub channels: Option<u32>,
    pub duration_us: Option<u64>,
}

/// The facts of one media file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaFacts {
    /// `mp4`, `mov`, `matroska`, `webm`, `ogg`, `mp3`, `wav`, `flac`, `png`, `jpeg`, …
    pub container: String,
    /// `None` for stills, and for media whose length cannot be read within the probe's budget.
    pub duration_us: Option<u64>,
    /// Bits per second over the whole file (size × 8 / duration).
    pub bit_rate: Option<u64>,
    pub streams: Vec<StreamFacts>,
}

/// The containers of still images (their media type is `image`).
pub const STILL_CONTAINERS: [&str; 7] = ["png", "jpeg", "webp", "gif", "bmp", "tiff", "heif"];

impl MediaFacts {
    /// A still image (its container is one of [`STILL_CONTAINERS`]).
    pub fn is_still(&self) -> bool {
        STILL_CONTAINERS.contains(&self.container.as_str())
    }

    /// What a stream of this file is reported as: a still's picture is an `image` (as its
    /// video's `media_type` is), not the `video` ffprobe calls it; any other stream its kind.
    pub fn stream_kind_name(&self, s: &StreamFacts) -> &'static str {
        if s.kind == StreamKind::Video && self.is_still() { "image" } else { s.kind.as_str() }
    }

    pub fn duration_seconds(&self) -> f64 {
        self.duration_us.unwrap_or(0) as f64 / 1e6
    }

    /// The first stream of a kind.
    pub fn first(&self, kind: StreamKind) -> Option<&StreamFacts> {
        self.streams.iter().find(|s| s.kind == kind)
    }
}

/// Which part of a stored file a video covers: long media becomes parts of at most
/// `PART_SECONDS_MAX`, each its own video over a time range of the same object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRange {
    pub part_index: u32,
    pub part_count: u32,
    pub start_us: u64,
    pub end_us: u64,
}

/// The longest part a video covers: 40 minutes.
pub const PART_SECONDS_MAX: u64 = 40 * 60;

/// The most parts one file becomes: 64 parts of 40 minutes, 42 h 40 min of media. A longer
/// file is refused (`media_unreadable`, [`check_parts`]), so one file never becomes more than
/// this many videos, whatever its header claims.
pub const PARTS_PER_FILE_MAX: u64 = 64;

/// Refuses media longer than [`PARTS_PER_FILE_MAX`] parts, with a sentence for the failure.
pub fn check_parts(duration_us: Option<u64>) -> Result<(), String> {
    let max_us = PART_SECONDS_MAX * 1_000_000;
    let d = duration_us.unwrap_or(0);
    if d.div_ceil(max_us) > PARTS_PER_FILE_MAX {
        return Err(format!(
            "the media lasts {}; Spool imports media up to {} ({PARTS_PER_FILE_MAX} parts of {} minutes)",
            human_duration(d),
            human_duration(PARTS_PER_FILE_MAX * max_us),
            PART_SECONDS_MAX / 60
        ));
    }
    Ok(())
}

/// A duration for a person: `42 h 40 min`, `3 min 20 s`, `12.5 s`.
pub fn human_duration(us: u64) -> String {
    let s = us / 1_000_000;
    if s >= 3600 {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{:.1} s", us as f64 / 1e6)
    }
}

/// The parts of media lasting `duration_us`: one part when it is at most
/// [`PART_SECONDS_MAX`] long (or has no duration), else ranges of exactly that length and a
/// shorter last one; never more than [`PARTS_PER_FILE_MAX`] (callers refuse longer media with
/// [`check_parts`] first; past it the last part is cut at the bound).
pub fn parts_of(duration_us: Option<u64>) -> Vec<PartRange> {
    let max_us = PART_SECONDS_MAX * 1_000_000;
    let d = duration_us.unwrap_or(0).min(PARTS_PER_FILE_MAX * max_us);
    if d <= max_us {
        return vec![PartRange { part_index: 0, part_count: 1, start_us: 0, end_us: d }];
    }
    let count = d.div_ceil(max_us);
    (0..count)
        .map(|i| PartRange {
            part_index: crate::num::sat_u32(i),
            part_count: crate::num::sat_u32(count),
            start_us: i * max_us,
            end_us: ((i + 1) * max_us).min(d),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_of_forty_minutes_or_less_is_one_part_and_longer_media_is_split_at_forty_minutes() {
        assert_eq!(parts_of(None).len(), 1);
        assert_eq!(parts_of(Some(2400 * 1_000_000)).len(), 1);
        let p = parts_of(Some(2400 * 1_000_000 + 1));
        assert_eq!(p.len(), 2);
        assert_eq!((p[1].start_us, p[1].end_us), (2400 * 1_000_000, 2400 * 1_000_000 + 1));
        let p = parts_of(Some(100 * 60 * 1_000_000));
        assert_eq!(p.iter().map(|r| (r.end_us - r.start_us) / 60_000_000).collect::<Vec<_>>(), vec![40, 40, 20]);
        assert!(p.iter().all(|r| r.part_count == 3));
    }

    #[test]
    fn a_claimed_duration_of_u64_max_is_refused_and_never_planned_past_the_bound() {
        assert!(check_parts(Some(u64::MAX)).is_err());
        assert_eq!(parts_of(Some(u64::MAX)).len() as u64, PARTS_PER_FILE_MAX);
        let max_us = PARTS_PER_FILE_MAX * PART_SECONDS_MAX * 1_000_000;
        assert!(check_parts(Some(max_us)).is_ok());
        assert!(check_parts(Some(max_us + 1)).is_err());
    }

    #[test]
    fn a_still_reports_its_picture_as_an_image_stream() {
        let stream = StreamFacts {
            kind: StreamKind::Video,
            codec: "mjpeg".into(),
            width: Some(4),
            height: Some(3),
            frame_rate: None,
            sample_rate: None,
            channels: None,
            duration_us: None,
        };
        let mut f =
            MediaFacts { container: "jpeg".into(), duration_us: None, bit_rate: None, streams: vec![stream.clone()] };
        assert!(f.is_still());
        assert_eq!(f.stream_kind_name(&stream), "image");
        f.container = "mp4".into();
        assert_eq!(f.stream_kind_name(&stream), "video");
    }
}
