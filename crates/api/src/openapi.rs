//! The OpenAPI description, generated from the route table the router is built from
//! (`routes::api_ops`): every `/api/v2` route is one [`Op`] holding both its handler and its
//! description, so a route cannot exist without being described, nor be described without
//! existing. Served at `GET /api/v2/openapi.json`; a committed copy
//! (`crates/api/openapi/openapi.json`) is compared with it by `cargo test`, so drift fails CI.
//!
//! Response schemas are the official SDK's models (`crates/api/openapi/sdk-schemas.json`,
//! written from the pinned `videovector` package by `scripts/openapi-sdk-schemas.py`): a
//! response matching its schema is one the SDK's strict validation accepts. Routes the SDK does
//! not call (automations, admin, extensions) have schemas of their own here. Every error is the
//! contract's envelope (`default` response, `ErrorEnvelope`).

use serde_json::{Map, Value, json};

/// A response body.
#[derive(Clone, Copy)]
pub enum Resp {
    /// One SDK model (a component name).
    Model(&'static str),
    /// A bare array of one model.
    Array(&'static str),
    /// The cursor page envelope `{data: [model], pagination}` (contract §3.1).
    Page(&'static str),
    /// A JSON array of strings.
    Strings,
    /// A JSON value described by a schema of this module ([`local_schema`]).
    Local(&'static str),
    /// Bytes of any JSON (an export artifact).
    AnyJson,
    /// `text/event-stream`.
    Events,
    /// Newline-delimited JSON (a bundle).
    NdJson,
}

/// A request body.
#[derive(Clone, Copy)]
pub enum Body {
    None,
    /// JSON of this local schema; `required` false when the route also takes no body.
    Json {
        schema: &'static str,
        required: bool,
    },
    /// `multipart/form-data`.
    Multipart,
}

/// A query parameter.
#[derive(Clone, Copy)]
pub struct Q {
    pub name: &'static str,
    pub kind: QKind,
}

#[derive(Clone, Copy)]
pub enum QKind {
    Str,
    Bool,
    /// An integer within bounds.
    Int(u64, u64),
}

pub const fn q(name: &'static str, kind: QKind) -> Q {
    Q { name, kind }
}

/// The description of one operation.
#[derive(Clone, Copy)]
pub struct Doc {
    pub method: &'static str,
    pub path: &'static str,
    pub id: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub ok: u16,
    pub resp: Resp,
    pub body: Body,
    pub query: &'static [Q],
    /// Answered without a key.
    pub public: bool,
}

impl Doc {
    pub const fn new(method: &'static str, path: &'static str, id: &'static str) -> Doc {
        Doc {
            method,
            path,
            id,
            tag: "",
            summary: "",
            ok: 200,
            resp: Resp::Local("Object"),
            body: Body::None,
            query: &[],
            public: false,
        }
    }
}

fn component(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn response_schema(r: Resp) -> (&'static str, Value) {
    match r {
        Resp::Model(m) | Resp::Local(m) => ("application/json", component(m)),
        Resp::Array(m) => ("application/json", json!({ "type": "array", "items": component(m) })),
        Resp::Page(m) => (
            "application/json",
            json!({
                "type": "object",
                "required": ["data", "pagination"],
                "properties": { "data": { "type": "array", "items": component(m) }, "pagination": component("PaginationMeta") },
            }),
        ),
        Resp::Strings => ("application/json", json!({ "type": "array", "items": { "type": "string" } })),
        Resp::AnyJson => ("application/json", json!({})),
        Resp::Events => ("text/event-stream", json!({ "type": "string" })),
        Resp::NdJson => ("application/x-ndjson", json!({ "type": "string" })),
    }
}

fn operation(d: &Doc) -> Value {
    let mut params: Vec<Value> = Vec::new();
    let mut rest = d.path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
        let name = &rest[open + 1..close];
        params.push(json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }));
        rest = &rest[(close + 1).min(rest.len())..];
    }
    for p in d.query {
        let schema = match p.kind {
            QKind::Str => json!({ "type": "string" }),
            QKind::Bool => json!({ "type": "boolean" }),
            QKind::Int(min, max) => json!({ "type": "integer", "minimum": min, "maximum": max }),
        };
        params.push(json!({ "name": p.name, "in": "query", "required": false, "schema": schema }));
    }
    let (ctype, schema) = response_schema(d.resp);
    let ok = json!({ "description": "success", "content": { ctype: { "schema": schema } } });
    let mut responses = Map::new();
    responses.insert(d.ok.to_string(), ok.clone());
    // A replayed or unchanged request may answer another 2xx with the same body.
    responses.insert("2XX".into(), ok);
    responses.insert(
        "default".into(),
        json!({
            "description": "an error, in the contract's envelope",
            "content": { "application/json": { "schema": component("ErrorEnvelope") } },
        }),
    );
    let mut op = json!({
        "operationId": d.id,
        "tags": [d.tag],
        "summary": d.summary,
        "parameters": params,
        "responses": responses,
    });
    match d.body {
        Body::None => {}
        Body::Json { schema, required } => {
            op["requestBody"] =
                json!({ "required": required, "content": { "application/json": { "schema": component(schema) } } });
        }
        Body::Multipart => {
            op["requestBody"] = json!({
                "required": true,
                "content": { "multipart/form-data": { "schema": { "type": "object", "additionalProperties": true } } },
            });
        }
    }
    if d.public {
        op["security"] = json!([]);
    }
    op
}

/// The whole description. Paths in the table's order; keys sorted (serde_json's map), so the
/// text is stable for the committed copy.
pub fn document(ops: &[Doc]) -> Value {
    let mut paths = Map::new();
    for d in ops {
        let item = paths.entry(d.path.to_string()).or_insert_with(|| json!({}));
        item[d.method] = operation(d);
    }
    let sdk: Value = serde_json::from_str(SDK_SCHEMAS).unwrap_or_else(|_| json!({ "schemas": {} }));
    let mut schemas = sdk["schemas"].as_object().cloned().unwrap_or_default();
    for (name, schema) in local_schemas() {
        schemas.insert(name.to_string(), schema);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Spool",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The workflow layer of the VideoVector API v2, self-hosted. Response schemas are the official SDK's models (videovector 2.0.0).",
        },
        "servers": [{ "url": "/api/v2" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "An API key (sk_…)" } },
        },
    })
}

