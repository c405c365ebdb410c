//! Tidy: the rules `engine-spec/ARCHITECTURE.md` states that a test can check by reading the
//! sources. A rule that changes changes here and there in the same commit.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())).flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p, text));
            }
        }
    }
    out
}

/// Lines of code, comments left out (rules are about what runs, not what is said).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter(|(_, l)| !l.trim_start().starts_with("//")).map(|(i, l)| (i + 1, l))
}

#[test]
fn the_core_reads_no_clock_no_randomness_and_no_environment() {
    let mut found = Vec::new();
    for (path, text) in sources(&repo().join("crates/core/src")) {
        for (n, line) in code_lines(&text) {
            for banned in ["SystemTime", "Instant::now", "rand::", "std::env", "tokio::", "std::fs"] {
                if line.contains(banned) {
                    found.push(format!("{}:{n}: {banned}", path.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "spool-core must stay pure (ARCHITECTURE.md): {found:#?}");
}

#[test]
fn the_sequencer_imports_nothing_of_the_runtime() {
    let text = std::fs::read_to_string(repo().join("crates/runtime/src/sequencer.rs")).unwrap();
    let uses: Vec<(usize, &str)> =
        code_lines(&text).filter(|(_, l)| l.contains("crate::runtime") || l.contains("Runtime::")).collect();
    assert!(uses.is_empty(), "sequencer.rs is a type of its own, hosted through SequencerHost: {uses:?}");
}

#[test]
fn the_runtime_names_the_embedded_log_only_where_it_opens_it() {
    let text = std::fs::read_to_string(repo().join("crates/runtime/src/runtime.rs")).unwrap();
    let names: Vec<(usize, &str)> =
        code_lines(&text).filter(|(_, l)| l.contains("RedbLog") && !l.trim_start().starts_with("use ")).collect();
    assert_eq!(names.len(), 1, "the runtime runs on any EventLog; RedbLog only in Runtime::open: {names:?}");
    assert!(names[0].1.contains("RedbLog::open_dir"), "{names:?}");
}

#[test]
fn every_bound_the_architecture_names_exists_in_the_code() {
    let arch = std::fs::read_to_string(repo().join("engine-spec/ARCHITECTURE.md")).unwrap();
    let mut code = String::new();
    for (_, text) in sources(&repo().join("crates")) {
        code.push_str(&text);
    }
    let mut missing = Vec::new();
    for piece in arch.split('`').skip(1).step_by(2) {
        let is_bound =
            piece.ends_with("_MAX") && piece.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if is_bound && !code.contains(&format!("const {piece}:")) {
            missing.push(piece.to_string());
        }
    }
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "ARCHITECTURE.md names bounds the code does not define: {missing:?}");
}
