//! Executors, one file per machine with effects: run an effect and report its outcome as
//! commands. Effects run at least once; `decide` drops outcomes that no longer fit, so running
//! one twice is harmless. Effect resources belong here, not to the runtime: the media store
//! (written by imports, purged by index deletion), the import slots, the connector stores.

mod automation;
pub(crate) mod connector;
pub mod export;
pub(crate) mod import_job;
pub(crate) mod index;
pub mod prompt_run;
pub(crate) mod video;
pub mod webhook;

use crate::Runtime;
use spool_core::{Command, Effect};
use std::sync::Arc;

/// The executors' resources.
pub(crate) struct Executors {
    /// Where imported media goes (`<data-dir>/media`).
    pub media: spool_storage::Store,
    /// Uploads received whole, waiting for their job (`<data-dir>/uploads`).
    pub uploads: spool_storage::Store,
    pub imports: import_job::ImportExecutor,
    pub connectors: connector::ConnectorStores,
    pub webhooks: webhook::WebhookExecutor,
    pub prompt_runs: prompt_run::PromptRunExecutor,
}

impl Runtime {
    pub(crate) async fn run_effect(self: &Arc<Self>, effect: &Effect) {
        let result = match effect {
            Effect::Video(spool_core::VideoEffect::DrainVideo { video_id, deletion_id }) => {
                self.drain_video(video_id, deletion_id).await
            }
            Effect::Video(spool_core::VideoEffect::PurgeVideo { video_id, deletion_id }) => {
                self.purge_video(video_id, deletion_id).await
            }
            Effect::Webhook(spool_core::WebhookEffect::Deliver { delivery_id, attempt, .. }) => {
                self.deliver(delivery_id, *attempt).await
            }
            Effect::Webhook(spool_core::WebhookEffect::BulkRetryStep { webhook_id }) => self
                .execute(Command::Webhook(spool_core::WebhookCommand::RunBulkRetryStep { webhook_id: *webhook_id }))
                .await
                .map(|_| ()),
            Effect::Index(spool_core::IndexEffect::DrainIndex { index_id, deletion_id }) => {
                self.drain_index(index_id, deletion_id).await
            }
            Effect::Index(spool_core::IndexEffect::PurgeIndex { index_id, deletion_id }) => {
                self.purge_index(index_id, deletion_id).await
            }
            Effect::Import(spool_core::ImportEffect::ScanImport { job_id }) => self.scan(job_id).await,
            Effect::Import(spool_core::ImportEffect::ImportFile { job_id, file_id, attempt }) => {
                self.import_file(job_id, *file_id, *attempt).await
            }
            Effect::Import(spool_core::ImportEffect::FinishImportJob { job_id }) => self
                .execute(Command::Import(spool_core::ImportCommand::RecordImportJobFinished { job_id: *job_id }))
                .await
                .map(|_| ()),
            Effect::PromptRun(e) => self.run_prompt_effect(e).await,
            Effect::Export(spool_core::ExportEffect::RunExport { export_id, attempt }) => {
                self.run_export(export_id, *attempt).await
            }
            Effect::Automation(spool_core::AutomationEffect::ExportRun { automation_id, run_id }) => self
                .execute(Command::Automation(spool_core::AutomationCommand::ExportRun {
                    automation_id: *automation_id,
                    run_id: *run_id,
                }))
                .await
                .map(|_| ()),
            Effect::Automation(spool_core::AutomationEffect::Watch { automation_id, listing }) => {
                self.watch(automation_id, *listing).await
            }
            Effect::Automation(spool_core::AutomationEffect::StartRun { automation_id, job_id }) => self
                .execute(Command::Automation(spool_core::AutomationCommand::StartRun {
                    automation_id: *automation_id,
                    job_id: *job_id,
                }))
                .await
                .map(|_| ()),
        };
        match result {
            // Its outcome cannot be decided (a panic, or past a bound): deciding it again would
            // fail again, at every offer and every restart. Its failure is recorded instead.
            Err(crate::RuntimeError::Poisoned { code, message }) => {
                tracing::error!(code, error = %message, ?effect, "effect outcome cannot be decided; it fails");
                self.give_up_effect(effect, code, message).await;
            }
            Err(e) => tracing::warn!(error = %e, ?effect, "effect outcome not recorded; it runs again later"),
            Ok(()) => {}
        }
    }

    /// The command that records an effect given up after too many panics, if its machine has
    /// one (a job or file failure with `internal_error`).
    pub(crate) fn give_up_command(effect: &Effect, code: &str, message: String) -> Vec<Command> {
        match effect {
            Effect::Import(e) => import_job::give_up(e, code, message),
            Effect::PromptRun(spool_core::PromptRunEffect::RunTask { run_id, task, attempt }) => {
                let failure = spool_model::TaskFailure {
                    stage: "processing".into(),
                    code: code.into(),
                    message,
                    retryable: false,
                    error_paths: Vec::new(),
                };
                use spool_core::PromptRunCommand as C;
                vec![
                    Command::PromptRun(C::StartTask { run_id: *run_id, task: *task, attempt: *attempt }),
                    Command::PromptRun(C::RecordTaskFailed {
                        run_id: *run_id,
                        task: *task,
                        attempt: *attempt,
                        failure,
                        usage: None,
                    }),
                ]
            }
            Effect::PromptRun(spool_core::PromptRunEffect::PlanVideo { run_id, video }) => {
                // Planned without boundaries (fixed segmentation).
                vec![Command::PromptRun(spool_core::PromptRunCommand::RecordVideoAnalysis {
                    run_id: *run_id,
                    video: *video,
                    boundaries_us: None,
                    source: "none".into(),
                })]
            }
            Effect::Export(spool_core::ExportEffect::RunExport { export_id, attempt }) => {
                use spool_core::ExportCommand as C;
                vec![
                    Command::Export(C::StartExport { export_id: *export_id, attempt: *attempt }),
                    Command::Export(C::RecordExportFailed {
                        export_id: *export_id,
                        attempt: *attempt,
                        error: message,
                        retryable: false,
                    }),
                ]
            }
            // A watch that keeps panicking ends its listing with the error; the next is due one
            // default interval later.
            Effect::Automation(spool_core::AutomationEffect::Watch { automation_id, listing }) => {
                vec![Command::Automation(spool_core::AutomationCommand::RecordWatchListed {
                    automation_id: *automation_id,
                    listing: *listing,
                    objects: 0,
                    error: Some(message),
                    interval_ms: spool_core::machines::automation::WATCH_INTERVAL_DEFAULT_MS,
                })]
            }
            Effect::Index(_) | Effect::Webhook(_) | Effect::Video(_) | Effect::PromptRun(_) | Effect::Automation(_) => {
                Vec::new()
            }
        }
    }
}
