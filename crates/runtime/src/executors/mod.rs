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
    /// Where imported media goes (`<data-dir>/media`, or the shared store's `media/`).
    pub media: spool_storage::Store,
    /// Where media is copied and probed before it goes to a shared store
    /// (`<data-dir>/media`; the same folder as `media` without one).
    pub scratch: spool_storage::Store,
    /// Uploads received whole, waiting for their job (`<data-dir>/uploads`, or the shared
    /// store's `uploads/`).
    pub uploads: spool_storage::Store,
    /// Where the API stages an upload while it arrives (`<data-dir>/uploads[/p<N>]`).
    pub uploads_dir: std::path::PathBuf,
    /// Export artifacts of the shared store (`exports/`); `None`: only the data directory's.
    pub exports: Option<spool_storage::Store>,
    pub imports: import_job::ImportExecutor,
    pub connectors: connector::ConnectorStores,
    pub webhooks: webhook::WebhookExecutor,
    pub prompt_runs: prompt_run::PromptRunExecutor,
}

/// How the runtime runs one machine's effects: one impl in each executor file, one line of the
/// dispatch below per machine, generated from the registry (`spool_core::for_each_machine!`).
pub(crate) trait Execute {
    /// Run the effect and record its outcome as commands.
    async fn run(&self, rt: &Arc<Runtime>) -> Result<(), crate::RuntimeError>;

    /// The commands that record the effect's failure when its outcome cannot be decided (a
    /// panic, or past a bound), if its machine has such a record (a job's file, a run's
    /// task). None by default: the effect is then only logged.
    fn give_up(&self, _code: &str, _message: String) -> Vec<Command> {
        Vec::new()
    }
}

/// A machine without effects has nothing to run.
impl Execute for spool_core::NoEffect {
    async fn run(&self, _rt: &Arc<Runtime>) -> Result<(), crate::RuntimeError> {
        match *self {}
    }
}

macro_rules! execute_registry {
    ($($module:ident $Var:ident),* $(,)?) => {
        async fn run_one(rt: &Arc<Runtime>, effect: &Effect) -> Result<(), crate::RuntimeError> {
            match effect {
                $(Effect::$Var(e) => e.run(rt).await,)*
            }
        }

        fn give_up_one(effect: &Effect, code: &str, message: String) -> Vec<Command> {
            match effect {
                $(Effect::$Var(e) => e.give_up(code, message),)*
            }
        }
    };
}
spool_core::for_each_machine!(execute_registry);

impl Runtime {
    pub(crate) async fn run_effect(self: &Arc<Self>, effect: &Effect) {
        let result = run_one(self, effect).await;
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

    /// The commands that record an effect given up after too many panics, if its machine has
    /// them (a job or file failure with `internal_error`).
    pub(crate) fn give_up_command(effect: &Effect, code: &str, message: String) -> Vec<Command> {
        give_up_one(effect, code, message)
    }
}
