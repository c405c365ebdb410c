//! "Waiting on": why a workflow that has not ended is not moving, computed from the state
//! (`engine-spec/debugging.md`). Every non-terminal import job, prompt run, export and
//! automation has one typed reason, shown as the extension field `waiting_on` in its JSON, as
//! gauges by reason on `/metrics`, and by `spool why <id>`. Each costs O(log n) plus a bounded
//! look at its waiting items.

use crate::State;
use crate::machines::automation::Automation;
use crate::machines::export::{Export, ExportStatus};
use crate::machines::import_job::{FileStatus, ImportJob};
use crate::machines::prompt_run::{PromptRun, TaskStatus};
use crate::{Timer, WorkKey};
use serde_json::{Value, json};
use spool_model::RunTask;
use spool_model::time::rfc3339_ms;

/// Waiting items looked at for the earliest retry timer.
const WAITING_ITEMS_LOOKED_AT_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct WaitingOn {
    /// `listing`, `concurrency_slot`, `storage` (copies or writes in flight), `processor`
    /// (calls in flight), `timer` (a retry, a debounce, the next listing), `storage_unreachable`
    /// (retries of a storage failure), `processor_failing`, `cancel_draining`, `planning`,
    /// `finishing`, `import_job`, `prompt_run`, `paused`, `disabled`.
    pub reason: &'static str,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub detail: Value,
}

impl WaitingOn {
    fn new(reason: &'static str, since_ms: Option<u64>, detail: Value) -> WaitingOn {
        WaitingOn { reason, since_ms, until_ms: None, detail }
    }

    /// The same reason, ending at `until_ms` (a timer's due time).
    fn until(self, until_ms: Option<u64>) -> WaitingOn {
        WaitingOn { until_ms, ..self }
    }

    pub fn json(&self) -> Value {
        json!({
            "reason": self.reason,
            "since": self.since_ms.map(rfc3339_ms),
            "until": self.until_ms.map(rfc3339_ms),
            "detail": self.detail,
        })
    }
}

/// Failure codes of a copy that mean the storage could not be reached or read.
fn is_storage_failure(code: &str) -> bool {
    code.starts_with("source_") || code.starts_with("storage_") || code.contains("unreachable")
}

pub fn of_job(st: &State, j: &ImportJob) -> Option<WaitingOn> {
    if j.status.is_terminal() {
        return None;
    }
    let started = j.by_status.count(FileStatus::Started);
    if j.cancel_requested {
        return Some(WaitingOn::new("cancel_draining", Some(j.updated_at_ms), json!({ "copies_running": started })));
    }
    if !j.scan_done {
        if let Some(error) = &j.scan_error {
            // The listing failed and is retried on a timer (or is being retried now).
            let until =
                st.timer_due.get(&Timer::ImportScanRetry { job_id: j.job_id, attempt: j.scan_failures }).copied();
            return Some(
                WaitingOn::new(
                    "storage_unreachable",
                    j.scan_failing_since_ms,
                    json!({
                        "listing_attempts": j.scan_failures,
                        "files_found": j.file_count,
                        "last_error": { "code": "listing_failed", "message": error },
                    }),
                )
                .until(until),
            );
        }
        return Some(WaitingOn::new("listing", Some(j.created_at_ms), json!({ "files_found": j.file_count })));
    }
    if started > 0 {
        return Some(WaitingOn::new("storage", Some(j.updated_at_ms), json!({ "copies_running": started })));
    }
    let pending = j.by_status.count(FileStatus::Pending);
    if pending > 0 {
        return Some(WaitingOn::new("concurrency_slot", Some(j.updated_at_ms), json!({ "files_pending": pending })));
    }
    let waiting: Vec<u32> = j.files_in(FileStatus::Waiting).take(WAITING_ITEMS_LOOKED_AT_MAX).collect();
    if let Some(first) = waiting.first().and_then(|id| j.files.get(id)) {
        let until = waiting
            .iter()
            .filter_map(|id| j.files.get(id))
            .filter_map(|f| {
                st.timer_due.get(&Timer::ImportFileRetry {
                    job_id: j.job_id,
                    file_id: f.file.file_id,
                    attempt: f.attempts,
                })
            })
            .min()
            .copied();
        let failure = first.failure.as_ref();
        let reason = if failure.is_some_and(|f| is_storage_failure(&f.code)) { "storage_unreachable" } else { "timer" };
        return Some(
            WaitingOn::new(
                reason,
                Some(j.updated_at_ms),
                json!({
                    "files_waiting": j.by_status.count(FileStatus::Waiting),
                    "last_error": failure.map(|f| json!({ "code": f.code, "message": f.message })),
                }),
            )
            .until(until),
        );
    }
    Some(WaitingOn::new("finishing", Some(j.updated_at_ms), json!({})))
}