/// The SDK's model schemas (see the module's doc).
const SDK_SCHEMAS: &str = include_str!("../openapi/sdk-schemas.json");

fn obj(required: &[&str], props: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": props })
}

fn s() -> Value {
    json!({ "type": "string" })
}

fn opt_s() -> Value {
    json!({ "type": ["string", "null"] })
}

/// Schemas of request bodies, and of responses the SDK has no model for.
fn local_schemas() -> Vec<(&'static str, Value)> {
    let strings = json!({ "type": "array", "items": { "type": "string" } });
    let preset = obj(
        &["prompt_id"],
        json!({
            "prompt_id": s(),
            "video_segmentation_type": { "enum": ["smart", "fixed", "content_aware"] },
            "audio_segmentation_type": { "enum": ["fixed", "content_aware"] },
            "video_segment_duration": { "type": "integer", "minimum": 1, "maximum": 300 },
            "audio_segment_duration": { "type": "integer", "minimum": 1, "maximum": 300 },
            "processing_model": s(),
        }),
    );
    let automation = json!({
        "type": "object",
        "required": ["automation_id", "index_id", "type", "enabled", "paused", "created_at", "updated_at", "waiting_for"],
        "properties": {
            "automation_id": s(), "index_id": s(), "type": { "enum": ["import", "export"] },
            "enabled": { "type": "boolean" }, "paused": { "type": "boolean" }, "paused_at": opt_s(),
            "created_at": s(), "updated_at": s(), "last_triggered_at": opt_s(), "last_error": opt_s(),
            "next_due_at": opt_s(), "waiting_for": s(), "waiting_on": { "type": ["object", "null"] },
            "connector_id": s(), "destination_connector_id": s(), "prompt_preset": { "type": "object" },
        },
    });
    let log_page = obj(
        &["events"],
        json!({
            "events": { "type": "array", "items": obj(&["seq", "stream", "at", "kind", "event"], json!({
                "seq": { "type": "integer" }, "stream": s(), "at": s(), "kind": s(), "event": {},
            })) },
            "next_from": { "type": ["integer", "null"] },
        }),
    );
    vec![
        (
            "ErrorEnvelope",
            obj(
                &["error"],
                json!({ "error": obj(&["code", "message", "details", "request_id"], json!({
                    "code": s(), "message": s(), "details": {}, "request_id": s(),
                })) }),
            ),
        ),
        ("Object", json!({ "type": "object" })),
        ("AnyBody", json!({})),
        (
            "CreateIndex",
            obj(
                &["name"],
                json!({ "name": { "type": "string", "minLength": 1, "maxLength": 255 }, "description": s() }),
            ),
        ),
        (
            "CreatePrompt",
            obj(
                &["name", "prompt_text", "json_schema"],
                json!({
                    "name": { "type": "string", "minLength": 3, "maxLength": 100 },
                    "description": { "type": "string", "maxLength": 500 },
                    "prompt_text": { "type": "string", "minLength": 10, "maxLength": 5000 },
                    "json_schema": { "type": "object" },
                    "video_level": { "type": ["object", "null"] },
                    "semantic_indexing": { "type": ["object", "null"] },
                }),
            ),
        ),
        (
            "UpdatePrompt",
            json!({ "type": "object", "properties": {
                "name": s(), "description": s(), "prompt_text": s(), "json_schema": { "type": "object" },
                "video_level": { "type": ["object", "null"] }, "clear_video_level": { "type": "boolean" },
            } }),
        ),
        (
            "TestSchema",
            obj(&["json_schema", "sample_data"], json!({ "json_schema": { "type": "object" }, "sample_data": {} })),
        ),
        (
            "ExecuteRun",
            obj(
                &["prompt_id", "target"],
                json!({
                    "prompt_id": s(),
                    "target": obj(&["type"], json!({ "type": { "enum": ["index", "videos", "playground"] }, "index_id": s(), "video_ids": strings })),
                    "video_segmentation_type": { "enum": ["smart", "fixed", "content_aware"] },
                    "audio_segmentation_type": { "enum": ["fixed", "content_aware"] },
                    "video_segment_duration": { "type": "integer", "minimum": 1, "maximum": 300 },
                    "audio_segment_duration": { "type": "integer", "minimum": 1, "maximum": 300 },
                    "enable_transcription": { "type": "boolean" },
                    "enable_image_embedding": { "type": "boolean" },
                    "processing_model": s(),
                }),
            ),
        ),
        (
            "CreateApiKey",
            obj(
                &["name"],
                json!({
                    "name": { "type": "string", "minLength": 1, "maxLength": 100 },
                    "scopes": { "type": "array", "items": { "enum": ["search", "read", "write", "admin"] } },
                    "expires_in_days": { "type": "integer", "minimum": 1, "maximum": 365 },
                }),
            ),
        ),
        ("VideoIds", obj(&["video_ids"], json!({ "video_ids": strings }))),
        (
            "BatchSegments",
            json!({ "type": "object", "properties": { "video_ids": strings, "targets": { "type": "array" } } }),
        ),
        (
            "SignedUrlRequest",
            obj(&["video_id"], json!({ "video_id": s(), "expires_in_seconds": { "type": "integer" } })),
        ),
        (
            "ImportRetry",
            json!({ "type": "object", "properties": { "files": { "type": "array", "items": { "type": "object" } } } }),
        ),
        (
            "CreateExport",
            json!({ "type": "object", "properties": { "prompt_run_ids": strings, "destination_connector_id": s(), "destination_subpath": s() } }),
        ),
        (
            "WebhookPatch",
            json!({ "type": "object", "properties": {
                "name": s(), "url": s(), "events": strings, "index_ids": strings,
                "status": { "enum": ["active", "paused"] }, "metadata": { "type": "object" },
            } }),
        ),
        (
            "ConnectorPatch",
            json!({ "type": "object", "properties": {
                "name": s(), "scopes": { "type": "array", "items": { "enum": ["import", "export"] } },
                "import_mode": { "enum": ["all", "new_only"] }, "export_base_path": opt_s(),
            } }),
        ),
        (
            "Browse",
            json!({ "type": "object", "properties": { "prefix": s(), "pattern": s(), "recursive": { "type": "boolean" } } }),
        ),
        (
            "ImportAutomationBody",
            obj(
                &["connector_id", "prompt_preset"],
                json!({
                    "connector_id": s(), "source_prefix": s(), "file_pattern": s(), "recursive": { "type": "boolean" },
                    "debounce_interval": s(), "enabled": { "type": "boolean" }, "prompt_preset": preset,
                }),
            ),
        ),
        (
            "ExportAutomationBody",
            obj(
                &["destination_connector_id"],
                json!({ "destination_connector_id": s(), "destination_subpath": s(), "enabled": { "type": "boolean" } }),
            ),
        ),
        ("Automation", automation),
        ("ClockAdvance", obj(&["ms"], json!({ "ms": { "type": "integer", "minimum": 0 } }))),
        ("ClockNow", obj(&["now_ms", "now"], json!({ "now_ms": { "type": "integer" }, "now": s() }))),
        ("Ready", obj(&["status"], json!({ "status": s() }))),
        ("LogPage", log_page),
    ]
}
