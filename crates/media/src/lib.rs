//! spool-media: the media probe. It reads a stored file's container, duration, streams (kind,
//! codec, width × height, frame rate, sample rate, channels) and bitrate, in pure Rust:
//! symphonia's demuxers (they report video tracks without decoding) and `imagesize` for stills.
//! No ffmpeg at run time.
//!
//! Bounds: the probe reads through a seekable source and never reads more than
//! [`PROBE_READ_BYTES_MAX`] bytes of a file (seeks are free, so an mp4 whose `moov` atom is at
//! the end costs a seek, not a read of the whole `mdat`), and at most [`PROBE_PACKETS_MAX`]
//! packets when a frame rate has to be measured from timestamps. A file that cannot be read
//! within those bounds is unreadable (`media_unreadable`).

pub mod boundaries;
pub mod mkv_keys;
mod mkv_tail;

use spool_model::{MediaFacts, StreamFacts, StreamKind};
use std::io::{Read, Seek, SeekFrom};
use symphonia::core::codecs::CodecParameters;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, Track};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::units::TimeBase;

/// Bytes the probe may read of one file (seeking past the rest).
pub const PROBE_READ_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Packets the probe may read to measure a frame rate the container does not state.
pub const PROBE_PACKETS_MAX: usize = 240;
/// Bytes of a Matroska file's end searched for its last cluster, when the header has no
/// duration (browsers write WebM so).
pub const MKV_TAIL_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// The fewest bytes per second of claimed duration a file must hold: 2 (16 bits/s, below any
/// real codec with its container's overhead). A header that claims more time than its bytes
/// can hold at that rate (an `mvhd` of 2^64-1 seconds in a 52 KB file) is refused, so a claim
/// can never turn a small file into many parts.
pub const MIN_BYTES_PER_SECOND: u64 = 2;

/// Why a file has no facts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    /// Not a format the probe reads, corrupt, or not readable within the probe's bounds.
    #[error("{0}")]
    Unreadable(String),
    /// The file itself could not be opened or read.
    #[error("the file cannot be read: {0}")]
    Io(String),
}

impl ProbeError {
    /// The failure code an import records.
    pub fn code(&self) -> &'static str {
        match self {
            ProbeError::Unreadable(_) => "media_unreadable",
            ProbeError::Io(_) => "media_store_read_failed",
        }
    }
}

/// Probe a file on disk. `ext` (without the dot, any case) is a hint, never trusted alone.
pub fn probe_file(path: &std::path::Path, ext: &str) -> Result<MediaFacts, ProbeError> {
    let file = std::fs::File::open(path).map_err(|e| ProbeError::Io(e.kind().to_string()))?;
    probe(file, ext)
}

/// Probe a seekable source within [`PROBE_READ_BYTES_MAX`].
pub fn probe<R: Read + Seek + Send + Sync + 'static>(src: R, ext: &str) -> Result<MediaFacts, ProbeError> {
    probe_with_budget(src, ext, PROBE_READ_BYTES_MAX)
}

/// Probe a seekable source, reading at most `budget` bytes. A demuxer that panics on a crafted
/// file makes the file unreadable, never takes its caller down; the facts are then checked
/// against the bytes ([`check_claims`]).
pub fn probe_with_budget<R: Read + Seek + Send + Sync + 'static>(
    src: R,
    ext: &str,
    budget: u64,
) -> Result<MediaFacts, ProbeError> {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| probe_unchecked(src, ext, budget)));
    match run {
        Ok(Ok((facts, len))) => check_claims(facts, len),
        Ok(Err(e)) => Err(e),
        Err(payload) => {
            let what = spool_model::panic_message(payload.as_ref());
            Err(ProbeError::Unreadable(format!("the demuxer failed on this file ({what})")))
        }
    }
}