pub fn of_run(st: &State, r: &PromptRun) -> Option<WaitingOn> {
    if r.status.is_terminal() {
        return None;
    }
    let running = r.tasks.count(TaskStatus::Started);
    if let Some(stop) = &r.stop {
        return Some(WaitingOn::new(
            "cancel_draining",
            Some(stop.requested_at_ms),
            json!({ "calls_in_flight": running }),
        ));
    }
    if running > 0 {
        return Some(WaitingOn::new(
            "processor",
            Some(r.updated_at_ms),
            json!({ "processor": r.settings.processor, "calls_in_flight": running }),
        ));
    }
    let pending = r.tasks.count(TaskStatus::Pending);
    if pending > 0 {
        return Some(WaitingOn::new(
            "concurrency_slot",
            Some(r.updated_at_ms),
            json!({ "processor": r.settings.processor, "tasks_pending": pending }),
        ));
    }
    if !r.unplanned.is_empty() || !r.listing_done {
        return Some(WaitingOn::new(
            if r.listing_done { "planning" } else { "listing" },
            Some(r.updated_at_ms),
            json!({ "videos": r.videos.len(), "unplanned": r.unplanned.len() }),
        ));
    }
    let waiting: Vec<RunTask> = r.tasks.iter(TaskStatus::Waiting).take(WAITING_ITEMS_LOOKED_AT_MAX).collect();
    if !waiting.is_empty() {
        let attempt = |t: &RunTask| match t {
            RunTask::Segment(n) => r.segments.get(*n as usize).map(|s| s.task.attempts),
            RunTask::Video(_) => None,
        };
        let until = waiting
            .iter()
            .filter_map(|t| {
                attempt(t).and_then(|a| {
                    st.timer_due.get(&Timer::PromptTaskRetry { run_id: r.run_id, task: *t, attempt: a }).copied()
                })
            })
            .min();
        let last = waiting.iter().find_map(|t| match t {
            RunTask::Segment(n) => r.segments.get(*n as usize).and_then(|s| s.task.failure.clone()),
            RunTask::Video(_) => None,
        });
        return Some(
            WaitingOn::new(
                if last.is_some() { "processor_failing" } else { "timer" },
                Some(r.updated_at_ms),
                json!({
                    "processor": r.settings.processor,
                    "tasks_waiting": r.tasks.count(TaskStatus::Waiting),
                    "last_error": last.map(|f| json!({ "code": f.code, "message": f.message })),
                }),
            )
            .until(until),
        );
    }
    Some(WaitingOn::new("finishing", Some(r.updated_at_ms), json!({})))
}

pub fn of_export(st: &State, e: &Export) -> Option<WaitingOn> {
    if e.status.is_terminal() {
        return None;
    }
    if e.waiting {
        let until = st.timer_due.get(&Timer::ExportRetry { export_id: e.export_id, attempt: e.attempts }).copied();
        return Some(
            WaitingOn::new(
                "storage_unreachable",
                Some(e.updated_at_ms),
                json!({ "attempts": e.attempts, "last_error": e.error }),
            )
            .until(until.or(Some(e.available_at_ms))),
        );
    }
    Some(match e.status {
        ExportStatus::Processing => {
            WaitingOn::new("storage", e.started_at_ms, json!({ "attempt": e.attempts, "parts_written": e.parts.len() }))
        }
        _ => WaitingOn::new("concurrency_slot", Some(e.created_at_ms), json!({})),
    })
}

