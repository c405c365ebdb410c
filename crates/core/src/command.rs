//! Commands: one variant per machine of the registry. The machines' own command enums keep
//! their variant names (`CreateIndex`, `StartImportFile`, …) and, since this enum is untagged,
//! their JSON too (`{"CreateIndex":{…}}`, as scenario files write them).

use crate::machines::{Machine, api_key::ApiKeyCommand};
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

/// Generates [`Command`] from the registry ([`crate::for_each_machine!`]): one variant per
/// machine, holding its own command enum, and the engine's.
macro_rules! command_enum {
    ($($module:ident $Var:ident),* $(,)?) => {
        /// What someone (an API request, a timer, an effect's outcome) asks the engine to do.
        /// Secrets that a command needs (a new key's secret) are drawn by the runtime and
        /// carried here, so `decide` stays pure.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(untagged)]
        #[allow(clippy::large_enum_variant)] // commands are transient: one per request or outcome
        pub enum Command {
            $($Var(<crate::machines::$module::Machine as Machine>::Command),)*
            Engine(EngineCommand),
        }

        $(impl From<<crate::machines::$module::Machine as Machine>::Command> for Command {
            fn from(c: <crate::machines::$module::Machine as Machine>::Command) -> Command {
                Command::$Var(c)
            }
        })*
    };
}
crate::for_each_machine!(command_enum);

/// Commands of the engine itself, not of one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EngineCommand {
    /// A durable timer is due (the runtime's timer service); the timer's machine decides.
    FireTimer { timer: crate::Timer },
}

impl From<EngineCommand> for Command {
    fn from(c: EngineCommand) -> Command {
        Command::Engine(c)
    }
}

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
