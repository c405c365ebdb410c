//! The JSON shapes the SDK validates (contract §2.6, §2.10), rendered from the state.

use serde_json::{Value, json};
use spool_core::{ApiKey, Connector, Index};
use spool_model::DeletionStage;
use spool_model::time::rfc3339_ms;

pub fn index(i: &Index) -> Value {
    json!({
        "index_id": i.index_id.to_string(),
        "name": i.name,
        "user_id": i.user_id,
        "created_at": rfc3339_ms(i.created_at_ms),
        "description": null,
        "sort_order": null,
        "is_default": false,
    })
}

pub fn deletion(i: &Index) -> Option<Value> {
    let d = i.deletion.as_ref()?;
    let done = d.stage == DeletionStage::Deleted;
    Some(json!({
        "index_id": i.index_id.to_string(),
        "deletion_id": d.deletion_id.to_string(),
        "status": d.stage.as_str(),
        "retry_after_seconds": if done { Value::Null } else { json!(1) },
        "requested_at": rfc3339_ms(d.requested_at_ms),
        "completed_at": d.finished_at_ms.map(rfc3339_ms),
        "message": if done { "index deleted" } else { "index deletion in progress" },
    }))
}

pub fn api_key(k: &ApiKey, last_used_at_ms: Option<u64>, now_ms: u64) -> Value {
    json!({
        "key_id": k.key_id.to_string(),
        "key_prefix": k.key_prefix,
        "name": k.name,
        "scopes": spool_core::decide::scope_names(&k.scopes),
        "created_at": rfc3339_ms(k.created_at_ms),
        "last_used_at": last_used_at_ms.map(rfc3339_ms),
        "revoked_at": k.revoked_at_ms.map(rfc3339_ms),
        "expires_at": k.expires_at_ms.map(rfc3339_ms),
        "is_active": k.is_active(now_ms),
    })
}

pub fn api_key_with_secret(k: &ApiKey, secret: &str, now_ms: u64) -> Value {
    let mut v = api_key(k, None, now_ms);
    v["key"] = json!(secret);
    v
}

/// A connector, never with its credentials.
pub fn connector(c: &Connector) -> Value {
    let l = &c.location;
    json!({
        "connector_id": c.connector_id.to_string(),
        "name": c.name,
        "provider": c.provider.as_str(),
        "status": c.status(),
        "scopes": c.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "import_mode": c.import_mode.as_str(),
        "export_base_path": c.export_base_path,
        "bucket": l.bucket,
        "region": l.region,
        "endpoint": l.endpoint,
        "storage_account": l.storage_account,
        "container": l.container,
        "gcp_project_id": l.gcp_project_id,
        "root": l.root,
        "created_at": rfc3339_ms(c.created_at_ms),
        "updated_at": rfc3339_ms(c.updated_at_ms),
        "last_tested_at": c.last_test.as_ref().map(|t| rfc3339_ms(t.at_ms)),
        "last_test_result": c.last_test.as_ref().map(|t| if t.success { "success" } else { "failed" }),
        "last_test_error": c.last_test.as_ref().and_then(|t| t.error.clone()),
    })
}