/// Bytes per second of uncompressed PCM audio, when the stream is such.
fn pcm_bytes_per_second(s: &StreamFacts) -> Option<u64> {
    let width = match s.codec.as_str() {
        "pcm_u8" | "pcm_alaw" | "pcm_mulaw" => 1,
        "pcm_s16le" | "pcm_s16be" => 2,
        "pcm_s24le" | "pcm_s24be" => 3,
        "pcm_s32le" | "pcm_s32be" | "pcm_f32le" | "pcm_f32be" => 4,
        "pcm_f64le" | "pcm_f64be" => 8,
        _ => return None,
    };
    Some(width * s.sample_rate? as u64 * s.channels.unwrap_or(1).max(1) as u64).filter(|b| *b > 0)
}

/// Check what a header claims against the bytes of the file: uncompressed audio lasts at most
/// what its bytes hold (a WAV `data` size past the end of the file is capped there, as ffprobe
/// does); any other claim over [`MIN_BYTES_PER_SECOND`] is refused; and media longer than
/// [`spool_model::media::PARTS_PER_FILE_MAX`] parts is refused with the bound.
pub fn check_claims(mut facts: MediaFacts, len: u64) -> Result<MediaFacts, ProbeError> {
    if facts.duration_us.is_none() && facts.streams.iter().all(|s| s.duration_us.is_none()) {
        return Ok(facts);
    }
    let audio_only = facts.streams.iter().all(|s| s.kind != StreamKind::Video);
    if audio_only && let Some(rate) = facts.streams.iter().find_map(pcm_bytes_per_second) {
        let held = spool_model::num::sat_u64(len as u128 * 1_000_000 / rate as u128);
        let cap = |d: &mut Option<u64>| {
            if let Some(v) = d
                && *v > held
            {
                *v = held;
            }
        };
        cap(&mut facts.duration_us);
        for s in &mut facts.streams {
            cap(&mut s.duration_us);
        }
        facts.bit_rate = bit_rate(len, facts.duration_us);
    }
    let longest = facts.streams.iter().filter_map(|s| s.duration_us).chain(facts.duration_us).max().unwrap_or(0);
    let most_us = spool_model::num::sat_u64(len as u128 * 1_000_000 / MIN_BYTES_PER_SECOND as u128);
    if longest > most_us {
        return Err(ProbeError::Unreadable(format!(
            "the header claims {} but the file's {len} bytes hold at most {} (at least {MIN_BYTES_PER_SECOND} bytes per second)",
            spool_model::media::human_duration(longest),
            spool_model::media::human_duration(most_us),
        )));
    }
    spool_model::media::check_parts(facts.duration_us).map_err(ProbeError::Unreadable)?;
    Ok(facts)
}

fn probe_unchecked<R: Read + Seek + Send + Sync + 'static>(
    mut src: R,
    ext: &str,
    budget: u64,
) -> Result<(MediaFacts, u64), ProbeError> {
    let len = src.seek(SeekFrom::End(0)).map_err(|e| ProbeError::Io(e.kind().to_string()))?;
    src.seek(SeekFrom::Start(0)).map_err(|e| ProbeError::Io(e.kind().to_string()))?;
    if len == 0 {
        return Err(ProbeError::Unreadable("the file is empty".into()));
    }
    let mut head = [0u8; 64];
    let n = read_up_to(&mut src, &mut head).map_err(|e| ProbeError::Io(e.kind().to_string()))?;
    let head = &head[..n];
    src.seek(SeekFrom::Start(0)).map_err(|e| ProbeError::Io(e.kind().to_string()))?;
    if let Ok(kind) = imagesize::image_type(head) {
        // imagesize takes any ISO-BMFF `ftyp` for HEIF; only image brands are stills.
        let heif_brand = head.len() >= 12 && matches!(&head[8..12], b"heic" | b"heix" | b"mif1" | b"msf1" | b"avif");
        if !matches!(kind, imagesize::ImageType::Heif(_)) || heif_brand {
            return probe_image(src, kind, budget).map(|f| (f, len));
        }
    }
    let source = Budgeted { inner: src, len, read: 0, budget };
    probe_av(source, len, head, ext).map(|f| (f, len))
}

