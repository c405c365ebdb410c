//! `spool demo` end to end: the real binary, embedded media, the HTTP API, a summary that
//! matches what the probe reads; it exits 0 and leaves nothing running. `--serve` keeps a server
//! that answers with the printed key until interrupted.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)] // tests, benches and simulators: sizes they chose

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn the_demo_imports_the_embedded_media_and_explains_what_failed_and_was_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spool")).arg("demo").arg("--data-dir").arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Import completed: 12 imported, 1 failed, 2 skipped of 15 files"), "{stdout}");
    let line = |name: &str| stdout.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}: {stdout}"));
    assert!(line("corrupt.mp4").contains("failed") && line("corrupt.mp4").contains("media_unreadable"));
    assert!(line("empty.mp4").contains("empty_object"));
    assert!(line("README.md").contains("unsupported_format"));
    assert!(line("h264_aac.mp4").contains("2.000") && line("h264_aac.mp4").contains("h264 176x144"));
    assert!(line("still.jpg").contains("image"));
    assert!(line("tone.wav").contains("audio") && line("tone.wav").contains("pcm_s16le 22050Hz 1ch"));
    // Then a prompt run over what was imported, with the probe processor: every segment answered.
    let run = line("Prompt run ");
    assert!(run.contains(" completed: 21 of 21 segments") && run.contains("(5 videos, 4 audios, 3 images)"), "{run}");
    // And an export of the index written through the connector: the file is the reported bytes.
    let export = line("Export ");
    assert!(export.contains(" completed: "), "{export}");
    let path = export.rsplit(" written to ").next().unwrap();
    let bytes = std::fs::read(path).unwrap();
    let sha = export.split("(sha256 ").nth(1).unwrap().split(')').next().unwrap();
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), sha);
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["videos"].as_array().unwrap().len(), 12);
    // Then the automations on the demo's clock: two files dropped into incoming/ are found,
    // and when the clock moves past the debounce one job imports both, its run completes and
    // the export automation writes it.
    let found = line("Import automation ");
    assert!(found.contains("found 2 new objects") && found.contains("(debounce 5m)"), "{found}");
    let fired = line("Automation import job ");
    assert!(fired.contains(": 2 of 2 files imported; prompt run ") && fired.contains(" completed ("), "{fired}");
    let path = fired.rsplit(" to ").next().unwrap();
    let auto: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    // An index export limited to the automation's run: its two videos carry the run's results.
    let with_results = auto["videos"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["results"].as_array().is_some_and(|r| !r.is_empty()))
        .count();
    assert_eq!(with_results, 2, "{auto}");
    assert_eq!(auto["prompt_runs"].as_array().unwrap().len(), 1);
    // The automation is a stream like any other: `spool replay` shows its steps.
    let auto_id = found.split_whitespace().nth(2).unwrap();
    let data = dir.path().join("data");
    let replay = Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["replay", "--data-dir"])
        .arg(&data)
        .arg(auto_id)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&replay.stdout);
    assert!(replay.status.success(), "{text}{}", String::from_utf8_lossy(&replay.stderr));
    for step in [
        "AutomationSaved",
        "AutomationObjectsFound",
        "AutomationListed",
        "AutomationImportStarted",
        "AutomationRunStarted",
    ] {
        assert!(text.contains(step), "{step} missing from the replay of {auto_id}:\n{text}");
    }
    // The commands it suggests work on what it left.
    let verify = Command::new(env!("CARGO_BIN_EXE_spool")).arg("verify").arg("--data-dir").arg(&data).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    // A second demo in the same folder refuses rather than mixing two runs.
    let again =
        Command::new(env!("CARGO_BIN_EXE_spool")).arg("demo").arg("--data-dir").arg(dir.path()).output().unwrap();
    assert!(!again.status.success());
}

#[test]
fn demo_serve_keeps_a_server_up_with_the_printed_key_until_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["demo", "--serve", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let serving = loop {
        let l = lines.next().expect("the demo printed no 'Serving at' line").unwrap();
        if l.starts_with("Serving at ") {
            break l;
        }
    };
    // "Serving at http://ADDR (API base http://ADDR/api/v2), key KEY; Ctrl-C stops."
    let base = serving.split("API base ").nth(1).unwrap().split(')').next().unwrap().to_string();
    let key = serving.split(", key ").nth(1).unwrap().split(';').next().unwrap().to_string();
    let addr = base.trim_start_matches("http://").split('/').next().unwrap().to_string();
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(s, "GET /api/v2/import-jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"status\":\"completed\""), "{resp}");
    let pid = child.id() as i32;
    assert_eq!(interrupt(pid), 0, "Ctrl-C");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// Ctrl-C, sent with the `kill` tool.
fn interrupt(pid: i32) -> i32 {
    Command::new("kill").args(["-INT", &pid.to_string()]).status().map(|s| if s.success() { 0 } else { 1 }).unwrap_or(1)
}