pub fn of_automation(st: &State, a: &Automation) -> Option<WaitingOn> {
    use crate::machines::automation::AutomationKind;
    let id = a.automation_id;
    let due = |t: Timer| st.timer_due.get(&t).copied();
    let timer = |which: &str, until: Option<u64>| {
        WaitingOn::new("timer", a.last_listed_at_ms, json!({ "timer": which, "found_objects": a.found.len() }))
            .until(until)
    };
    let running_job = a.last_import_job_id.filter(|j| st.imports.get(j).is_some_and(|j| !j.status.is_terminal()));
    let w = if !a.enabled() {
        WaitingOn::new("disabled", Some(a.updated_at_ms), json!({}))
    } else if let Some(at) = a.paused_at_ms {
        WaitingOn::new("paused", Some(at), json!({}))
    } else if a.kind() == AutomationKind::Export {
        if a.pending_runs.is_empty() {
            WaitingOn::new("run_completion", Some(a.updated_at_ms), json!({}))
        } else {
            WaitingOn::new("storage", Some(a.updated_at_ms), json!({ "runs_to_export": a.pending_runs.len() }))
        }
    } else if a.listing_due {
        WaitingOn::new("listing", a.last_listed_at_ms, json!({ "listing": a.listing }))
    } else if let Some(job) = a.jobs_ended.iter().next() {
        WaitingOn::new("prompt_run", Some(a.updated_at_ms), json!({ "import_job_id": job.to_string() }))
    } else if !a.found.is_empty() {
        timer("debounce", due(Timer::AutomationDebounce { automation_id: id }))
    } else if let Some(job) = running_job {
        WaitingOn::new("import_job", a.last_triggered_at_ms, json!({ "import_job_id": job.to_string() }))
    } else {
        timer("next_listing", due(Timer::AutomationWatch { automation_id: id }))
    };
    Some(w)
}

pub fn of_delivery(st: &State, d: &crate::machines::webhook::Delivery) -> Option<WaitingOn> {
    use crate::machines::webhook::DeliveryStatus as D;
    if matches!(d.status, D::Delivered | D::Failed) {
        return None;
    }
    let hook = st.webhooks.get(&d.webhook_id);
    let detail = json!({
        "webhook_id": d.webhook_id.to_string(),
        "attempts": d.attempts,
        "last_status_code": d.response_status_code,
        "last_error": d.error_message,
    });
    if let Some(h) = hook.filter(|h| h.status != spool_model::WebhookStatus::Active) {
        let reason = if h.status == spool_model::WebhookStatus::Paused { "webhook_paused" } else { "webhook_disabled" };
        return Some(WaitingOn::new(reason, Some(h.updated_at_ms), detail));
    }
    if let (D::Retrying, Some(at)) = (d.status, d.next_retry_at_ms) {
        return Some(WaitingOn::new("timer", d.last_attempt_at_ms, detail).until(Some(at)));
    }
    Some(WaitingOn::new("receiver", d.last_attempt_at_ms.or(Some(d.created_at_ms)), detail))
}

