//! The machines, one folder each: its commands and state (`mod.rs`), `decide.rs`, `evolve.rs`
//! and `effects.rs`. Adding a machine is a copy of a folder plus one line in each registry:
//! here, `Command`, `Effect` and `WorkKey` (`crate::command` / `crate::effect`), the `State`
//! fields it owns, and the dispatch lines of `crate::decide` / `crate::evolve`.

pub mod api_key;
pub mod automation;
pub mod connector;
pub mod export;
pub mod import_job;
pub mod index;
pub mod prompt;
pub mod prompt_run;
pub mod video;
pub mod webhook;
