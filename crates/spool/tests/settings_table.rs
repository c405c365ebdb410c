//! README's settings tables name every environment variable the binary reads (issue 31, item 7):
//! each name in the sources that `std::env::var` / `var_os` or clap's `env = "…"` reads, or that
//! a `…_ENV` constant holds, appears in README as `NAME` (in backticks, alone or as `NAME=…`).
//! Benches' children (`.env(…)`, `.env_remove(…)`) and tests are not the binary's reads.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The quoted names a line reads from the environment (and every `"SPOOL_…"` literal: Spool's
/// own prefix names nothing else, and some are read through a list of names).
fn read_names(line: &str) -> Vec<String> {
    let reads = ["env::var(\"", "env::var_os(\"", "env = \"", "_ENV: &str = \"", "env(\"", "\"SPOOL_"];
    let mut out = Vec::new();
    if line.contains(".env(") || line.contains(".env_remove(") || line.trim_start().starts_with("//") {
        return out;
    }
    for r in reads {
        let mut rest = line;
        while let Some(i) = rest.find(r) {
            rest = &rest[i + r.len()..];
            let prefix = if r == "\"SPOOL_" { "SPOOL_" } else { "" };
            let tail: String =
                rest.chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
            let name = format!("{prefix}{tail}");
            if name.len() > 3 && !name.ends_with('_') && rest[tail.len()..].starts_with('"') && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

#[test]
fn every_environment_variable_the_binary_reads_is_in_the_readme() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut files = Vec::new();
    sources(&root.join("crates"), &mut files);
    let mut names = std::collections::BTreeSet::new();
    for f in files {
        let s = f.to_string_lossy();
        // Tests and benches are not the server's settings.
        if s.contains("/tests/") || s.contains("/bench") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        // A file's unit tests come last: stop there.
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        for line in text.lines() {
            names.extend(read_names(line));
        }
    }
    assert!(
        names.contains("SPOOL_DATA_DIR") && names.contains("SPOOL_MASTER_KEY"),
        "the scan found too little: {names:?}"
    );
    let missing: Vec<&String> =
        names.iter().filter(|n| !readme.contains(&format!("`{n}`")) && !readme.contains(&format!("`{n}="))).collect();
    assert!(missing.is_empty(), "read by the binary, not in README's settings: {missing:?}");
}

#[test]
fn the_scan_sees_each_way_a_name_is_read_and_none_a_child_is_given() {
    assert_eq!(read_names(r#"let v = std::env::var("SPOOL_A").ok();"#), ["SPOOL_A"]);
    assert_eq!(read_names(r#"#[arg(long, env = "SPOOL_B")]"#), ["SPOOL_B"]);
    assert_eq!(read_names(r#"pub const NEW_MASTER_KEY_ENV: &str = "SPOOL_C";"#), ["SPOOL_C"]);
    assert_eq!(read_names(r#"let x = env("SPOOL_D");"#), ["SPOOL_D"]);
    assert!(read_names(r#"cmd.env("RUST_LOG", "warn")"#).is_empty());
    assert!(read_names(r#".env_remove("AWS_CA_BUNDLE")"#).is_empty());
    assert_eq!(read_names(r#"("SPOOL_E", &file.x), k.starts_with("SPOOL_")"#), ["SPOOL_E"]);
}