fn read_up_to<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn probe_image<R: Read + Seek>(src: R, kind: imagesize::ImageType, budget: u64) -> Result<MediaFacts, ProbeError> {
    use imagesize::ImageType;
    let (container, codec) = match kind {
        ImageType::Png => ("png", "png"),
        ImageType::Jpeg => ("jpeg", "mjpeg"),
        ImageType::Webp => ("webp", "webp"),
        ImageType::Gif => ("gif", "gif"),
        ImageType::Bmp => ("bmp", "bmp"),
        ImageType::Tiff => ("tiff", "tiff"),
        ImageType::Heif(_) => ("heif", "hevc"),
        other => {
            return Err(ProbeError::Unreadable(format!("{other:?} images are not a supported media type")));
        }
    };
    let budgeted = Budgeted { inner: src, len: 0, read: 0, budget };
    let size = imagesize::reader_size(std::io::BufReader::new(budgeted))
        .map_err(|e| ProbeError::Unreadable(format!("the {container} image cannot be read: {e}")))?;
    if size.width == 0 || size.height == 0 {
        return Err(ProbeError::Unreadable(format!("the {container} image has no pixels")));
    }
    Ok(MediaFacts {
        container: container.into(),
        duration_us: None,
        bit_rate: None,
        streams: vec![StreamFacts {
            kind: StreamKind::Video,
            codec: codec.into(),
            width: Some(spool_model::num::sat_u32(size.width)),
            height: Some(spool_model::num::sat_u32(size.height)),
            frame_rate: None,
            sample_rate: None,
            channels: None,
            duration_us: None,
        }],
    })
}

fn probe_av<R: Read + Seek + Send + Sync + 'static>(
    source: Budgeted<R>,
    len: u64,
    head: &[u8],
    ext: &str,
) -> Result<MediaFacts, ProbeError> {
    let mss = MediaSourceStream::new(Box::new(source), Default::default());
    let mut hint = Hint::new();
    if !ext.is_empty() {
        hint.with_extension(&ext.to_ascii_lowercase());
    }
    let opts = FormatOptions::default();
    let mut reader = symphonia::default::get_probe()
        .probe(&hint, mss, opts, MetadataOptions::default())
        .map_err(|e| ProbeError::Unreadable(format!("not a readable media file: {e}")))?;
    let container = container_name(reader.format_info().short_name, head);
    let mut streams = Vec::new();
    let mut need_rate = Vec::new();
    for track in reader.tracks() {
        let Some(facts) = stream_facts(track) else { continue };
        if facts.kind == StreamKind::Video && facts.frame_rate.is_none() {
            need_rate.push((streams.len(), track.id, track.time_base));
        }
        streams.push(facts);
    }
    if !streams.iter().any(|s| s.kind != StreamKind::Subtitle) {
        return Err(ProbeError::Unreadable("the file has no audio or video stream".into()));
    }
    let info = *reader.media_info();
    let mut duration_us = match (info.time_base, info.duration) {
        (Some(tb), Some(d)) if d.get() > 0 => Some(ticks_us(tb, d.get())),
        _ => streams.iter().filter_map(|s| s.duration_us).max(),
    };
    if !need_rate.is_empty() {
        measure_frame_rates(reader.as_mut(), &mut streams, &need_rate);
    }
    if duration_us.is_none() && matches!(container.as_str(), "matroska" | "webm") {
        // No duration in the header: the end of the last cluster gives one.
        let tick_ns = info.time_base.map(|tb| tb.numer.get() as u64 * 1_000_000_000 / tb.denom.get() as u64);
        let mut inner = reader.into_inner();
        duration_us =
            mkv_tail::duration_from_last_cluster(&mut inner, len, MKV_TAIL_BYTES_MAX, tick_ns.unwrap_or(1_000_000));
    }
    Ok(MediaFacts { container, duration_us, bit_rate: bit_rate(len, duration_us), streams })
}

