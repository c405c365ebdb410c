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
