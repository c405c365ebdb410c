//! `spool webhooks retry`: start a bulk retry on a running server (its API, with an API key).

use anyhow::{Context, bail};

#[derive(clap::Subcommand)]
pub enum WebhooksCmd {
    /// Retry every failed (or retrying) delivery of a webhook created in a time range, as a
    /// durable job on the server; prints the webhook with its `bulk_retry` progress.
    Retry {
        /// The webhook (`wh_…`).
        webhook_id: String,
        /// `failed` (default) or `retrying`.
        #[arg(long, default_value = "failed")]
        status: String,
        /// Deliveries created at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Deliveries created at or before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// The server's base URL.
        #[arg(long, env = "SPOOL_SERVER", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// An API key with the write scope.
        #[arg(long, env = "SPOOL_API_KEY", hide_env_values = true)]
        api_key: String,
    },
}

pub fn run(cmd: WebhooksCmd) -> anyhow::Result<()> {
    let WebhooksCmd::Retry { webhook_id, status, since, until, server, api_key } = cmd;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let mut body = serde_json::json!({ "status": status });
        if let Some(s) = since {
            body["since"] = s.into();
        }
        if let Some(u) = until {
            body["until"] = u.into();
        }
        let url = format!("{}/api/v2/webhooks/{webhook_id}/deliveries/retry", server.trim_end_matches('/'));
        let resp = reqwest::Client::new()
            .post(&url)
            .header("x-api-key", api_key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .with_context(|| format!("reaching {server}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("the server answered {status}: {text}");
        }
        println!("{text}");
        Ok(())
    })
}
