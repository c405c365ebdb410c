//! `spool keys create|list|revoke` (offline) and the first admin key of a new data directory.

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
}

/// Create the admin key of a fresh data directory and print it once on stderr.
pub async fn create_first_admin_key(rt: &Runtime) -> anyhow::Result<()> {
    let secret = rt.ids().secret(SECRET_PREFIX);
    let cmd = Command::CreateApiKey {
        name: "admin (first start)".into(),
        scopes: vec![Scope::Admin],
        expires_in_days: None,
        secret: secret.clone(),
    };
    let out = rt.execute(cmd).await?;
    if let Outcome::ApiKey(id) = out {
        eprintln!(
            "\nspool: created the first admin API key ({id}). It is shown only this once; keep it safe:\n\n    {secret}\n"
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
                    .execute(Command::CreateApiKey { name, scopes, expires_in_days, secret: secret.clone() })
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
                runtime.execute(Command::RevokeApiKey { key_id: id }).await?;
                println!("revoked {id}");
            }
        }
        runtime.snapshot().await;
        Ok::<_, anyhow::Error>(())
    })
}
