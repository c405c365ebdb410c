//! The JSON of a connector (contract §2.2); never its credentials.

use serde_json::{Value, json};
use spool_core::Connector;
use spool_model::time::rfc3339_ms;

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
