//! The JSON of an automation (contract §5, its recommendations; engine-spec/api.md).

use super::*;
use serde_json::{Value, json};
use spool_model::time::rfc3339_ms;

pub fn debounce_name(ms: u64) -> &'static str {
    DEBOUNCE_INTERVALS.iter().find(|(_, m)| *m == ms).map_or("", |(n, _)| n)
}

/// `waiting_for`, the older, plainer name of the automation's `waiting_on` (one derivation,
/// `crate::waiting::of_automation`): `enabled`, `resume`, `listing`, `prompt_run`, `debounce`,
/// `import_job`, `next_listing` for an import automation; `a completed prompt run of the index`
/// or `exports of completed runs` for an export automation.
fn waiting_for(st: &crate::State, a: &Automation) -> &'static str {
    let Some(w) = crate::waiting::of_automation(st, a) else { return "enabled" };
    match w.reason {
        "disabled" => "enabled",
        "paused" => "resume",
        "timer" if w.detail["timer"] == "debounce" => "debounce",
        "timer" => "next_listing",
        "storage" => "exports of completed runs",
        "run_completion" => "a completed prompt run of the index",
        other => other,
    }
}

/// When the automation's next timer is due: the debounce if armed, else the next listing.
fn next_due_ms(st: &crate::State, a: &Automation) -> Option<u64> {
    let id = a.automation_id;
    st.timer_due
        .get(&crate::Timer::AutomationDebounce { automation_id: id })
        .or_else(|| st.timer_due.get(&crate::Timer::AutomationWatch { automation_id: id }))
        .copied()
}

pub fn automation(st: &crate::State, a: &Automation) -> Value {
    let mut v = match &a.config {
        AutomationConfig::Import {
            enabled,
            connector_id,
            source_prefix,
            file_pattern,
            recursive,
            debounce_ms,
            prompt_id,
            preset,
        } => json!({
            "enabled": enabled,
            "connector_id": connector_id.to_string(),
            "source_prefix": source_prefix,
            "file_pattern": file_pattern,
            "recursive": recursive,
            "debounce_interval": debounce_name(*debounce_ms),
            "prompt_preset": {
                "prompt_id": prompt_id.to_string(),
                "video_segmentation_type": preset.video_segmentation.as_str(),
                "audio_segmentation_type": preset.audio_segmentation.as_str(),
                "video_segment_duration": preset.video_segment_s,
                "audio_segment_duration": preset.audio_segment_s,
                "processing_model": preset.processing_model,
                "enable_transcription": preset.enable_transcription,
                "enable_image_embedding": preset.enable_image_embedding,
            },
            "last_import_job_id": a.last_import_job_id.map(|j| j.to_string()),
            "watching": a.active(),
            "found_objects": a.found.len(),
            "manifest_objects": a.manifest.len(),
            "last_listed_at": a.last_listed_at_ms.map(rfc3339_ms),
            "listing_failures": a.listing_failures,
            "waiting_for": waiting_for(st, a),
        }),
        AutomationConfig::Export { enabled, connector_id, subpath } => json!({
            "enabled": enabled,
            "destination_connector_id": connector_id.to_string(),
            "destination_subpath": subpath,
            "last_export_id": a.last_export_id.map(|e| e.to_string()),
            "pending_run_ids": a.pending_runs.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            "exported_runs": a.exported_runs.len(),
            "waiting_for": waiting_for(st, a),
        }),
    };
    v["automation_id"] = json!(a.automation_id.to_string());
    v["index_id"] = json!(a.index_id.to_string());
    v["type"] = json!(a.kind().as_str());
    v["paused"] = json!(a.paused_at_ms.is_some());
    v["paused_at"] = json!(a.paused_at_ms.map(rfc3339_ms));
    v["created_at"] = json!(rfc3339_ms(a.created_at_ms));
    v["updated_at"] = json!(rfc3339_ms(a.updated_at_ms));
    v["last_triggered_at"] = json!(a.last_triggered_at_ms.map(rfc3339_ms));
    v["last_error"] = json!(a.last_error);
    v["next_due_at"] = json!(next_due_ms(st, a).map(rfc3339_ms));
    v["waiting_on"] = json!(crate::waiting::of_automation(st, a).map(|w| w.json()));
    v
}