/// What `spool why <id>` shows: the kind, the status and the reason of one workflow, by id.
pub fn of_id(st: &State, raw: &str) -> Result<(&'static str, String, Option<WaitingOn>), String> {
    let unknown = || format!("{raw}: no import job, prompt run, export, delivery or automation has this id");
    if let Ok(id) = raw.parse::<spool_model::ImportJobId>() {
        let j = st.imports.get(&id).ok_or_else(unknown)?;
        return Ok(("import_job", j.status.as_str().to_string(), of_job(st, j)));
    }
    if let Ok(id) = raw.parse::<spool_model::PromptRunId>() {
        let r = st.prompt_runs.get(&id).ok_or_else(unknown)?;
        return Ok(("prompt_run", r.status.as_str().to_string(), of_run(st, r)));
    }
    if let Ok(id) = raw.parse::<spool_model::ExportId>() {
        let e = st.exports.get(&id).ok_or_else(unknown)?;
        return Ok(("export", e.status.as_str().to_string(), of_export(st, e)));
    }
    if let Ok(id) = raw.parse::<spool_model::DeliveryId>() {
        // A delivered one is a row (a state that keeps its rows holds it).
        let d = st.deliveries.get(&id).or_else(|| st.rows.delivery(&id)).ok_or_else(unknown)?;
        return Ok(("delivery", d.status.as_str().to_string(), of_delivery(st, d)));
    }
    if let Ok(id) = raw.parse::<spool_model::AutomationId>() {
        let a = st.automations.get(&id).ok_or_else(unknown)?;
        let status = if a.active() {
            "active"
        } else if a.enabled() {
            "paused"
        } else {
            "off"
        };
        return Ok(("automation", status.to_string(), of_automation(st, a)));
    }
    Err(unknown())
}

/// The workflows that have not ended, counted by (kind, reason): the `/metrics` gauges. It
/// What one aggregate adds to the `spool_waiting` gauges: `(kind, reason, n)`. A job, run,
/// export or automation that has not ended adds 1 under its reason; a webhook adds its pending
/// deliveries, all under one reason (its status decides it). O(log n).
pub fn gauge_of(st: &State, key: WorkKey) -> Option<(&'static str, &'static str, u64)> {
    let one = |kind, w: Option<WaitingOn>| w.map(|w| (kind, w.reason, 1));
    match key {
        WorkKey::Import(id) => one("import_job", of_job(st, st.imports.get(&id)?)),
        WorkKey::PromptRun(id) => one("prompt_run", of_run(st, st.prompt_runs.get(&id)?)),
        WorkKey::Export(id) => one("export", of_export(st, st.exports.get(&id)?)),
        WorkKey::Automation(id) => one("automation", of_automation(st, st.automations.get(&id)?)),
        WorkKey::Webhook(id) => {
            let h = st.webhooks.get(&id)?;
            let first = h.pending.iter().next().and_then(|(_, d)| st.deliveries.get(d))?;
            // Every pending delivery waits on the same thing: they are `Pending` (a retrying one
            // is not pending), so the webhook's status alone tells which.
            let w = of_delivery(st, first)?;
            Some(("delivery", w.reason, h.pending.len() as u64))
        }
        _ => None,
    }
}

/// The aggregates that may add to the gauges ([`gauge_of`]): the work sets, and every
/// automation. Walked once at start; afterwards the runtime updates the aggregates each
/// committed batch touched.
pub fn gauge_keys(st: &State) -> impl Iterator<Item = WorkKey> + '_ {
    st.active_imports
        .iter()
        .map(|id| WorkKey::Import(*id))
        .chain(st.active_runs.iter().map(|id| WorkKey::PromptRun(*id)))
        .chain(st.active_exports.iter().map(|id| WorkKey::Export(*id)))
        .chain(st.automations.keys().map(|id| WorkKey::Automation(*id)))
        .chain(st.webhooks_with_work.iter().map(|id| WorkKey::Webhook(*id)))
}

/// The `spool_waiting` gauges by a walk of every aggregate that may add to them: what the
/// runtime's incrementally kept gauges must equal (checked in debug builds after every batch).
pub fn counts(st: &State) -> std::collections::BTreeMap<(&'static str, &'static str), u64> {
    let mut out = std::collections::BTreeMap::new();
    for (kind, reason, n) in gauge_keys(st).filter_map(|k| gauge_of(st, k)) {
        *out.entry((kind, reason)).or_insert(0) += n;
    }
    out
}
