//! `spool keys create|list|revoke` (offline) and the first admin key of a new data directory.

#![allow(clippy::disallowed_methods)] // `spool keys rotate-master` reads the new master key from the environment
use crate::DataDirArg;
use anyhow::Context;
use spool_core::{Command, Outcome};
use spool_model::time::rfc3339_ms;
use spool_model::{ApiKeyId, Scope};
use spool_runtime::{Runtime, RuntimeConfig, SystemClock, SystemIds};
use std::sync::Arc;

pub const SECRET_PREFIX: &str = "sk_live_";

#[derive(clap::Subcommand)]
pub enum KeysCmd {
    /// Create a key and print its secret once.
    Create {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        name: String,
        /// read, write or admin (repeatable).
        #[arg(long = "scope", default_value = "read")]
        scopes: Vec<String>,
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Revoke a key.
    Revoke {
        #[command(flatten)]
        dir: DataDirArg,
        key_id: String,
    },
    /// Re-wrap every data key under a new master key, in one transaction. With master.key,
    /// a new key is generated and replaces the file; with SPOOL_MASTER_KEY, the new key is read
    /// from SPOOL_NEW_MASTER_KEY and you swap the variables afterwards.
    RotateMaster {
        #[command(flatten)]
        dir: DataDirArg,
    },
}

/// `spool keys rotate-master`.
fn rotate_master(dir: &std::path::Path) -> anyhow::Result<()> {
    use spool_runtime::keyring::{self, Keyring, MasterKey, MasterSource};
    let log = Arc::new(crate::offline::open_existing(dir)?);
    keyring::recover_rotation(dir, &*log)?;
    let (old, source) = MasterKey::load(dir)?;
    let new = match &source {
        MasterSource::Env => {
            let v = std::env::var(keyring::NEW_MASTER_KEY_ENV).map_err(|_| {
                anyhow::anyhow!(
                    "the master key comes from {}; put the new one in {} (standard base64 of 32 bytes)",
                    keyring::MASTER_KEY_ENV,
                    keyring::NEW_MASTER_KEY_ENV
                )
            })?;
            MasterKey::from_base64(&v).ok_or_else(|| {
                anyhow::anyhow!("{} must be the standard base64 of 32 bytes", keyring::NEW_MASTER_KEY_ENV)
            })?
        }
        MasterSource::File(_) => MasterKey::generate(),
    };
    let new_path = dir.join(format!("{}.new", keyring::MASTER_KEY_FILE));
    if let MasterSource::File(_) = source {
        // Durable before the transaction, so a crash in between can be finished at next start.
        new.write_file(&new_path)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let count = rt.block_on(async {
        let ring = Keyring::load(old, log.clone()).await?;
        let side = ring.rewrap_all(&new)?;
        let n = side.len();
        spool_log::EventLog::append(&*log, spool_log::AppendRequest { streams: vec![], side }).await?;
        Ok::<_, anyhow::Error>(n)
    })?;
    match source {
        MasterSource::File(path) => {
            std::fs::rename(&new_path, &path).with_context(|| format!("replacing {}", path.display()))?;
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            println!("re-wrapped {count} data keys; {} holds the new master key (back it up now)", path.display());
        }
        MasterSource::Env => {
            println!(
                "re-wrapped {count} data keys; set {} to the value of {} before the next start",
                keyring::MASTER_KEY_ENV,
                keyring::NEW_MASTER_KEY_ENV
            );
        }
    }
    Ok(())
}

/// Create the admin key of a fresh data directory and print it once on stderr.
pub async fn create_first_admin_key(rt: &Runtime) -> anyhow::Result<()> {
    let secret = rt.ids().secret(SECRET_PREFIX);
    let cmd = Command::ApiKey(spool_core::ApiKeyCommand::CreateApiKey {
        name: "admin (first start)".into(),
        scopes: vec![Scope::Admin],
        expires_in_days: None,
        secret: spool_core::Secret(secret.clone()),
    });
    let out = rt.execute(cmd).await?;
    if let Outcome::ApiKey(id) = out {
        // One marked line of its own, written in one call so no log line can interleave.
        eprintln!(
            "\n==== spool: first admin API key ({id}), shown only this once; keep it safe ====\nSPOOL_FIRST_ADMIN_KEY={secret}\n====\n"
        );
    }
    Ok(())
}

fn parse_scope(s: &str) -> anyhow::Result<Scope> {
    match s {
        "read" | "search" => Ok(Scope::Read),
        "write" => Ok(Scope::Write),
        "admin" => Ok(Scope::Admin),
        other => anyhow::bail!("unknown scope {other:?}; use read, write or admin"),
    }
}

pub fn run(cmd: KeysCmd) -> anyhow::Result<()> {
    let dir = match &cmd {
        KeysCmd::RotateMaster { dir } => return rotate_master(&dir.data_dir),
        KeysCmd::Create { dir, .. } | KeysCmd::List { dir } | KeysCmd::Revoke { dir, .. } => dir.data_dir.clone(),
    };
    if let KeysCmd::Create { .. } | KeysCmd::Revoke { .. } = &cmd {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Refuses a held data directory (exit 2) before anything else.
    let log = if dir.join(spool_log::LOG_FILE_NAME).exists() || matches!(cmd, KeysCmd::Create { .. }) {
        spool_log::RedbLog::open_dir(&dir)?
    } else {
        anyhow::bail!("{} holds no Spool log", dir.display());
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let mut cfg = RuntimeConfig::new(&dir);
        cfg.run_effects = false;
        let runtime = Runtime::start(Arc::new(log), cfg, Arc::new(SystemClock), Arc::new(SystemIds)).await?;
        runtime.wait_ready().await;
        match cmd {
            KeysCmd::Create { name, scopes, expires_in_days, .. } => {
                let scopes = scopes.iter().map(|s| parse_scope(s)).collect::<anyhow::Result<Vec<_>>>()?;
                let secret = runtime.ids().secret(SECRET_PREFIX);
                let out = runtime
                    .execute(Command::ApiKey(spool_core::ApiKeyCommand::CreateApiKey {
                        name,
                        scopes,
                        expires_in_days,
                        secret: spool_core::Secret(secret.clone()),
                    }))
                    .await?;
                if let Outcome::ApiKey(id) = out {
                    eprintln!("created {id}; its secret is shown only this once:");
                    println!("{secret}");
                }
            }
            KeysCmd::List { .. } => {
                let now = runtime.now_ms();
                runtime.read(|st| {
                    for k in st.api_keys.values() {
                        println!(
                            "{}  {:<14} {:<24} scopes={:<16} created={} {}",
                            k.key_id,
                            k.key_prefix,
                            k.name,
                            spool_core::decide::scope_names(&k.scopes).join(","),
                            rfc3339_ms(k.created_at_ms),
                            if k.is_active(now) { "active" } else { "inactive" }
                        );
                    }
                });
            }
            KeysCmd::Revoke { key_id, .. } => {
                let id: ApiKeyId = key_id.parse()?;
                runtime.execute(Command::ApiKey(spool_core::ApiKeyCommand::RevokeApiKey { key_id: id })).await?;
                println!("revoked {id}");
            }
            KeysCmd::RotateMaster { .. } => unreachable!("handled above"),
        }
        runtime.snapshot().await;
        Ok::<_, anyhow::Error>(())
    })
}
