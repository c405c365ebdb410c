//! The probe against ffprobe on the same files: every fixture in `fixtures/media` (made by
//! `scripts/make-media-fixtures.sh`), and files generated here that are too large to commit.
//! ffprobe is the oracle only: the probe never runs it. `.ci/run` installs ffmpeg; without
//! ffprobe these tests fail and say so.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)] // tests, benches and simulators: sizes they chose

use serde_json::Value;
use spool_media::{ProbeError, probe_file};
use spool_model::{MediaFacts, StreamKind};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/media")
}

fn ffprobe(path: &Path, packets: bool) -> Value {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-print_format", "json", "-show_format", "-show_streams"]);
    if packets {
        cmd.arg("-show_packets");
    }
    let out = cmd.arg(path).output().expect("ffprobe is needed as the oracle: apt-get install -y ffmpeg");
    assert!(out.status.success(), "ffprobe failed on {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn num(v: &Value) -> Option<f64> {
    v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_f64())
}

fn rate(v: &Value) -> Option<f64> {
    let (a, b) = v.as_str()?.split_once('/')?;
    let (a, b): (f64, f64) = (a.parse().ok()?, b.parse().ok()?);
    (b > 0.0 && a > 0.0).then_some(a / b)
}

fn ext(path: &Path) -> String {
    path.extension().map(|e| e.to_string_lossy().to_string()).unwrap_or_default()
}

