//! Where a medium offers segment boundaries: keyframe positions from an MP4/MOV's sync-sample
//! table (`stss`) for video, and the middle of each silence in decoded audio. Both are bounded:
//! the box walk reads only box headers and the video track's tables (at most
//! [`SAMPLE_TABLE_ENTRIES_MAX`] entries), the decode stops at the range's end.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Entries read of one `stss` / `stts` table.
pub const SAMPLE_TABLE_ENTRIES_MAX: u32 = 1_000_000;
/// Audio analysed for silence in one call, in seconds (a part is at most 40 minutes).
pub const SILENCE_DECODE_SECONDS_MAX: u64 = 2_400 + 60;
/// A window quieter than this RMS (about −40 dBFS) is silent.
pub const SILENCE_RMS_MAX: f32 = 0.01;
/// Window of the RMS, and the shortest silence that counts.
pub const SILENCE_WINDOW_MS: u64 = 50;
pub const SILENCE_MIN_MS: u64 = 300;

/// Keyframe times (µs) of the first video track of an MP4/MOV file (its sync-sample table) or
/// of a Matroska/WebM file (its Cues, else its clusters' keyframe blocks), in order; `None`
/// when the file is neither, has no video track, or (MP4) every sample is a keyframe.
pub fn video_keyframes(path: &Path) -> Option<Vec<u64>> {
    mp4_keyframes(path).or_else(|| crate::mkv_keys::mkv_keyframes(path))
}

/// Keyframe times (µs) of the first video track of an MP4/MOV file, in order; `None` when the
/// file is not ISO-BMFF, has no video track or no `stss` (every sample a keyframe: no choice).
pub fn mp4_keyframes(path: &Path) -> Option<Vec<u64>> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let (moov_at, moov_len) = find_box(&mut f, 0, len, b"moov")?;
    let mut at = moov_at;
    let end = moov_at + moov_len;
    while let Some((trak_at, trak_len)) = find_box(&mut f, at, end, b"trak") {
        if let Some(times) = track_keyframes(&mut f, trak_at, trak_at + trak_len) {
            return Some(times);
        }
        at = trak_at + trak_len;
    }
    None
}

/// The body (offset, length) of the first box of this type within [from, to).
fn find_box<R: Read + Seek>(r: &mut R, from: u64, to: u64, kind: &[u8; 4]) -> Option<(u64, u64)> {
    let mut at = from;
    while at + 8 <= to {
        r.seek(SeekFrom::Start(at)).ok()?;
        let mut h = [0u8; 8];
        r.read_exact(&mut h).ok()?;
        let mut size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as u64;
        let mut header = 8;
        if size == 1 {
            let mut big = [0u8; 8];
            r.read_exact(&mut big).ok()?;
            size = u64::from_be_bytes(big);
            header = 16;
        } else if size == 0 {
            size = to - at;
        }
        if size < header || at + size > to {
            return None;
        }
        if &h[4..8] == kind {
            return Some((at + header, size - header));
        }
        at += size;
    }
    None
}

fn read_u32<R: Read>(r: &mut R) -> Option<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).ok()?;
    Some(u32::from_be_bytes(b))
}

fn track_keyframes<R: Read + Seek>(r: &mut R, at: u64, end: u64) -> Option<Vec<u64>> {
    let (mdia, mdia_len) = find_box(r, at, end, b"mdia")?;
    let mdia_end = mdia + mdia_len;
    let (hdlr, _) = find_box(r, mdia, mdia_end, b"hdlr")?;
    r.seek(SeekFrom::Start(hdlr + 8)).ok()?;
    let mut handler = [0u8; 4];
    r.read_exact(&mut handler).ok()?;
    if &handler != b"vide" {
        return None;
    }
    let (mdhd, _) = find_box(r, mdia, mdia_end, b"mdhd")?;
    r.seek(SeekFrom::Start(mdhd)).ok()?;
    let version = read_u32(r)? >> 24;
    let timescale = if version == 1 {
        r.seek(SeekFrom::Current(16)).ok()?;
        read_u32(r)?
    } else {
        r.seek(SeekFrom::Current(8)).ok()?;
        read_u32(r)?
    };
    if timescale == 0 {
        return None;
    }
    let (minf, minf_len) = find_box(r, mdia, mdia_end, b"minf")?;
    let (stbl, stbl_len) = find_box(r, minf, minf + minf_len, b"stbl")?;
    let stbl_end = stbl + stbl_len;
    let (stss, _) = find_box(r, stbl, stbl_end, b"stss")?;
    r.seek(SeekFrom::Start(stss + 4)).ok()?;
    let n = read_u32(r)?.min(SAMPLE_TABLE_ENTRIES_MAX);
    let mut sync = Vec::with_capacity(n as usize);
    for _ in 0..n {
        sync.push(read_u32(r)? as u64);
    }
    let (stts, _) = find_box(r, stbl, stbl_end, b"stts")?;
    r.seek(SeekFrom::Start(stts + 4)).ok()?;
    let runs = read_u32(r)?.min(SAMPLE_TABLE_ENTRIES_MAX);
    // Decode time of each sync sample (1-based sample numbers), walking the runs once.
    let mut out = Vec::with_capacity(sync.len());
    let (mut sample, mut time) = (1u64, 0u64);
    let mut next = sync.iter().peekable();
    for _ in 0..runs {
        let count = read_u32(r)? as u64;
        let delta = read_u32(r)? as u64;
        while let Some(&&s) = next.peek() {
            if s >= sample + count {
                break;
            }
            let t = time + (s.saturating_sub(sample)) * delta;
            out.push(spool_model::num::sat_u64(t as u128 * 1_000_000 / timescale as u128));
            next.next();
        }
        sample += count;
        time += count * delta;
    }
    Some(out)
}