/// Bits per second over the whole file.
fn bit_rate(len: u64, duration_us: Option<u64>) -> Option<u64> {
    duration_us.filter(|d| *d > 0).map(|d| spool_model::num::sat_u64((len as u128 * 8 * 1_000_000) / d as u128))
}

/// ffprobe's name for the container.
fn container_name(short: &str, head: &[u8]) -> String {
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    match short {
        "isomp4" => {
            // The `ftyp` box's major brand: QuickTime files are `qt  `.
            if head.len() >= 12 && &head[4..8] == b"ftyp" && &head[8..12] == b"qt  " {
                "mov".into()
            } else if head.len() >= 12 && &head[4..8] == b"ftyp" && &head[8..11] == b"M4A" {
                "m4a".into()
            } else {
                "mp4".into()
            }
        }
        "matroska" | "mkv" => if has(b"webm") { "webm" } else { "matroska" }.into(),
        "wave" => "wav".into(),
        other => other.into(),
    }
}

fn ticks_us(tb: TimeBase, ticks: u64) -> u64 {
    let us = ticks as u128 * tb.numer.get() as u128 * 1_000_000 / tb.denom.get() as u128;
    spool_model::num::sat_u64(us)
}

fn stream_facts(track: &Track) -> Option<StreamFacts> {
    let duration_us = match (track.time_base, track.duration) {
        (Some(tb), Some(d)) if d.get() > 0 => Some(ticks_us(tb, d.get())),
        _ => None,
    };
    match track.codec_params.as_ref()? {
        CodecParameters::Audio(a) => Some(StreamFacts {
            kind: StreamKind::Audio,
            codec: audio_codec_name(a.codec),
            width: None,
            height: None,
            frame_rate: None,
            sample_rate: a.sample_rate,
            channels: a.channels.as_ref().map(|c| spool_model::num::sat_u32(c.count())),
            duration_us,
        }),
        CodecParameters::Video(v) => {
            // A stated frame count over a stated duration is the average frame rate.
            let frame_rate = match (track.num_frames, duration_us) {
                (Some(n), Some(d)) if n > 1 && d > 0 => Some(snap_rate(n as f64 * 1e6 / d as f64)),
                _ => None,
            };
            Some(StreamFacts {
                kind: StreamKind::Video,
                codec: video_codec_name(v.codec),
                width: v.width.map(u32::from),
                height: v.height.map(u32::from),
                frame_rate,
                sample_rate: None,
                channels: None,
                duration_us,
            })
        }
        _ => Some(StreamFacts {
            kind: StreamKind::Subtitle,
            codec: "subtitle".into(),
            width: None,
            height: None,
            frame_rate: None,
            sample_rate: None,
            channels: None,
            duration_us,
        }),
    }
}

/// A measured rate as the fraction it stands for: whole rates, and the NTSC rates n×1000/1001.
fn snap_rate(fps: f64) -> (u32, u32) {
    let whole = fps.round();
    let ntsc = (fps * 1.001).round();
    let candidates = [
        (whole, (spool_model::num::f64_to_u32(whole), 1)),
        (ntsc * 1000.0 / 1001.0, (spool_model::num::f64_to_u32(ntsc).saturating_mul(1000), 1001)),
    ];
    let best =
        candidates.iter().filter(|(r, _)| *r >= 1.0).min_by(|a, b| (fps - a.0).abs().total_cmp(&(fps - b.0).abs()));
    match best {
        Some((r, frac)) if (fps - r).abs() / r < 0.002 => *frac,
        _ => (spool_model::num::f64_to_u32((fps * 1000.0).round().max(1.0)), 1000),
    }
}

