//! JSON Schema checks of prompts: a schema an operator or user sends must not make the server
//! fetch URLs, read files or backtrack for minutes. `$ref`s that leave the document are refused
//! (no retriever resolves them), and `pattern` / `patternProperties` use the `regex` crate
//! (linear time; no look-around or back-references). `jsonschema` is pinned to one version.

use serde_json::Value;

pub use jsonschema::Validator;

/// Largest schema accepted, as JSON text.
pub const SCHEMA_BYTES_MAX: usize = 64 * 1024;
/// Validation errors reported of one answer.
pub const SCHEMA_ERRORS_MAX: usize = 20;

/// Schema nodes (objects, arrays and values) of a schema with every `$ref` expanded in place:
/// `jsonschema` builds its validator over that expansion, so a few KB of `anyOf`s that each
/// refer twice to the level below would take gigabytes. Counted before compiling; past it, 422.
pub const SCHEMA_EXPANDED_NODES_MAX: u64 = 50_000;
/// Steps the expansion count itself may take (each node walked once per distinct `$ref` target).
pub const SCHEMA_EXPANSION_STEPS_MAX: u64 = 2_000_000;

/// Keywords that move the base of a reference or refer dynamically: with them a `#/…`
/// reference could resolve elsewhere than the count assumes, so they are refused.
const REFUSED_KEYWORDS: [&str; 5] = ["$dynamicRef", "$recursiveRef", "$dynamicAnchor", "$recursiveAnchor", "$anchor"];

/// The size of a schema with its references expanded, within the budgets; `Err` names the
/// reason for the 422.
pub fn check_expansion(schema: &Value) -> Result<u64, String> {
    struct Count<'a> {
        root: &'a Value,
        memo: std::collections::HashMap<String, u64>,
        stack: std::collections::HashSet<String>,
        steps: u64,
    }
    fn resolve<'a>(root: &'a Value, reference: &str) -> Result<&'a Value, String> {
        let Some(fragment) = reference.strip_prefix('#') else {
            return Err(format!(
                "$ref {reference:?} is outside the schema; Spool resolves references inside the schema only, as #/json/pointer"
            ));
        };
        let decoded =
            percent_decode(fragment).ok_or_else(|| format!("$ref {reference:?} is not a valid JSON pointer"))?;
        if !decoded.is_empty() && !decoded.starts_with('/') {
            return Err(format!("$ref {reference:?}: Spool resolves #/json/pointer references only (no anchors)"));
        }
        root.pointer(&decoded).ok_or_else(|| format!("$ref {reference:?} points to nothing in the schema"))
    }
    fn percent_decode(s: &str) -> Option<String> {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).ok()
    }
    impl Count<'_> {
        fn size(&mut self, v: &Value, top: bool) -> Result<u64, String> {
            self.steps += 1;
            if self.steps > SCHEMA_EXPANSION_STEPS_MAX {
                return Err(format!(
                    "json_schema's references take more than {SCHEMA_EXPANSION_STEPS_MAX} steps to expand; simplify it"
                ));
            }
            let mut n: u64 = 1;
            match v {
                Value::Object(map) => {
                    for (k, child) in map {
                        match (k.as_str(), child) {
                            ("$ref", Value::String(r)) => n = n.saturating_add(self.reference(r)?),
                            ("$id", Value::String(_)) if !top => {
                                return Err("json_schema: `$id` is allowed at the top of the schema only".into());
                            }
                            (kw, Value::String(_)) if REFUSED_KEYWORDS.contains(&kw) => {
                                return Err(format!("json_schema: `{kw}` is not supported"));
                            }
                            _ => n = n.saturating_add(self.size(child, false)?),
                        }
                        if n > SCHEMA_EXPANDED_NODES_MAX {
                            return Ok(n);
                        }
                    }
                }
                Value::Array(items) => {
                    for child in items {
                        n = n.saturating_add(self.size(child, false)?);
                        if n > SCHEMA_EXPANDED_NODES_MAX {
                            return Ok(n);
                        }
                    }
                }
                _ => {}
            }
            Ok(n)
        }
        fn reference(&mut self, r: &str) -> Result<u64, String> {
            if let Some(n) = self.memo.get(r) {
                return Ok(*n);
            }
            // A reference to a schema being expanded is recursion: validators follow it
            // lazily, per instance level, so it costs one node here.
            if !self.stack.insert(r.to_string()) {
                return Ok(1);
            }
            let target = resolve(self.root, r)?;
            let n = self.size(target, std::ptr::eq(target, self.root));
            self.stack.remove(r);
            let n = n?;
            self.memo.insert(r.to_string(), n);
            Ok(n)
        }
    }
    let mut c = Count { root: schema, memo: Default::default(), stack: Default::default(), steps: 0 };
    let n = c.size(schema, true)?;
    if n > SCHEMA_EXPANDED_NODES_MAX {
        return Err(format!(
            "json_schema expands to more than {SCHEMA_EXPANDED_NODES_MAX} schema nodes once its $refs are followed; reuse fewer references"
        ));
    }
    Ok(n)
}

/// Refuses every remote or file `$ref`.
struct NoRetrieval;

impl jsonschema::Retrieve for NoRetrieval {
    fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("$ref {uri} is outside the schema; Spool resolves references inside the schema only").into())
    }
}