/// The end of the last packet, for files whose header states no duration.
fn last_packet_end(oracle: &Value) -> f64 {
    oracle["packets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| Some(num(&p["pts_time"])? + num(&p["duration_time"]).unwrap_or(0.0)))
        .fold(0.0, f64::max)
}

/// Compare one file's facts with ffprobe's; returns a line for the table the closing note quotes.
fn compare(path: &Path) -> String {
    let facts: MediaFacts = probe_file(path, &ext(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let oracle = ffprobe(path, true);
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let format = &oracle["format"];
    let names: Vec<String> =
        format["format_name"].as_str().unwrap().split(',').map(|s| s.trim_end_matches("_pipe").to_string()).collect();
    assert!(names.contains(&facts.container), "{name}: container {} not in ffprobe's {names:?}", facts.container);
    if facts.container == "mov" || facts.container == "mp4" {
        let brand = format["tags"]["major_brand"].as_str().unwrap_or("");
        assert_eq!(facts.container == "mov", brand.trim() == "qt", "{name}: brand {brand}");
    }
    // Duration: ffprobe's, or the end of its last packet when the header has none.
    let want = match num(&format["duration"]) {
        Some(d) => Some(d),
        None if facts.streams.iter().any(|s| s.kind == StreamKind::Audio) || facts.container.contains("webm") => {
            Some(last_packet_end(&oracle))
        }
        None => None,
    };
    match (want, facts.duration_us) {
        (Some(w), Some(got)) => {
            let got = got as f64 / 1e6;
            assert!((got - w).abs() <= (0.05f64).max(w * 0.02), "{name}: duration {got} vs ffprobe {w}");
        }
        (None, None) => {}
        (w, g) => panic!("{name}: duration {g:?} µs vs ffprobe {w:?}"),
    }
    if let (Some(w), Some(got)) = (num(&format["bit_rate"]), facts.bit_rate) {
        assert!((got as f64 - w).abs() <= w * 0.05, "{name}: bit rate {got} vs ffprobe {w}");
    }
    let streams: Vec<&Value> = oracle["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| matches!(s["codec_type"].as_str(), Some("video") | Some("audio")))
        .collect();
    let ours: Vec<_> = facts.streams.iter().filter(|s| s.kind != StreamKind::Subtitle).collect();
    assert_eq!(ours.len(), streams.len(), "{name}: streams {ours:?} vs ffprobe {streams:?}");
    let mut described = Vec::new();
    for (s, o) in ours.iter().zip(&streams) {
        assert_eq!(s.kind.as_str(), o["codec_type"].as_str().unwrap(), "{name}");
        assert_eq!(s.codec, o["codec_name"].as_str().unwrap(), "{name}: codec");
        match s.kind {
            StreamKind::Video => {
                assert_eq!(s.width.map(u64::from), o["width"].as_u64(), "{name}: width");
                assert_eq!(s.height.map(u64::from), o["height"].as_u64(), "{name}: height");
                if facts.duration_us.is_some() {
                    let want = rate(&o["avg_frame_rate"]).or_else(|| rate(&o["r_frame_rate"])).unwrap();
                    let (n, d) = s.frame_rate.unwrap_or_else(|| panic!("{name}: no frame rate"));
                    let got = n as f64 / d as f64;
                    assert!((got - want).abs() <= want * 0.01, "{name}: frame rate {got} vs ffprobe {want}");
                }
                described.push(format!(
                    "video {} {}x{}{}",
                    s.codec,
                    s.width.unwrap_or(0),
                    s.height.unwrap_or(0),
                    s.frame_rate.map(|(n, d)| format!(" @ {:.3} fps", n as f64 / d as f64)).unwrap_or_default()
                ));
            }
            StreamKind::Audio => {
                assert_eq!(s.sample_rate.map(|r| r.to_string()).as_deref(), o["sample_rate"].as_str(), "{name}");
                assert_eq!(s.channels.map(u64::from), o["channels"].as_u64(), "{name}: channels");
                described.push(format!(
                    "audio {} {} Hz {} ch",
                    s.codec,
                    s.sample_rate.unwrap_or(0),
                    s.channels.unwrap_or(0)
                ));
            }
            StreamKind::Subtitle => {}
        }
    }
    format!(
        "| {name} | {} | {} | {} | {} | ffprobe {} s, {} b/s |",
        facts.container,
        facts.duration_us.map(|d| format!("{:.3} s", d as f64 / 1e6)).unwrap_or("-".into()),
        facts.bit_rate.map(|b| b.to_string()).unwrap_or("-".into()),
        described.join("; "),
        want.map(|w| format!("{w:.3}")).unwrap_or("-".into()),
        format["bit_rate"].as_str().unwrap_or("-"),
    )
}

#[test]
fn every_fixture_has_the_facts_ffprobe_reports() {
    let mut rows = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !matches!(ext(p).as_str(), "md" | ""))
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with("corrupt"))
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .collect();
    files.sort();
    assert!(files.len() >= 12, "the fixtures are missing: run scripts/make-media-fixtures.sh");
    for f in &files {
        rows.push(compare(f));
    }
    println!("| file | container | duration | bit rate | streams | oracle |\n|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

#[test]
fn corrupt_and_empty_files_are_unreadable_with_a_reason() {
    for name in ["corrupt.mp4", "empty.mp4"] {
        let got = probe_file(&fixtures().join(name), "mp4");
        match got {
            Err(e @ ProbeError::Unreadable(_)) => {
                assert_eq!(e.code(), "media_unreadable");
                assert!(!e.to_string().is_empty());
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // ffprobe agrees that neither holds media.
    for name in ["corrupt.mp4", "empty.mp4"] {
        let out = Command::new("ffprobe").args(["-v", "error"]).arg(fixtures().join(name)).output().unwrap();
        assert!(!out.status.success(), "{name}");
    }
}

fn ffmpeg(args: &[&str], out: &Path) {
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y"])
        .args(args)
        .arg(out)
        .status()
        .expect("ffmpeg is needed to generate test media: apt-get install -y ffmpeg");
    assert!(status.success());
}

#[test]
fn an_mp4_with_its_moov_atom_at_the_end_costs_a_seek_not_a_read_of_the_whole_file() {
    // 8 MB of mdat, then the moov atom: probing within a 1 MiB budget must still succeed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big_moov_last.mp4");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=320x240:r=25",
            "-t",
            "20",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-b:v",
            "3M",
        ],
        &path,
    );
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 4 * 1024 * 1024, "the file is {len} bytes");
    let file = std::fs::File::open(&path).unwrap();
    let facts = spool_media::probe_with_budget(file, "mp4", 1024 * 1024).expect("probed within 1 MiB");
    assert_eq!(facts.streams[0].codec, "h264");
    assert!((facts.duration_seconds() - 20.0).abs() < 0.1, "{facts:?}");
    // And the budget is real: a budget smaller than the header fails cleanly.
    let file = std::fs::File::open(&path).unwrap();
    assert!(matches!(spool_media::probe_with_budget(file, "mp4", 16), Err(ProbeError::Unreadable(_))));
}

#[test]
fn media_longer_than_forty_minutes_has_the_duration_ffprobe_reports() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.mp4");
    // 42 minutes of a 1 fps 32x32 picture: a few hundred KB.
    ffmpeg(
        &["-f", "lavfi", "-i", "color=c=gray:s=32x32:r=1", "-t", "2520", "-c:v", "libx264", "-preset", "ultrafast"],
        &path,
    );
    compare(&path);
    let facts = probe_file(&path, "mp4").unwrap();
    let parts = spool_model::media::parts_of(facts.duration_us);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1].end_us, facts.duration_us.unwrap());
}

#[test]
fn keyframes_are_read_from_the_mp4_sync_sample_table_as_ffprobe_lists_them() {
    // 30 s at 10 fps with keyframes forced at 0, 7 and 19 s only.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyframes.mp4");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=s=64x48:r=10",
            "-t",
            "30",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "1000",
            "-sc_threshold",
            "0",
            "-force_key_frames",
            "0,7,19",
            "-pix_fmt",
            "yuv420p",
        ],
        &path,
    );
    let got = spool_media::boundaries::mp4_keyframes(&path).expect("a sync-sample table");
    // ffprobe's own list of keyframe timestamps.
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
        .arg(&path)
        .output()
        .unwrap();
    let want: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok())
        .map(|s| (s * 1e6).round() as u64)
        .collect();
    assert_eq!(want.len(), 3, "ffprobe: {want:?}");
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(&want) {
        // Decode times (stts) against presentation times: within one frame (100 ms).
        assert!(g.abs_diff(*w) <= 100_000, "{got:?} vs {want:?}");
    }
}
