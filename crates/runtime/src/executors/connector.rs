//! Connector stores (built from a connector's location and opened credentials, cached per
//! connector version) and the sequencer steps that seal or merge connector credentials.

use crate::Runtime;
use spool_core::{Command, DomainError};
use spool_model::ConnectorId;
use spool_storage::{Credentials, Store};
use std::sync::Mutex;

/// Built stores by connector, with the connector's `updated_at` they were built for.
#[derive(Default)]
pub(crate) struct ConnectorStores {
    pub stores: Mutex<std::collections::HashMap<ConnectorId, (u64, Store)>>,
}

impl Runtime {
    /// A connector's credentials, opened by the keyring (none when it has none, or when its
    /// data key was shredded).
    pub fn open_credentials(&self, sealed: Option<&spool_model::Sealed>) -> Result<Credentials, String> {
        let Some(sealed) = sealed else { return Ok(Credentials::default()) };
        match self.keyring().open(sealed) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).map_err(|_| "stored credentials are damaged".to_string()),
            Ok(None) => Ok(Credentials::default()),
            Err(e) => Err(format!("credentials cannot be opened: {e}")),
        }
    }

    /// A connector's creation, its credentials sealed inside the sequencer with the connector's
    /// own data key (the key's side write commits with `ConnectorCreated`).
    pub fn create_connector(cmd: Command, credentials: Option<Credentials>) -> crate::Work {
        crate::Work::Prepared(Box::new(move |_st, keyring| {
            let mut cmd = cmd;
            let mut side = Vec::new();
            if let (
                Command::Connector(spool_core::ConnectorCommand::CreateConnector {
                    connector_id,
                    credentials: slot,
                    ..
                }),
                Some(creds),
            ) = (&mut cmd, credentials)
            {
                let bytes = zeroize::Zeroizing::new(serde_json::to_vec(&creds).unwrap_or_default());
                let (sealed, put) = keyring.seal(&connector_id.to_string(), &bytes)?;
                *slot = Some(sealed);
                side.push(put);
            }
            Ok((cmd, side))
        }))
    }

    /// A connector's update whose credentials `patch` (fields left `None` or empty are kept) is
    /// merged into the stored credentials inside the sequencer, so concurrent patches never
    /// lose each other's fields; the merge is sealed again with the connector's data key.
    pub fn update_connector(cmd: Command, patch: Option<Credentials>) -> crate::Work {
        crate::Work::Prepared(Box::new(move |st, keyring| {
            let Some(patch) = patch else { return Ok((cmd, Vec::new())) };
            let Command::Connector(spool_core::ConnectorCommand::UpdateConnector {
                connector_id,
                name,
                scopes,
                import_mode,
                export_base_path,
                ..
            }) = cmd
            else {
                return Ok((cmd, Vec::new()));
            };
            let conn = st
                .live_connector(&connector_id)
                .ok_or_else(|| DomainError::NotFound { kind: "connector", id: connector_id.to_string() })?;
            let aws = patch.aws_access_key_id.is_some() || patch.aws_secret_access_key.is_some();
            let azure = patch.azure_account_key.is_some() || patch.azure_client_secret.is_some();
            let gcs = patch.gcs_service_account.is_some();
            let fits = match conn.provider {
                spool_model::Provider::S3 => !azure && !gcs,
                spool_model::Provider::Azure => !aws && !gcs,
                spool_model::Provider::Gcs => !aws && !azure,
                spool_model::Provider::Local => false,
            };
            if !fits {
                return Err(DomainError::invalid(
                    "credentials",
                    format!("these credentials do not fit a {} connector", conn.provider.as_str()),
                )
                .into());
            }
            let mut merged = match &conn.credentials {
                None => Credentials::default(),
                Some(sealed) => match keyring.open(sealed)? {
                    Some(bytes) => serde_json::from_slice(&bytes).map_err(|_| {
                        crate::RuntimeError::Keyring(crate::KeyringError::Damaged("stored credentials".into()))
                    })?,
                    None => Credentials::default(),
                },
            };
            let keep = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
            if let Some(v) = keep(patch.aws_access_key_id) {
                merged.aws_access_key_id = Some(v);
            }
            if let Some(v) = keep(patch.aws_secret_access_key) {
                merged.aws_secret_access_key = Some(v);
            }
            if let Some(v) = keep(patch.azure_account_key) {
                merged.azure_account_key = Some(v);
            }
            if let Some(v) = keep(patch.azure_client_secret) {
                merged.azure_client_secret = Some(v);
            }
            if let Some(v) = keep(patch.gcs_service_account) {
                merged.gcs_service_account = Some(v);
            }
            let bytes = zeroize::Zeroizing::new(serde_json::to_vec(&merged).unwrap_or_default());
            let (sealed, put) = keyring.seal(&connector_id.to_string(), &bytes)?;
            let cmd = Command::Connector(spool_core::ConnectorCommand::UpdateConnector {
                connector_id,
                name,
                scopes,
                import_mode,
                export_base_path,
                credentials: Some(sealed),
            });
            Ok((cmd, vec![put]))
        }))
    }

    /// The store of a live connector, with its credentials opened (cached per connector and
    /// version, so a patch of credentials takes effect).
    pub fn connector_store(&self, id: &ConnectorId) -> Result<Store, String> {
        let conn = self.read(|st| st.live_connector(id).cloned()).ok_or_else(|| format!("connector {id} is gone"))?;
        let version = conn.updated_at_ms;
        if let Some((v, s)) = self.executors.connectors.stores.lock().unwrap_or_else(|p| p.into_inner()).get(id)
            && *v == version
        {
            return Ok(s.clone());
        }
        let creds = self.open_credentials(conn.credentials.as_ref())?;
        let store = spool_storage::build_store(conn.provider, &conn.location, &creds, &self.cfg.storage)
            .map_err(|e| e.to_string())?;
        self.executors
            .connectors
            .stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*id, (version, store.clone()));
        Ok(store)
    }
}
