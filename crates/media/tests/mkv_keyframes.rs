//! Matroska/WebM keyframes against ffprobe's keyframe list: files made here with ffmpeg (a
//! seekable MKV with Cues and audio, a VP8 WebM, an MKV written to a pipe, which has no Cues,
//! so its clusters are walked). ffmpeg and ffprobe are the oracle only; `.ci/run` installs
//! them, and without them this test fails and says so.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)] // tests: times they chose

use std::path::Path;
use std::process::{Command, Stdio};

fn ffmpeg(args: &[&str], out: &Path, to_pipe: bool) {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-y"]).args(args);
    if to_pipe {
        let file = std::fs::File::create(out).unwrap();
        cmd.args(["-f", "matroska", "pipe:1"]).stdout(Stdio::from(file));
    } else {
        cmd.arg(out);
    }
    let status = cmd.status().expect("ffmpeg is needed to make the files: apt-get install -y ffmpeg");
    assert!(status.success(), "ffmpeg {args:?}");
}

/// ffprobe's keyframe times of the first video stream, in µs.
fn oracle(path: &Path) -> Vec<u64> {
    let out = Command::new("ffprobe")
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
        .arg(path)
        .output()
        .expect("ffprobe is the oracle: apt-get install -y ffmpeg");
    assert!(out.status.success());
    let mut v: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok())
        .map(|s| (s * 1e6).round() as u64)
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn matroska_keyframes_are_ffprobes_from_cues_or_from_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let src = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10"];
    let cases: Vec<(&str, Vec<&str>, bool)> = vec![
        // Cues, audio beside the video, keyframes every 0.7 s.
        (
            "cues.mkv",
            [
                &src[..],
                &[
                    "-f",
                    "lavfi",
                    "-i",
                    "sine=frequency=440:sample_rate=8000",
                    "-t",
                    "12",
                    "-g",
                    "7",
                    "-sc_threshold",
                    "0",
                    "-c:v",
                    "mpeg4",
                    "-c:a",
                    "libvorbis",
                ],
            ]
            .concat(),
            false,
        ),
        ("vp8.webm", [&src[..], &["-t", "6", "-g", "5", "-c:v", "libvpx", "-b:v", "100k"]].concat(), false),
        // Written to a pipe: no Cues, the clusters are walked.
        ("piped.mkv", [&src[..], &["-t", "6", "-g", "4", "-c:v", "mpeg4"]].concat(), true),
    ];
    for (name, args, pipe) in cases {
        let path = dir.path().join(name);
        ffmpeg(&args, &path, pipe);
        let ours = spool_media::mkv_keys::mkv_keyframes(&path).unwrap_or_else(|| panic!("{name}: no keyframes read"));
        let theirs = oracle(&path);
        assert!(theirs.len() >= 8, "{name}: ffprobe found {theirs:?}");
        assert_eq!(ours, theirs, "{name}");
        // The boundaries a run reads for a video.
        assert_eq!(spool_media::boundaries::video_keyframes(&path), Some(theirs));
    }
}
