//! Crafted media whose headers claim far more time than their bytes hold
//! (`fixtures/media/hostile`, made by `scripts/make-hostile-media.py`): one per container the
//! probe reads. A claim is refused (`media_unreadable` with the reason) or capped by what the
//! bytes hold, never planned into parts past `PARTS_PER_FILE_MAX`, and a demuxer that panics
//! on a file fails that file.

use spool_media::{MIN_BYTES_PER_SECOND, ProbeError, check_claims, probe_file};
use spool_model::media::{PARTS_PER_FILE_MAX, check_parts, parts_of};
use spool_model::{MediaFacts, StreamFacts, StreamKind};
use std::path::{Path, PathBuf};

fn hostile(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/media/hostile").join(name)
}

/// What a file's facts may claim: its bytes at the floor rate, and the parts bound.
fn assert_bounded(name: &str) -> Result<MediaFacts, ProbeError> {
    let path = hostile(name);
    let len = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{name}: {e}")).len();
    let ext = path.extension().unwrap().to_string_lossy().to_string();
    let got = probe_file(&path, &ext);
    match &got {
        Ok(facts) => {
            let most = len * 1_000_000 / MIN_BYTES_PER_SECOND;
            for d in facts.streams.iter().filter_map(|s| s.duration_us).chain(facts.duration_us) {
                assert!(d <= most, "{name}: {d} us from {len} bytes");
            }
            assert!(check_parts(facts.duration_us).is_ok(), "{name}");
            assert!(parts_of(facts.duration_us).len() as u64 <= PARTS_PER_FILE_MAX);
        }
        Err(ProbeError::Unreadable(why)) => assert!(!why.is_empty()),
        Err(e) => panic!("{name}: {e}"),
    }
    got
}

fn assert_refused_for_its_claim(name: &str) {
    match assert_bounded(name) {
        Err(ProbeError::Unreadable(why)) => {
            assert!(why.contains("claims") || why.contains("imports media up to"), "{name}: {why}")
        }
        other => panic!("{name}: expected a refusal of its claim, got {other:?}"),
    }
}

#[test]
fn mp4_mvhd_and_mdhd_of_u64_max_seconds_are_refused() {
    assert_refused_for_its_claim("mvhd_huge.mp4");
    assert_refused_for_its_claim("mvhd_u32.mp4");
}

#[test]
fn mov_mdhd_of_u64_max_seconds_is_refused() {
    assert_refused_for_its_claim("mdhd_huge.mov");
}

#[test]
fn mp4_stts_entry_that_overflows_the_demuxer_fails_the_file_not_the_caller() {
    // symphonia's stts reader overflows on (0xFFFFFFFF, 0xFFFFFFFF) (a panic in debug builds).
    let got = assert_bounded("stts_overflow.mp4");
    assert!(got.is_err() || got.as_ref().is_ok_and(|f| f.duration_us.unwrap_or(0) < 10_000_000), "{got:?}");
}

#[test]
fn matroska_and_webm_segment_durations_of_1e18_are_refused() {
    assert_refused_for_its_claim("duration_huge.mkv");
    assert_refused_for_its_claim("duration_huge.webm");
}

#[test]
fn ogg_granule_of_2_pow_62_is_refused() {
    assert_refused_for_its_claim("granule_huge.ogg");
}

#[test]
fn mp3_xing_frame_count_of_u32_max_is_refused() {
    assert_refused_for_its_claim("xing_huge.mp3");
}

#[test]
fn flac_total_samples_of_2_pow_36_are_refused() {
    assert_refused_for_its_claim("total_samples_huge.flac");
    // At 1 Hz the claim is 2,178 years; the frames disagree with the header and the file is
    // unreadable either way.
    assert!(assert_bounded("rate_1hz.flac").is_err());
}

#[test]
fn wav_data_size_past_the_end_of_the_file_claims_no_more_than_its_bytes() {
    let got = assert_bounded("data_huge.wav");
    if let Ok(f) = got {
        assert!(f.duration_us.unwrap_or(0) <= 444 * 1_000_000 / 16_000 + 1, "{f:?}");
    }
}

fn pcm(duration_us: u64) -> MediaFacts {
    MediaFacts {
        container: "wav".into(),
        duration_us: Some(duration_us),
        bit_rate: None,
        streams: vec![StreamFacts {
            kind: StreamKind::Audio,
            codec: "pcm_u8".into(),
            width: None,
            height: None,
            frame_rate: None,
            sample_rate: Some(8000),
            channels: Some(1),
            duration_us: Some(duration_us),
        }],
    }
}

#[test]
fn uncompressed_audio_is_capped_at_what_its_bytes_hold() {
    // 444 bytes of 8 kHz 8-bit mono hold 55.5 ms, whatever the header says.
    let f = check_claims(pcm(u64::MAX / 2), 444).unwrap();
    assert_eq!(f.duration_us, Some(55_500));
    assert_eq!(f.streams[0].duration_us, Some(55_500));
    // A true claim is kept.
    assert_eq!(check_claims(pcm(50_000), 444).unwrap().duration_us, Some(50_000));
}

#[test]
fn media_longer_than_the_parts_bound_is_refused_with_the_bound() {
    let mut f = pcm(0);
    f.streams[0].codec = "aac".into();
    let too_long = PARTS_PER_FILE_MAX * 2400 * 1_000_000 + 1;
    f.duration_us = Some(too_long);
    f.streams[0].duration_us = Some(too_long);
    match check_claims(f, u64::MAX / 4) {
        Err(ProbeError::Unreadable(why)) => assert!(why.contains("64 parts"), "{why}"),
        other => panic!("{other:?}"),
    }
}
