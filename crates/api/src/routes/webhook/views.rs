//! The JSON of a webhook (never its secret) and of a delivery (contract §2.5).

use serde_json::{Value, json};
use spool_core::machines::webhook::{Delivery, Webhook};
use spool_model::time::rfc3339_ms;

pub fn webhook(w: &Webhook) -> Value {
    json!({
        "webhook_id": w.webhook_id.to_string(),
        "name": w.name,
        "url": w.url,
        "events": w.events,
        "status": w.status.as_str(),
        "index_ids": w.index_ids.as_ref().map(|v| v.iter().map(|i| i.to_string()).collect::<Vec<_>>()),
        "failure_count": w.failure_count,
        "last_failure_at": w.last_failure_at_ms.map(rfc3339_ms),
        "last_success_at": w.last_success_at_ms.map(rfc3339_ms),
        "created_at": rfc3339_ms(w.created_at_ms),
        "updated_at": rfc3339_ms(w.updated_at_ms),
        "metadata": w.metadata_json.as_deref().and_then(|m| serde_json::from_str::<Value>(m).ok()),
        "bulk_retry": match &w.bulk_retry {
            Some(b) => json!({ "status": "running", "retrying": b.status.as_str(), "retried": b.retried }),
            None => match w.last_bulk_retried {
                Some(n) => json!({ "status": "finished", "retried": n }),
                None => Value::Null,
            },
        },
    })
}

/// A delivery's JSON with its `waiting_on` while it is not delivered or failed.
pub fn delivery_in(st: &spool_core::State, d: &Delivery, with_payload: bool) -> Value {
    let mut v = delivery(d, with_payload);
    if let Some(w) = spool_core::waiting::of_delivery(st, d) {
        v["waiting_on"] = w.json();
    }
    v
}

pub fn delivery(d: &Delivery, with_payload: bool) -> Value {
    let mut v = json!({
        "delivery_id": d.delivery_id.to_string(),
        "webhook_id": d.webhook_id.to_string(),
        "event_type": d.event_type,
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "sequence": d.sequence,
        "last_attempt_at": d.last_attempt_at_ms.map(rfc3339_ms),
        "next_retry_at": d.next_retry_at_ms.map(rfc3339_ms),
        "response_status_code": d.response_status_code,
        "response_body": d.response_body,
        "error_message": d.error_message,
        "created_at": rfc3339_ms(d.created_at_ms),
        "completed_at": d.completed_at_ms.map(rfc3339_ms),
    });
    if with_payload {
        v["payload"] = serde_json::from_str::<Value>(&d.payload_json).unwrap_or(Value::Null);
    }
    v
}
