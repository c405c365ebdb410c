//! `spool bench cuts`: where a run's segments may be cut, read from the media, against ffmpeg
//! doing the same reading in the same run. Audio: the silences of a 40-minute range — the
//! whole of a 40-minute file, and the last 40 minutes of a 2-hour file (a long file's last
//! part: the reader seeks there rather than decoding from the start) — against `ffmpeg -ss …
//! -t 2400 -af silencedetect` over the same ranges. Video: the keyframes of a 40-minute
//! Matroska file (from its Cues) against `ffprobe -skip_frame nokey`. By hand, not in CI.

use anyhow::{Context, bail};
use std::path::Path;
use std::time::Instant;

const RATE: usize = 8000;
const SILENCE_EVERY_S: usize = 37;

/// 8 kHz 8-bit mono: a tone, with half a second of silence every 37 s.
fn long_wav(path: &Path, seconds: usize) -> anyhow::Result<()> {
    let mut pcm = Vec::with_capacity(seconds * RATE);
    for i in 0..seconds * RATE {
        let s = i / RATE;
        let quiet = s % SILENCE_EVERY_S == 20 && (i % RATE) < RATE / 2;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        // a sample in [68, 188]
        let v = if quiet {
            128u8
        } else {
            (128.0 + 60.0 * ((i as f32) * 440.0 * std::f32::consts::TAU / RATE as f32).sin()) as u8
        };
        pcm.push(v);
    }
    std::fs::write(path, spool_media::pcm_wav(&pcm))?;
    Ok(())
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64() * 1000.0)
}

/// ffmpeg's silencedetect over [start, start + len) s: (silences found, ms).
fn ffmpeg_silences(path: &Path, start: usize, len: usize) -> anyhow::Result<(usize, f64)> {
    let ((out, _), ms) = timed(|| {
        let out = std::process::Command::new("ffmpeg")
            .args(["-v", "info", "-nostats", "-ss", &start.to_string(), "-t", &len.to_string(), "-i"])
            .arg(path)
            .args(["-af", "silencedetect=n=-40dB:d=0.3", "-f", "null", "-"])
            .output();
        (out, ())
    });
    let out = out.context("running ffmpeg (apt-get install ffmpeg)")?;
    if !out.status.success() {
        bail!("ffmpeg failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let n = String::from_utf8_lossy(&out.stderr).matches("silence_end").count();
    Ok((n, ms))
}

pub fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut json = serde_json::json!({ "bench": "cuts" });
    let forty = 40 * 60;
    for (name, seconds) in [("40min", forty), ("2h_last_40min", 120 * 60)] {
        let path = dir.path().join(format!("{name}.wav"));
        long_wav(&path, seconds)?;
        let start = seconds - forty;
        let range = ((start * 1_000_000) as u64, (seconds * 1_000_000) as u64);
        let (found, ms) = timed(|| spool_media::boundaries::silences_decoding(&path, "wav", range));
        let (found, decoded_us) = found.context("no decodable audio")?;
        let (theirs, ffmpeg_ms) = ffmpeg_silences(&path, start, forty)?;
        if theirs.abs_diff(found.len()) > 2 {
            bail!("{name}: {} silences, ffmpeg found {theirs}: the comparison would mean nothing", found.len());
        }
        println!(
            "silences of {name:<14} {:>4} found in {ms:>8.1} ms (decoded {:>6.1} s)   ffmpeg silencedetect {theirs:>4} in {ffmpeg_ms:>8.1} ms   ratio {:.2}",
            found.len(),
            decoded_us as f64 / 1e6,
            ffmpeg_ms / ms
        );
        json[format!("silences_{name}_ms")] = serde_json::json!((ms * 10.0).round() / 10.0);
        json[format!("ffmpeg_silencedetect_{name}_ms")] = serde_json::json!((ffmpeg_ms * 10.0).round() / 10.0);
        json[format!("silences_{name}_decoded_s")] = serde_json::json!((decoded_us as f64 / 1e5).round() / 10.0);
        json[format!("speedup_vs_ffmpeg_{name}")] = serde_json::json!((ffmpeg_ms / ms * 100.0).round() / 100.0);
    }
    // A 40-minute Matroska video (64x48, 10 fps, a keyframe every 2 s).
    let mkv = dir.path().join("40min.mkv");
    let made = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-t", &forty.to_string()])
        .args(["-g", "20", "-sc_threshold", "0", "-c:v", "mpeg4", "-q:v", "31"])
        .arg(&mkv)
        .status()
        .context("running ffmpeg")?;
    if !made.success() {
        bail!("ffmpeg could not make the Matroska file");
    }
    let (ours, ms) = timed(|| spool_media::mkv_keys::mkv_keyframes(&mkv));
    let ours = ours.context("no keyframes read")?;
    let (out, ffprobe_ms) = timed(|| {
        std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-skip_frame",
                "nokey",
                "-show_entries",
                "frame=pts_time",
                "-of",
                "csv=p=0",
            ])
            .arg(&mkv)
            .output()
    });
    let theirs = String::from_utf8_lossy(&out.context("running ffprobe")?.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    if theirs != ours.len() {
        bail!("{} keyframes, ffprobe lists {theirs}", ours.len());
    }
    println!(
        "keyframes of 40min.mkv    {:>5} read in {ms:>8.1} ms (Cues)                ffprobe -skip_frame nokey {theirs:>5} in {ffprobe_ms:>8.1} ms   ratio {:.2}",
        ours.len(),
        ffprobe_ms / ms
    );
    json["mkv_keyframes_40min_ms"] = serde_json::json!((ms * 10.0).round() / 10.0);
    json["ffprobe_keyframes_40min_ms"] = serde_json::json!((ffprobe_ms * 10.0).round() / 10.0);
    json["mkv_keyframes"] = serde_json::json!(ours.len());
    println!("{json}");
    Ok(())
}