/// Frame rates from packet timestamps, for containers that state none (Matroska): the span
/// of the first packets' presentation times over their count, within [`PROBE_PACKETS_MAX`]
/// packets and the byte budget. A stream whose packets are not read in time keeps `None`.
fn measure_frame_rates(
    reader: &mut dyn FormatReader,
    streams: &mut [StreamFacts],
    wanted: &[(usize, u32, Option<TimeBase>)],
) {
    let mut pts: Vec<Vec<i64>> = vec![Vec::new(); wanted.len()];
    for _ in 0..PROBE_PACKETS_MAX {
        let Ok(Some(packet)) = reader.next_packet() else { break };
        if let Some(i) = wanted.iter().position(|w| w.1 == packet.track_id) {
            pts[i].push(packet.pts.get());
        }
    }
    for (i, (index, _, tb)) in wanted.iter().enumerate() {
        let Some(tb) = tb else { continue };
        let ts = &mut pts[i];
        ts.sort_unstable();
        ts.dedup();
        if ts.len() < 3 {
            continue;
        }
        let span = (ts[ts.len() - 1] - ts[0]) as f64 * tb.numer.get() as f64 / tb.denom.get() as f64;
        if span > 0.0 {
            streams[*index].frame_rate = Some(snap_rate((ts.len() - 1) as f64 / span));
        }
    }
}

fn audio_codec_name(id: symphonia::core::codecs::audio::AudioCodecId) -> String {
    use symphonia::core::codecs::audio::well_known::*;
    let name = match id {
        CODEC_ID_AAC => "aac",
        CODEC_ID_MP3 => "mp3",
        CODEC_ID_MP2 => "mp2",
        CODEC_ID_MP1 => "mp1",
        CODEC_ID_OPUS => "opus",
        CODEC_ID_VORBIS => "vorbis",
        CODEC_ID_FLAC => "flac",
        CODEC_ID_ALAC => "alac",
        CODEC_ID_AC3 => "ac3",
        CODEC_ID_EAC3 => "eac3",
        CODEC_ID_PCM_S16LE => "pcm_s16le",
        CODEC_ID_PCM_S16BE => "pcm_s16be",
        CODEC_ID_PCM_S24LE => "pcm_s24le",
        CODEC_ID_PCM_S24BE => "pcm_s24be",
        CODEC_ID_PCM_S32LE => "pcm_s32le",
        CODEC_ID_PCM_S32BE => "pcm_s32be",
        CODEC_ID_PCM_U8 => "pcm_u8",
        CODEC_ID_PCM_F32LE => "pcm_f32le",
        CODEC_ID_PCM_F32BE => "pcm_f32be",
        CODEC_ID_PCM_F64LE => "pcm_f64le",
        CODEC_ID_PCM_F64BE => "pcm_f64be",
        CODEC_ID_PCM_ALAW => "pcm_alaw",
        CODEC_ID_PCM_MULAW => "pcm_mulaw",
        CODEC_ID_ADPCM_MS => "adpcm_ms",
        CODEC_ID_ADPCM_IMA_WAV => "adpcm_ima_wav",
        _ => return "unknown".into(),
    };
    name.into()
}

fn video_codec_name(id: symphonia::core::codecs::video::VideoCodecId) -> String {
    use symphonia::core::codecs::video::well_known::*;
    let name = match id {
        CODEC_ID_H264 => "h264",
        CODEC_ID_HEVC => "hevc",
        CODEC_ID_VVC => "vvc",
        CODEC_ID_VP8 => "vp8",
        CODEC_ID_VP9 => "vp9",
        CODEC_ID_AV1 => "av1",
        CODEC_ID_MPEG4 => "mpeg4",
        CODEC_ID_MPEG2 => "mpeg2video",
        CODEC_ID_MPEG1 => "mpeg1video",
        CODEC_ID_MJPEG => "mjpeg",
        CODEC_ID_THEORA => "theora",
        CODEC_ID_H263 => "h263",
        CODEC_ID_VC1 => "vc1",
        _ => return "unknown".into(),
    };
    name.into()
}

