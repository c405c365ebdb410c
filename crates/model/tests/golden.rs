//! Golden encodings: every event variant's bytes are pinned in `fixtures/events/`.
//!
//! A test fails when an existing encoding changes (a field added, a variant moved). A new
//! variant's file is written by `UPDATE_GOLDEN=1 cargo test -p spool-model`, which never
//! overwrites an existing file.

#![allow(clippy::disallowed_methods)] // tests read their environment
use spool_model::Event;
use spool_model::codec::{decode_event, encode_event};
use spool_model::event::EVENT_KINDS;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/events/v1")
}

fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::new();
    for chunk in bytes.chunks(16) {
        let line: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        s.push_str(&line.join(" "));
        s.push('\n');
    }
    s
}

fn from_hex(text: &str) -> Vec<u8> {
    text.split_whitespace().map(|h| u8::from_str_radix(h, 16).expect("hex byte")).collect()
}

#[test]
fn every_variant_has_a_sample() {
    let samples = Event::samples();
    let mut seen: Vec<usize> = samples.iter().map(|e| e.kind_index()).collect();
    seen.sort();
    let all: Vec<usize> = (0..EVENT_KINDS.len()).collect();
    assert_eq!(seen, all, "Event::samples() must hold exactly one sample of each variant");
}

#[test]
fn encodings_match_the_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut problems = Vec::new();
    for event in Event::samples() {
        let name = format!("{:03}-{}.hex", event.kind_index(), event.kind());
        let path = dir().join(&name);
        let bytes = encode_event(&event).unwrap();
        assert_eq!(bytes[0] as usize, event.kind_index(), "the variant index is the first byte");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let golden = from_hex(&text);
                if golden != bytes {
                    problems.push(format!(
                        "{name}: encoding changed.\n  golden: {}\n  now:    {}",
                        text.split_whitespace().collect::<Vec<_>>().join(" "),
                        to_hex(&bytes).split_whitespace().collect::<Vec<_>>().join(" ")
                    ));
                }
                match decode_event(&golden) {
                    Ok(decoded) if decoded == event => {}
                    Ok(decoded) => problems.push(format!("{name}: decodes to {decoded:?}")),
                    Err(e) => problems.push(format!("{name}: no longer decodes: {e}")),
                }
            }
            Err(_) if update => {
                std::fs::create_dir_all(dir()).unwrap();
                std::fs::write(&path, to_hex(&bytes)).unwrap();
            }
            Err(e) => problems
                .push(format!("{name}: missing ({e}); run UPDATE_GOLDEN=1 cargo test -p spool-model to create it")),
        }
    }
    let files = std::fs::read_dir(dir()).map(|d| d.count()).unwrap_or(0);
    if files != EVENT_KINDS.len() {
        problems.push(format!("{files} golden files for {} variants", EVENT_KINDS.len()));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The golden files are append-only: no commit may change, remove or rename a committed one
/// (except the reviewed ones in `fixtures/events/REWRITES`), and the work tree may not either.
/// Comparing samples with files alone let persisted variants 42 and 43 be re-encoded in place,
/// their files edited to match.
#[test]
fn no_committed_golden_file_is_ever_changed_or_removed() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git").arg("-C").arg(&root).args(args).output().expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let allowed: Vec<String> = std::fs::read_to_string(root.join("fixtures/events/REWRITES"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let rewrites = git(&["log", "--format=%H", "--diff-filter=MDR", "--", "fixtures/events/v1"]);
    let unexpected: Vec<&str> = rewrites.lines().filter(|c| !allowed.iter().any(|a| a == c)).collect();
    assert!(unexpected.is_empty(), "commits changed or removed golden files: {unexpected:?}");
    let dirty = git(&["status", "--porcelain", "--", "fixtures/events/v1"]);
    let changed: Vec<&str> = dirty.lines().filter(|l| !l.starts_with("??") && !l.starts_with("A ")).collect();
    assert!(changed.is_empty(), "golden files changed in the work tree: {changed:?}");
}
