//! The automation machine's one executor with IO: an import automation's watch lists its
//! location in pages (the import scan's rules: prefix, glob, recursive) and hands each page to
//! `RecordWatchPage`, which compares it with the manifest. It holds one page at a time, and
//! the listing's path keys (16 bytes an object), so that at its end the manifest's keys it did
//! not list are forgotten (`AutomationObjectsGone`).

use crate::Runtime;
use spool_core::{AutomationCommand, Command};
use spool_model::{AutomationConfig, AutomationId, WatchedObject};
use spool_storage::BrowseRequest;
use std::sync::Arc;

impl Runtime {
    pub(super) async fn watch(
        self: &Arc<Self>,
        automation_id: &AutomationId,
        listing: u64,
    ) -> Result<(), crate::RuntimeError> {
        let Some((connector_id, req)) = self.read(|st| {
            let a = st.automations.get(automation_id).filter(|a| a.listing_due && a.listing == listing)?;
            match &a.config {
                AutomationConfig::Import { connector_id, source_prefix, file_pattern, recursive, .. } => Some((
                    *connector_id,
                    BrowseRequest {
                        prefix: source_prefix.clone(),
                        pattern: file_pattern.clone(),
                        recursive: *recursive,
                        max_entries: usize::MAX,
                    },
                )),
                AutomationConfig::Export { .. } => None,
            }
        }) else {
            return Ok(());
        };
        let interval_ms = spool_model::num::ms(self.cfg.automation_watch_interval).max(1);
        let listed = |objects: u64, error: Option<String>, gone: Vec<spool_core::imports::PathKey>| {
            Command::Automation(AutomationCommand::RecordWatchListed {
                automation_id: *automation_id,
                listing,
                objects,
                error,
                interval_ms,
                gone,
            })
        };
        let store = match self.connector_store(&connector_id) {
            Ok(s) => s,
            Err(e) => return self.execute(listed(0, Some(e), Vec::new())).await.map(|_| ()),
        };
        let mut count = 0u64;
        let rt = self.clone();
        let counter = &mut count;
        // The keys this listing listed (16 bytes each, the listing's own: work in flight), to
        // tell at its end which of the manifest's it did not.
        let mut seen: std::collections::HashSet<spool_core::imports::PathKey> = std::collections::HashSet::new();
        let seen_ref = &mut seen;
        let scanned = spool_storage::scan_pages(&store, &req, spool_core::imports::SCAN_PAGE_OBJECTS_MAX, |page| {
            let rt = rt.clone();
            *counter += page.len() as u64;
            seen_ref.extend(page.iter().map(|o| spool_core::imports::path_key(&o.path)));
            async move {
                let objects = page
                    .into_iter()
                    .map(|o| WatchedObject {
                        path: o.path,
                        size_bytes: o.size_bytes,
                        etag: o.etag,
                        last_modified_ms: o.last_modified_ms,
                    })
                    .collect();
                rt.execute(Command::Automation(AutomationCommand::RecordWatchPage {
                    automation_id: *automation_id,
                    listing,
                    objects,
                }))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
            }
        })
        .await;
        let error = scanned.err().map(|e| format!("listing the location failed: {e}"));
        // A listing that listed nothing forgets nothing: a prefix folder gone missing or a share
        // not mounted lists empty without an error, and forgetting then would import every
        // object again when it is back (a location truly emptied is forgotten by the next
        // listing that lists anything).
        let gone = if error.is_some() || count == 0 {
            Vec::new()
        } else {
            self.read(|st| {
                st.automations
                    .get(automation_id)
                    .map(|a| a.manifest.keys().filter(|k| !seen.contains(*k)).copied().collect())
                    .unwrap_or_default()
            })
        };
        self.execute(listed(count, error, gone)).await.map(|_| ())
    }
}

impl super::Execute for spool_core::AutomationEffect {
    async fn run(&self, rt: &Arc<Runtime>) -> Result<(), crate::RuntimeError> {
        use spool_core::AutomationEffect as E;
        match self {
            E::ExportRun { automation_id, run_id } => rt
                .execute(Command::Automation(AutomationCommand::ExportRun {
                    automation_id: *automation_id,
                    run_id: *run_id,
                }))
                .await
                .map(|_| ()),
            E::Watch { automation_id, listing } => rt.watch(automation_id, *listing).await,
            E::StartRun { automation_id, job_id } => rt
                .execute(Command::Automation(AutomationCommand::StartRun {
                    automation_id: *automation_id,
                    job_id: *job_id,
                }))
                .await
                .map(|_| ()),
        }
    }

    /// A watch that keeps panicking ends its listing with the error; the next is due one
    /// default interval later.
    fn give_up(&self, _code: &str, message: String) -> Vec<Command> {
        match self {
            spool_core::AutomationEffect::Watch { automation_id, listing } => {
                vec![Command::Automation(AutomationCommand::RecordWatchListed {
                    automation_id: *automation_id,
                    listing: *listing,
                    objects: 0,
                    error: Some(message),
                    interval_ms: spool_core::machines::automation::WATCH_INTERVAL_DEFAULT_MS,
                    gone: Vec::new(),
                })]
            }
            _ => Vec::new(),
        }
    }
}
