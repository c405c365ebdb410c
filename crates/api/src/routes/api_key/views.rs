//! The JSON of an API key (contract §2.10).

use serde_json::{Value, json};
use spool_core::ApiKey;
use spool_model::time::rfc3339_ms;

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