/// A source that refuses to read past its budget (seeks cost nothing).
struct Budgeted<R> {
    inner: R,
    len: u64,
    read: u64,
    budget: u64,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.budget.saturating_sub(self.read);
        if left == 0 {
            return Err(std::io::Error::other(format!(
                "the probe read its budget of {} bytes without finding what it needs",
                self.budget
            )));
        }
        let want = buf.len().min(spool_model::num::sat_usize(left));
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: Seek> Seek for Budgeted<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl<R: Read + Seek + Send + Sync> MediaSource for Budgeted<R> {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_rates_snap_to_whole_and_ntsc_fractions() {
        assert_eq!(snap_rate(24.004), (24, 1));
        assert_eq!(snap_rate(29.97), (30_000, 1001));
        assert_eq!(snap_rate(23.976), (24_000, 1001));
        assert_eq!(snap_rate(12.345), (12_345, 1000));
    }

    #[test]
    fn bytes_that_are_no_media_are_unreadable_not_a_panic() {
        for bytes in [vec![0u8; 10], b"ftypisom".repeat(100), vec![0xffu8; 5000], b"RIFF\0\0\0\0WAVE".to_vec()] {
            let got = probe(std::io::Cursor::new(bytes), "mp4");
            assert!(matches!(got, Err(ProbeError::Unreadable(_))), "{got:?}");
        }
        assert_eq!(probe(std::io::Cursor::new(Vec::new()), "mp4").unwrap_err().code(), "media_unreadable");
    }

    #[test]
    fn the_budget_stops_reads_past_it() {
        let mut b = Budgeted { inner: std::io::Cursor::new(vec![1u8; 100]), len: 100, read: 0, budget: 10 };
        let mut buf = [0u8; 64];
        assert_eq!(b.read(&mut buf).unwrap(), 10);
        assert!(b.read(&mut buf).is_err());
        b.seek(SeekFrom::Start(90)).unwrap();
        assert!(b.read(&mut buf).is_err(), "seeking does not renew the budget");
    }
}

/// A valid WAV file (8 kHz, mono, 8-bit PCM) whose samples are `payload`: any bytes are
/// valid samples, so tests and benchmarks get real media of any size and content. It lasts
/// `payload.len() / 8000` seconds.
pub fn pcm_wav(payload: &[u8]) -> Vec<u8> {
    let mut out = pcm_wav_header(spool_model::num::sat_u32(payload.len()));
    out.extend_from_slice(payload);
    out
}

/// The 44-byte header of [`pcm_wav`] for `data_len` bytes of samples (for writers that stream
/// the samples after it).
pub fn pcm_wav_header(data_len: u32) -> Vec<u8> {
    const RATE: u32 = 8000;
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&(36 + data_len).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // PCM
    h.extend_from_slice(&1u16.to_le_bytes()); // mono
    h.extend_from_slice(&RATE.to_le_bytes());
    h.extend_from_slice(&RATE.to_le_bytes()); // bytes per second
    h.extend_from_slice(&1u16.to_le_bytes()); // block align
    h.extend_from_slice(&8u16.to_le_bytes()); // bits per sample
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_len.to_le_bytes());
    h
}

#[cfg(test)]
mod wav_tests {
    #[test]
    fn a_synthetic_wav_of_any_payload_is_real_audio_of_its_length() {
        let facts = super::probe(std::io::Cursor::new(super::pcm_wav(&[7u8; 16_000])), "wav").unwrap();
        assert_eq!(facts.container, "wav");
        assert_eq!(facts.duration_us, Some(2_000_000));
        assert_eq!(facts.streams[0].codec, "pcm_u8");
        assert_eq!(facts.streams[0].sample_rate, Some(8000));
    }
}