/// The middle (µs) of each silence of at least [`SILENCE_MIN_MS`] in the first audio track,
/// within `range` (µs); `None` when the file has no decodable audio. The reader seeks to
/// [`SILENCE_PREROLL_US`] before the range first, so what is decoded is the range (and that
/// pre-roll), wherever the range lies in the file.
pub fn silences(path: &Path, ext: &str, range: (u64, u64)) -> Option<Vec<u64>> {
    silences_decoding(path, ext, range).map(|(out, _)| out)
}

/// Audio decoded before a range, for the decoder to settle (and a coarse seek's slack).
pub const SILENCE_PREROLL_US: u64 = 1_000_000;

/// [`silences`], and how much audio (µs) was decoded for them.
pub fn silences_decoding(path: &Path, ext: &str, range: (u64, u64)) -> Option<(Vec<u64>, u64)> {
    use symphonia::core::codecs::audio::AudioDecoderOptions;
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::formats::probe::Hint;
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;

    let file = std::fs::File::open(path).ok()?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    hint.with_extension(ext);
    let mut reader =
        symphonia::default::get_probe().probe(&hint, mss, FormatOptions::default(), MetadataOptions::default()).ok()?;
    let track = reader.tracks().iter().find(|t| t.codec_params.as_ref().is_some_and(|p| p.audio().is_some()))?;
    let track_id = track.id;
    let tb = track.time_base?;
    let params = track.codec_params.as_ref()?.audio()?.clone();
    let mut decoder =
        symphonia::default::get_codecs().make_audio_decoder(&params, &AudioDecoderOptions::default()).ok()?;
    let (start, end) = range;
    let end = end.min(start + SILENCE_DECODE_SECONDS_MAX * 1_000_000);
    // Seek (sample-accurately: never past the pre-roll) rather than decode from the start; a
    // reader that cannot seek decodes from where it is.
    if start > SILENCE_PREROLL_US {
        use symphonia::core::formats::{SeekMode, SeekTo};
        let to = symphonia::core::units::Time::from_micros_u64(start - SILENCE_PREROLL_US);
        if reader.seek(SeekMode::Accurate, SeekTo::Time { time: to, track_id: Some(track_id) }).is_ok() {
            decoder.reset();
        }
    }
    let mut decoded_us = 0u64;
    let mut out = Vec::new();
    let mut samples: Vec<f32> = Vec::new();
    // The running window: sum of squares and frames so far, and the current silence's start.
    let (mut sum, mut frames_in_window, mut window_start_us) = (0f64, 0u64, None::<u64>);
    let mut silent_since: Option<u64> = None;
    let mut decoded_any = false;
    while let Ok(Some(packet)) = reader.next_packet() {
        if packet.track_id != track_id {
            continue;
        }
        let pts = spool_model::num::non_negative(packet.pts.get());
        let t_us = spool_model::num::sat_u64(pts as u128 * tb.numer.get() as u128 * 1_000_000 / tb.denom.get() as u128);
        if t_us > end {
            break;
        }
        let Ok(buf) = decoder.decode(&packet) else { continue };
        decoded_any = true;
        decoded_us += buf.frames() as u64 * 1_000_000 / buf.spec().rate().max(1) as u64;
        if t_us + 1_000_000 < start {
            continue;
        }
        let channels = buf.spec().channels().count().max(1);
        let rate = buf.spec().rate().max(1) as u64;
        samples.clear();
        buf.copy_to_vec_interleaved::<f32>(&mut samples);
        let window_frames = (rate * SILENCE_WINDOW_MS / 1000).max(1);
        for (i, frame) in samples.chunks(channels).enumerate() {
            let at = t_us + i as u64 * 1_000_000 / rate;
            if at < start || at >= end {
                continue;
            }
            let ws = *window_start_us.get_or_insert(at);
            let m: f32 = frame.iter().sum::<f32>() / channels as f32;
            sum += (m * m) as f64;
            frames_in_window += 1;
            if frames_in_window == window_frames {
                #[allow(clippy::cast_possible_truncation)] // an RMS of samples in [-1, 1] fits an f32
                let rms = (sum / frames_in_window as f64).sqrt() as f32;
                if rms < SILENCE_RMS_MAX {
                    silent_since.get_or_insert(ws);
                } else if let Some(s) = silent_since.take()
                    && at.saturating_sub(s) >= SILENCE_MIN_MS * 1000
                {
                    out.push(s + (ws - s) / 2);
                }
                sum = 0.0;
                frames_in_window = 0;
                window_start_us = None;
            }
        }
    }
    decoded_any.then_some((out, decoded_us))
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)] // fixtures it builds
mod tests {
    use super::*;

