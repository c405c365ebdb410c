//! Closed sets of names that events persist as text: a run's final status, a failed task's
//! stage, the domain events webhooks subscribe to. In memory each is an enum; on the wire and
//! in the log each is its text, exactly as the events always stored it (bincode writes a
//! `String` and these the same bytes, so no golden file changed). Reading the text is here and
//! only here: an unknown name fails the decode with its name, it is never guessed.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `str_enum! { /// doc  pub enum Name ("what it is") { Variant = "text", … } }`: the enum, its
/// `ALL`, `as_str`, `parse`, `Display`, and serde as the text.
macro_rules! str_enum {
    (
        $(#[$meta:meta])*
        pub enum $Name:ident ($what:literal) { $($(#[$vmeta:meta])* $Var:ident = $text:literal),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $Name {
            $($(#[$vmeta])* $Var),*
        }

        impl $Name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$Name] = &[$($Name::$Var),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($Name::$Var => $text),*
                }
            }

            /// The value a text names, if any.
            pub fn parse(s: &str) -> Option<$Name> {
                match s {
                    $($text => Some($Name::$Var),)*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $Name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $Name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $Name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $Name::parse(&s).ok_or_else(|| serde::de::Error::custom(format!(concat!("unknown ", $what, " {:?}"), s)))
            }
        }
    };
}

str_enum! {
    /// A prompt run's status. `PromptRunFinished` carries one of the four terminal ones.
    pub enum RunStatus ("prompt run status") {
        Pending = "pending",
        Processing = "processing",
        Completed = "completed",
        CompletedWithFailures = "completed_with_failures",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Pending | RunStatus::Processing)
    }

    /// Ended with results to export (completed, with or without failed segments).
    pub fn has_results(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::CompletedWithFailures)
    }
}

str_enum! {
    /// A webhook's status (`WebhookUpdated.status`).
    pub enum WebhookStatus ("webhook status") {
        Active = "active",
        Paused = "paused",
        /// Set by the engine after too many failed deliveries in a row.
        Disabled = "disabled",
    }
}

str_enum! {
    /// Where a prompt run's task failed.
    pub enum FailureStage ("failure stage") {
        /// The processor call failed (or timed out, or answered garbage).
        Processing = "processing",
        /// The answer did not fit the prompt's schema.
        FieldExtraction = "field_extraction",
    }
}

str_enum! {
    /// The domain events: what `DomainEventRaised` names and webhooks subscribe to (contract
    /// §4.1), in the contract's order.
    pub enum DomainEventName ("domain event") {
        MediaCreated = "media.created",
        MediaProcessingStarted = "media.processing.started",
        MediaProcessingCompleted = "media.processing.completed",
        MediaProcessingFailed = "media.processing.failed",
        PromptRunStarted = "prompt_run.started",
        PromptRunCompleted = "prompt_run.completed",
        PromptRunFailed = "prompt_run.failed",
        PromptRunCancelled = "prompt_run.cancelled",
        PromptRunPartialCompleted = "prompt_run.partial_completed",
        PromptRunProgress = "prompt_run.progress",
        ExportReady = "export.ready",
        ExportFailed = "export.failed",
        ImportJobStarted = "import_job.started",
        ImportJobCompleted = "import_job.completed",
        ImportJobFailed = "import_job.failed",
        ImportJobPartialCompleted = "import_job.partial_completed",
        ImportJobProgress = "import_job.progress",
    }
}

impl DomainEventName {
    /// What the event's subject is: an import job's events name the job, media events the
    /// video, run and export events their run and export.
    pub fn subject(self) -> Subject {
        use DomainEventName as N;
        match self {
            N::MediaCreated | N::MediaProcessingStarted | N::MediaProcessingCompleted | N::MediaProcessingFailed => {
                Subject::Video
            }
            N::PromptRunStarted
            | N::PromptRunCompleted
            | N::PromptRunFailed
            | N::PromptRunCancelled
            | N::PromptRunPartialCompleted
            | N::PromptRunProgress => Subject::PromptRun,
            N::ExportReady | N::ExportFailed => Subject::Export,
            N::ImportJobStarted
            | N::ImportJobCompleted
            | N::ImportJobFailed
            | N::ImportJobPartialCompleted
            | N::ImportJobProgress => Subject::ImportJob,
        }
    }
}

/// The kind of resource a domain event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Video,
    PromptRun,
    Export,
    ImportJob,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text is what the events stored before these were enums: bincode writes the same
    /// bytes as for the `String` it replaced, and reads them back.
    #[test]
    fn a_name_encodes_as_the_string_it_replaced() {
        let cfg = bincode::config::standard();
        for n in DomainEventName::ALL {
            let as_enum = bincode::serde::encode_to_vec(n, cfg).unwrap();
            let as_text = bincode::serde::encode_to_vec(n.as_str().to_string(), cfg).unwrap();
            assert_eq!(as_enum, as_text);
            let (back, _): (DomainEventName, usize) = bincode::serde::decode_from_slice(&as_text, cfg).unwrap();
            assert_eq!(back, *n);
        }
        let bad = bincode::serde::encode_to_vec("media.exploded".to_string(), cfg).unwrap();
        let err = bincode::serde::decode_from_slice::<DomainEventName, _>(&bad, cfg).unwrap_err();
        assert!(format!("{err:?}").contains("unknown domain event \\\"media.exploded\\\""), "{err:?}");
        assert_eq!(serde_json::to_string(&RunStatus::CompletedWithFailures).unwrap(), "\"completed_with_failures\"");
    }
}