/// Compile a schema: an object, within [`SCHEMA_BYTES_MAX`], valid JSON Schema.
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    if !schema.is_object() {
        return Err("json_schema must be a JSON object".into());
    }
    let size = schema.to_string().len();
    if size > SCHEMA_BYTES_MAX {
        return Err(format!("json_schema is {size} bytes; at most {SCHEMA_BYTES_MAX}"));
    }
    check_expansion(schema)?;
    jsonschema::options()
        .with_retriever(NoRetrieval)
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(schema)
        .map_err(|e| format!("json_schema is not a valid JSON Schema: {e}"))
}

/// Check a schema given as JSON text.
pub fn check_text(text: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("json_schema is not JSON: {e}"))?;
    compile(&v).map(|_| ())
}

/// Validate an answer: `Ok` or the validator's errors, each `<path>: <message>` (at most
/// [`SCHEMA_ERRORS_MAX`]).
pub fn validate(validator: &jsonschema::Validator, instance: &Value) -> Result<(), Vec<String>> {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .take(SCHEMA_ERRORS_MAX)
        .map(|e| {
            let path = e.instance_path().to_string();
            format!("{}: {e}", if path.is_empty() { "/" } else { &path })
        })
        .collect();
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Properties at the top of a schema (`PromptUsageStats.schema_properties_count`).
pub fn properties_count(text: &str) -> usize {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("properties").and_then(|p| p.as_object()).map(|p| p.len()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_schema_that_points_outside_itself_is_refused_not_fetched() {
        for r in ["http://127.0.0.1:9/schema.json", "file:///etc/passwd", "https://example.com/s.json#/a"] {
            let s = json!({ "type": "object", "properties": { "a": { "$ref": r } } });
            let e = compile(&s).err().unwrap_or_default();
            assert!(!e.is_empty(), "{r} compiled");
        }
        // References inside the document still work.
        let inner = json!({ "$defs": { "n": { "type": "integer" } }, "type": "object", "properties": { "a": { "$ref": "#/$defs/n" } } });
        let v = compile(&inner).unwrap();
        assert!(validate(&v, &json!({ "a": 1 })).is_ok());
        assert!(validate(&v, &json!({ "a": "x" })).is_err());
    }

    /// Levels of `anyOf` each referring twice to the level below: 2^levels nodes expanded.
    fn bomb(levels: usize) -> Value {
        let mut defs = serde_json::Map::new();
        defs.insert("l0".into(), json!({ "type": "string" }));
        for i in 1..=levels {
            let below = format!("#/$defs/l{}", i - 1);
            defs.insert(format!("l{i}"), json!({ "anyOf": [{ "$ref": below }, { "$ref": below }] }));
        }
        json!({ "$defs": defs, "type": "object", "properties": { "a": { "$ref": format!("#/$defs/l{levels}") } } })
    }

    #[test]
    fn exponentially_expanding_references_are_refused_before_compiling() {
        for levels in [16, 29, 64] {
            let Err(e) = compile(&bomb(levels)) else { panic!("{levels} levels compiled") };
            assert!(e.contains("expands to more than"), "{e}");
        }
        // A few levels stay well within the budget and validate as before.
        let v = compile(&bomb(4)).unwrap();
        assert!(validate(&v, &json!({ "a": "x" })).is_ok());
        assert!(validate(&v, &json!({ "a": 1 })).is_err());
    }

    #[test]
    fn recursive_references_cost_one_node_and_still_validate() {
        let tree = json!({
            "$defs": { "node": { "type": "object", "properties": { "kids": { "type": "array", "items": { "$ref": "#/$defs/node" } } } } },
            "$ref": "#/$defs/node"
        });
        assert!(check_expansion(&tree).unwrap() < 30);
        let v = compile(&tree).unwrap();
        assert!(validate(&v, &json!({ "kids": [{ "kids": [] }] })).is_ok());
        assert!(validate(&v, &json!({ "kids": [{ "kids": 3 }] })).is_err());
    }

    #[test]
    fn references_that_could_resolve_elsewhere_are_refused() {
        for s in [
            json!({ "$defs": { "a": { "$id": "x", "type": "string" } }, "$ref": "#/$defs/a" }),
            json!({ "$defs": { "a": { "$anchor": "x" } }, "$ref": "#x" }),
            json!({ "$dynamicRef": "#meta" }),
            json!({ "$ref": "#/$defs/missing" }),
        ] {
            assert!(compile(&s).is_err(), "{s}");
        }
        // A property named `$id` or `$ref` is data, not a keyword.
        let ok = json!({ "$id": "https://example.com/s", "type": "object", "properties": { "$id": { "type": "string" }, "$ref": { "type": "string" } } });
        assert!(compile(&ok).is_ok());
    }

    #[test]
    fn patterns_use_a_linear_engine() {
        // Back-references and look-arounds need backtracking: refused.
        assert!(compile(&json!({ "type": "string", "pattern": "(a)\\1" })).is_err());
        assert!(compile(&json!({ "type": "string", "pattern": "a(?=b)" })).is_err());
        // The classic catastrophic pattern runs in linear time.
        let v = compile(&json!({ "type": "string", "pattern": "^(a+)+$" })).unwrap();
        let long = "a".repeat(50_000) + "!";
        assert!(validate(&v, &json!(long)).is_err());
    }

    #[test]
    fn errors_name_the_path() {
        let v = compile(&json!({ "type": "object", "required": ["n"], "properties": { "n": { "type": "integer" } } }))
            .unwrap();
        let e = validate(&v, &json!({ "n": "x" })).unwrap_err();
        assert!(e[0].starts_with("/n: "), "{e:?}");
        assert!(compile(&json!([1])).is_err());
        assert!(compile(&json!({ "type": 7 })).is_err());
    }
}