    /// 16-bit mono PCM at 8 kHz: tone, except silence in the given second ranges.
    fn wav_with_silence(seconds: u32, silent: &[(f32, f32)]) -> Vec<u8> {
        let rate = 8000u32;
        let mut pcm = Vec::new();
        for i in 0..seconds * rate {
            let t = i as f32 / rate as f32;
            let quiet = silent.iter().any(|(a, b)| t >= *a && t < *b);
            let v = if quiet { 0.0 } else { (t * 440.0 * std::f32::consts::TAU).sin() * 0.5 };
            pcm.extend(((v * i16::MAX as f32) as i16).to_le_bytes());
        }
        let mut out = b"RIFF".to_vec();
        out.extend((36 + pcm.len() as u32).to_le_bytes());
        out.extend(b"WAVEfmt ");
        out.extend(16u32.to_le_bytes());
        out.extend(1u16.to_le_bytes());
        out.extend(1u16.to_le_bytes());
        out.extend(rate.to_le_bytes());
        out.extend((rate * 2).to_le_bytes());
        out.extend(2u16.to_le_bytes());
        out.extend(16u16.to_le_bytes());
        out.extend(b"data");
        out.extend((pcm.len() as u32).to_le_bytes());
        out.extend(pcm);
        out
    }

    #[test]
    fn silences_are_found_in_decoded_audio() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gaps.wav");
        std::fs::write(&p, wav_with_silence(30, &[(6.5, 7.5), (18.5, 19.5)])).unwrap();
        let s = silences(&p, "wav", (0, 30_000_000)).unwrap();
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(s[0].abs_diff(7_000_000) < 100_000, "{s:?}");
        assert!(s[1].abs_diff(19_000_000) < 100_000, "{s:?}");
        // Only within the range asked.
        assert_eq!(silences(&p, "wav", (10_000_000, 30_000_000)).unwrap().len(), 1);
    }

    /// A regression: planning a late part of a long file decoded the file from its start. The
    /// reader now seeks: what is decoded is the range and its pre-roll, and the silences found
    /// there are the ones found from the start.
    #[test]
    fn a_late_range_of_a_long_file_is_reached_by_seeking_not_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("long.wav");
        // 62 minutes; a silence at 61 min 10 s and one at 30 min (outside the range).
        std::fs::write(&p, wav_with_silence(62 * 60, &[(1800.0, 1801.0), (3670.0, 3671.0)])).unwrap();
        let range = (61 * 60 * 1_000_000, 62 * 60 * 1_000_000);
        let (found, decoded) = silences_decoding(&p, "wav", range).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].abs_diff(3_670_500_000) < 100_000, "{found:?}");
        let asked = range.1 - range.0;
        assert!(decoded <= asked + 2 * SILENCE_PREROLL_US, "decoded {decoded} µs for a range of {asked} µs");
        // From the start, the first 40 minutes: the other silence, all of it decoded.
        let (early, decoded_early) = silences_decoding(&p, "wav", (0, 40 * 60 * 1_000_000)).unwrap();
        assert_eq!(early.len(), 1, "{early:?}");
        assert!(early[0].abs_diff(1_800_500_000) < 100_000, "{early:?}");
        assert!(decoded_early >= 40 * 60 * 1_000_000);
        // A middle range: the same silence as the late range's.
        let (middle, _) = silences_decoding(&p, "wav", (50 * 60 * 1_000_000, range.1)).unwrap();
        assert_eq!(middle, found);
    }

    #[test]
    fn a_file_that_is_not_mp4_has_no_keyframe_table() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.mp4");
        std::fs::write(&p, b"not an mp4 at all").unwrap();
        assert_eq!(mp4_keyframes(&p), None);
    }
}
