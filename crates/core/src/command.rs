//! The command registry: one variant per machine. The machines' own command enums keep their
//! variant names (`CreateIndex`, `StartImportFile`, …) and, since this enum is untagged, their
//! JSON too (`{"CreateIndex":{…}}`, as scenario files write them).

use crate::machines::{
    api_key::ApiKeyCommand, connector::ConnectorCommand, import_job::ImportCommand, index::IndexCommand,
    video::VideoCommand, webhook::WebhookCommand,
};
use serde::{Deserialize, Serialize};

/// A secret a command carries (a new API key). Its `Debug` is redacted, so a logged command
/// never shows it; its JSON is the plain string (scenario files).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What someone (an API request, a timer, an effect's outcome) asks the engine to do.
/// Secrets that a command needs (a new key's secret) are drawn by the runtime and carried here,
/// so `decide` stays pure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // commands are transient: one per request or outcome
pub enum Command {
    Index(IndexCommand),
    ApiKey(ApiKeyCommand),
    Connector(ConnectorCommand),
    Import(ImportCommand),
    Video(VideoCommand),
    Webhook(WebhookCommand),
    Prompt(crate::machines::prompt::PromptCommand),
    PromptRun(crate::machines::prompt_run::PromptRunCommand),
    Export(crate::machines::export::ExportCommand),
    Automation(crate::machines::automation::AutomationCommand),
    Engine(EngineCommand),
}

/// Commands of the engine itself, not of one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EngineCommand {
    /// A durable timer is due (the runtime's timer service); the timer's machine decides.
    FireTimer { timer: crate::Timer },
}

macro_rules! from_machine {
    ($($t:ty => $v:ident),* $(,)?) => {
        $(impl From<$t> for Command {
            fn from(c: $t) -> Command {
                Command::$v(c)
            }
        })*
    };
}

from_machine!(
    IndexCommand => Index,
    ApiKeyCommand => ApiKey,
    ConnectorCommand => Connector,
    ImportCommand => Import,
    WebhookCommand => Webhook,
    VideoCommand => Video,
    crate::machines::prompt::PromptCommand => Prompt,
    crate::machines::prompt_run::PromptRunCommand => PromptRun,
    crate::machines::export::ExportCommand => Export,
    crate::machines::automation::AutomationCommand => Automation,
    EngineCommand => Engine,
);

impl Command {
    /// The command with its secret replaced, for logs and scenario output.
    pub fn redacted(&self) -> Command {
        let mut c = self.clone();
        if let Command::ApiKey(
            ApiKeyCommand::CreateApiKey { secret, .. } | ApiKeyCommand::RotateApiKey { secret, .. },
        ) = &mut c
        {
            *secret = Secret("<redacted>".into());
        }
        c
    }
}
