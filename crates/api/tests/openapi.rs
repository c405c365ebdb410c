//! The OpenAPI description against its committed copy (`crates/api/openapi/openapi.json`): a
//! route added, removed or changed without the copy being written again fails here, in CI.
//! `UPDATE_OPENAPI=1 cargo test -p spool-api --test openapi` writes the copy.

#![allow(clippy::disallowed_methods)] // tests read their environment
use serde_json::Value;
use std::path::PathBuf;

fn committed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json")
}

#[test]
fn the_description_matches_its_committed_copy() {
    let now = serde_json::to_string_pretty(&spool_api::openapi_document()).unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(committed(), &now).unwrap();
        return;
    }
    let before = std::fs::read_to_string(committed()).unwrap_or_default();
    if before != now {
        let first = before.lines().zip(now.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "the OpenAPI description drifted from crates/api/openapi/openapi.json (first difference at line {}:\n  committed: {}\n  now:       {})\nrun UPDATE_OPENAPI=1 cargo test -p spool-api --test openapi and commit the file",
            first + 1,
            before.lines().nth(first).unwrap_or(""),
            now.lines().nth(first).unwrap_or("")
        );
    }
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref"
                    && let Some(r) = x.as_str()
                {
                    out.push(r.to_string());
                }
                refs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn every_reference_names_a_component_and_every_operation_is_unique() {
    let doc = spool_api::openapi_document();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 100, "{} references", all.len());
    for r in &all {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}: not a component"));
        assert!(doc["components"]["schemas"].get(name).is_some(), "{r}: no such component");
    }
    let mut ids = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(["get", "post", "put", "patch", "delete"].contains(&method.as_str()), "{method} {path}");
            ids.push(op["operationId"].as_str().unwrap().to_string());
            assert!(op["responses"]["default"].is_object(), "{method} {path}: errors undescribed");
        }
    }
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "an operationId is used twice");
    assert!(n >= 90, "{n} operations");
}
