//! The JSON of an index and its deletion (contract §2.1).

use serde_json::{Value, json};
use spool_core::Index;
use spool_model::DeletionStage;
use spool_model::time::rfc3339_ms;

pub fn index(i: &Index) -> Value {
    json!({
        "index_id": i.index_id.to_string(),
        "name": i.name,
        "user_id": i.user_id,
        "created_at": rfc3339_ms(i.created_at_ms),
        "description": i.description,
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
