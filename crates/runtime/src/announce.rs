//! One line in the server's output when a workflow ends (an import job, a prompt run, an
//! export) or a webhook is disabled, with its id and the reason: what a person watching the
//! terminal needs to know without asking the API. A follower of the log, like the search
//! projection's, that starts at the log's end (history is not told again after a restart) and
//! reads each event once more: O(1) an event.

use crate::Runtime;
use spool_model::{DomainEventName as N, Envelope, Event, WebhookStatus};
use std::sync::Arc;

/// Events read at a time.
const READ_BATCH: usize = 2048;

/// What one event tells a person, if anything: `(is a failure, the line)`. `before` is the
/// event just before it in the log (a webhook's disabling follows the delivery attempt that
/// failed last, in the same decision).
pub fn announcement(env: &Envelope, before: Option<&Envelope>) -> Option<(bool, String)> {
    match &env.event {
        Event::DomainEventRaised { name, subject, data_json } => {
            let d: serde_json::Value = serde_json::from_str(data_json).unwrap_or_default();
            let n = |k: &str| d.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
            let why = || {
                let e = d.get("error_message").and_then(serde_json::Value::as_str).unwrap_or("no reason recorded");
                e.chars().take(300).collect::<String>()
            };
            let files = || {
                format!(
                    "{} of {} files imported, {} failed, {} skipped",
                    n("imported"),
                    n("total_files"),
                    n("failed"),
                    n("skipped")
                )
            };
            let segments = || {
                format!(
                    "{} of {} segments, {} failed",
                    n("completed_segments"),
                    n("total_segments"),
                    n("failed_segments")
                )
            };
            let line = match name {
                N::ImportJobCompleted => (false, format!("import job {subject} completed: {}", files())),
                N::ImportJobPartialCompleted => {
                    (true, format!("import job {subject} completed with failures: {}", files()))
                }
                N::ImportJobFailed => (true, format!("import job {subject} failed: {}", why())),
                N::PromptRunCompleted => (false, format!("prompt run {subject} completed: {}", segments())),
                N::PromptRunPartialCompleted => {
                    (true, format!("prompt run {subject} completed with failures: {}", segments()))
                }
                N::PromptRunFailed => (true, format!("prompt run {subject} failed: {}", why())),
                N::PromptRunCancelled => (false, format!("prompt run {subject} cancelled: {}", segments())),
                N::ExportReady => (false, format!("export {subject} is ready")),
                N::ExportFailed => (true, format!("export {subject} failed: {}", why())),
                _ => return None,
            };
            Some(line)
        }
        Event::WebhookUpdated { webhook_id, status: Some(WebhookStatus::Disabled), .. } => {
            let last = match before.map(|b| &b.event) {
                Some(Event::DeliveryAttempted { status_code, error, .. }) => match (status_code, error) {
                    (_, Some(e)) => format!("the last: {}", e.chars().take(300).collect::<String>()),
                    (Some(s), None) => format!("the last answered HTTP {s}"),
                    (None, None) => "the last had no answer".to_string(),
                },
                _ => "the last not in view".to_string(),
            };
            Some((
                true,
                format!(
                    "webhook {webhook_id} disabled after failed deliveries in a row ({last}); set it active again to resume"
                ),
            ))
        }
        _ => None,
    }
}

impl Runtime {
    /// Tells the server's output about workflows that end from now on, until the runtime stops.
    pub(crate) async fn follow_announcements(self: Arc<Self>) {
        let mut stop = self.stopping.subscribe();
        let mut applied = self.watch_applied();
        self.wait_ready().await;
        let mut read_to = self.applied_seq();
        loop {
            let Some(through) = self.events_after(read_to, &mut applied, &mut stop).await else { return };
            let me = self.clone();
            let read = tokio::task::spawn_blocking(move || me.log().read_from(read_to + 1, READ_BATCH)).await;
            let envs = match read {
                Ok(Ok(envs)) => envs,
                _ => {
                    // Nothing is lost by skipping ahead: these lines are a courtesy, the log is
                    // the record.
                    read_to = through;
                    continue;
                }
            };
            if envs.is_empty() {
                read_to = through;
                continue;
            }
            let mut before: Option<&Envelope> = None;
            for env in &envs {
                if env.seq > through {
                    break;
                }
                if let Some((failure, line)) = announcement(env, before) {
                    if failure {
                        tracing::warn!(target: "spool::workflow", "{line}");
                    } else {
                        tracing::info!(target: "spool::workflow", "{line}");
                    }
                }
                before = Some(env);
                read_to = env.seq;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(event: Event) -> Envelope {
        Envelope { seq: 1, stream: "x".into(), at_ms: 0, format_version: 1, event }
    }

    fn domain(name: N, subject: &str, data: serde_json::Value) -> Envelope {
        env(Event::DomainEventRaised { name, subject: subject.into(), data_json: data.to_string() })
    }

    #[test]
    fn a_workflow_that_ends_is_one_line_with_its_id_and_reason() {
        let d = serde_json::json!({"imported": 9, "total_files": 10, "failed": 1, "skipped": 0});
        let (failure, line) = announcement(&domain(N::ImportJobPartialCompleted, "job_1", d), None).unwrap();
        assert!(failure);
        assert_eq!(line, "import job job_1 completed with failures: 9 of 10 files imported, 1 failed, 0 skipped");
        let d = serde_json::json!({"error_message": "the connector is gone"});
        assert_eq!(
            announcement(&domain(N::ExportFailed, "exp_1", d), None).unwrap(),
            (true, "export exp_1 failed: the connector is gone".into())
        );
        let d = serde_json::json!({"completed_segments": 4, "total_segments": 4, "failed_segments": 0});
        assert_eq!(
            announcement(&domain(N::PromptRunCompleted, "run_1", d), None).unwrap(),
            (false, "prompt run run_1 completed: 4 of 4 segments, 0 failed".into())
        );
        assert!(announcement(&domain(N::PromptRunProgress, "run_1", serde_json::json!({})), None).is_none());
    }

    #[test]
    fn a_disabled_webhook_says_what_its_last_delivery_met() {
        let samples = Event::samples();
        let attempt = samples.iter().find(|e| matches!(e, Event::DeliveryAttempted { .. })).cloned().unwrap();
        let Event::DeliveryAttempted { webhook_id, .. } = attempt.clone() else { unreachable!() };
        let disabled = Event::WebhookUpdated {
            webhook_id,
            name: None,
            url: None,
            events: None,
            index_ids: None,
            metadata_json: None,
            status: Some(WebhookStatus::Disabled),
        };
        let (failure, line) = announcement(&env(disabled), Some(&env(attempt))).unwrap();
        assert!(failure);
        assert!(
            line.starts_with(&format!("webhook {webhook_id} disabled after failed deliveries in a row (the last")),
            "{line}"
        );
    }
}
