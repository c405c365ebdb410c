//! `spool bench webhooks`: deliveries/s from the real engine (sequencer, outbox, executor,
//! signing, guarded client) to a receiver on loopback, with 1, 16 and 64 subscribed webhooks
//! (one delivery of a webhook in flight at a time: 1, 16 and 64 at once), against that
//! receiver's own ceiling measured in the same run with `wrk` at the same connection counts, and
//! against the same signed POSTs from a plain client loop at the same concurrency (no engine).
//! Then the fan-out: domain events/s turned into deliveries with 1, 100 and 10,000 webhooks of
//! which one is subscribed to the events raised (the rest to another event), against the run
//! with 1 webhook: the fan-out reads the subscriptions of the event's name, so the rate stays
//! flat however many webhooks do not match.

use anyhow::{Context, bail};
use spool_core::{Command, ConnectorCommand, ImportCommand, IndexCommand, Outcome, WebhookCommand};
use spool_model::{ConnectorId, ConnectorLocation, ConnectorScope, ImportMode, Provider, WebhookId};
use spool_runtime::{Runtime, RuntimeConfig, SystemClock, SystemIds, WebhookSettings};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Args {
    /// Domain events raised per run (each goes to every webhook of the run).
    pub events: usize,
}

/// The receiver: answers every request 200 (any method, any path).
async fn receiver() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(|| async { "ok" });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/hook"))
}

/// requests/s of `wrk` against the receiver with `connections` connections for 3 s.
fn wrk(url: &str, connections: usize) -> anyhow::Result<f64> {
    let out = std::process::Command::new("wrk")
        // wrk wants at least as many connections as threads.
        .args([&format!("-t{}", connections.clamp(1, 2)), &format!("-c{connections}"), "-d3s", url])
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:").map(|v| v.trim().parse::<f64>()))
        .context("wrk printed no Requests/sec")?
        .context("wrk's Requests/sec")
}

/// The same deliveries with no engine: `in_flight` tasks, each POSTing `total / in_flight`
/// bodies one after another (one delivery of a webhook in flight at a time, as Spool sends
/// them), each a fresh JSON payload of a delivery's shape, signed both ways as Spool signs a
/// delivery, its answer read; deliveries/s. Fails when the receiver refuses one.
async fn bare(url: &str, in_flight: usize, total: usize) -> anyhow::Result<f64> {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let secret = spool_runtime::new_secret(&SystemIds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..in_flight {
        let (client, url, secret) = (client.clone(), url.to_string(), secret.clone());
        let n = total / in_flight + usize::from(t < total % in_flight);
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                let delivery_id = format!("del_bench{t:04}{i:08}");
                let body = serde_json::json!({
                    "id": format!("evt_bench{t:04}{i:08}"),
                    "event": "import_job.started",
                    "created_at": "2026-12-07T00:00:00.000Z",
                    "api_version": "2",
                    "data": { "job_id": format!("job_bench{i:08}"), "status": "pending", "progress": { "total_files": 0, "imported": 0 } },
                    "webhook_id": format!("wh_bench{t:04}"),
                    "delivery_id": delivery_id,
                    "sequence": i + 1,
                })
                .to_string()
                .into_bytes();
                let ts = spool_runtime::Clock::now_ms(&SystemClock) / 1000;
                let standard = spool_runtime::standard_signature(&secret, &delivery_id, ts, &body).unwrap_or_default();
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-webhook-signature", spool_runtime::sha256_signature(&secret, &body))
                    .header("x-webhook-id", format!("wh_bench{t:04}"))
                    .header("x-delivery-id", &delivery_id)
                    .header("x-event-type", "import_job.started")
                    .header("idempotency-key", &delivery_id)
                    .header("webhook-id", &delivery_id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", standard)
                    .body(body)
                    .send()
                    .await?;
                if !resp.status().is_success() {
                    anyhow::bail!("the receiver answered {}", resp.status());
                }
                resp.bytes().await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// A runtime of its own in a scratch folder, with `webhooks` webhooks to `url`: `matching` of
/// them subscribed to `import_job.started` (what the import jobs raise), the rest to
/// `export.ready`; an index and an empty local connector to make import jobs from.
async fn open(
    url: &str,
    webhooks: usize,
    matching: usize,
    tag: &str,
) -> anyhow::Result<(Arc<Runtime>, std::path::PathBuf, spool_model::IndexId, ConnectorId)> {
    let scratch = std::env::temp_dir().join(format!("spool-bench-webhooks-{}-{tag}-{webhooks}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(scratch.join("empty"))?;
    let mut cfg = RuntimeConfig::new(scratch.join("data"));
    cfg.master_key = Some(spool_runtime::MasterKey::generate());
    cfg.storage.local_roots = vec![scratch.canonicalize()?];
    cfg.webhooks = WebhookSettings {
        allow_hosts: vec!["127.0.0.1".into()],
        retry_schedule_ms: vec![0, 1000],
        ..Default::default()
    };
    let rt = Runtime::open(cfg, Arc::new(SystemClock), Arc::new(SystemIds)).await?;
    rt.wait_ready().await;
    for i in 0..webhooks {
        let event = if i < matching { "import_job.started" } else { "export.ready" };
        let cmd = Command::Webhook(WebhookCommand::CreateWebhook {
            webhook_id: WebhookId(rt.new_ulid()),
            name: "bench".into(),
            url: url.to_string(),
            events: vec![event.into()],
            index_ids: None,
            metadata_json: None,
            secret: None,
        });
        rt.execute(Runtime::create_webhook(cmd, spool_runtime::new_secret(rt.ids().as_ref()))).await?;
    }
    let Outcome::Index(index_id) = rt
        .execute(Command::Index(IndexCommand::CreateIndex { name: "b".into(), user_id: "b".into(), description: None }))
        .await?
    else {
        bail!("no index")
    };
    let connector_id = ConnectorId(rt.new_ulid());
    rt.execute(Command::Connector(ConnectorCommand::CreateConnector {
        connector_id,
        provider: Provider::Local,
        name: "empty".into(),
        scopes: vec![ConnectorScope::Import],
        import_mode: ImportMode::All,
        export_base_path: None,
        location: ConnectorLocation {
            root: Some(scratch.join("empty").canonicalize()?.to_string_lossy().into_owned()),
            ..Default::default()
        },
        credentials: None,
    }))
    .await?;
    Ok((rt, scratch, index_id, connector_id))
}

/// `events` import jobs made by 16 tasks: each raises `import_job.started`.
async fn raise(
    rt: &Arc<Runtime>,
    index_id: spool_model::IndexId,
    connector_id: ConnectorId,
    events: usize,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for chunk in 0..16 {
        let rt = rt.clone();
        let n = events / 16 + usize::from(chunk < events % 16);
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                rt.execute(Command::Import(ImportCommand::CreateImportJob {
                    connector_id,
                    index_id,
                    source_prefix: String::new(),
                    file_pattern: "*".into(),
                    recursive: true,
                    import_mode: None,
                }))
                .await?;
            }
            Ok::<_, spool_runtime::RuntimeError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// (deliveries made, deliveries waiting, any failed) over every webhook: O(webhooks), not
/// O(deliveries) (a scan of every delivery under the read lock would stall the sequencer it
/// measures).
fn tally(rt: &Runtime) -> (usize, usize, bool) {
    rt.read(|st| {
        st.webhooks.values().fold((0, 0, false), |(c, p, f), w| {
            (
                c + w.open.len() + spool_model::num::sat_usize(w.delivered),
                p + w.pending.len(),
                f || w.last_failure_at_ms.is_some(),
            )
        })
    })
}

async fn run_once(url: &str, webhooks: usize, events: usize) -> anyhow::Result<f64> {
    let (rt, scratch, index_id, connector_id) = open(url, webhooks, webhooks, "deliver").await?;
    let expected = events * webhooks;
    let start = Instant::now();
    raise(&rt, index_id, connector_id, events).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (created, waiting, failed) = tally(&rt);
        if failed {
            bail!("a delivery failed: the receiver is not taking them (the ratio would mean nothing)");
        }
        let delivered = if waiting == 0 { created } else { 0 };
        if delivered >= expected {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {delivered} of {expected} deliveries in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    rt.shutdown().await;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(expected as f64 / secs)
}

/// Domain events/s from their raise to their one delivery made (not sent: the fan-out's cost),
/// with `webhooks` webhooks of which one matches.
async fn fan_out(url: &str, webhooks: usize, events: usize) -> anyhow::Result<f64> {
    let (rt, scratch, index_id, connector_id) = open(url, webhooks, 1, "fanout").await?;
    let start = Instant::now();
    raise(&rt, index_id, connector_id, events).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (created, _, _) = tally(&rt);
        if created >= events {
            if created > events {
                bail!("{created} deliveries for {events} events: a webhook that does not match got one");
            }
            break;
        }
        if Instant::now() > deadline {
            bail!("only {created} of {events} deliveries made in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    rt.shutdown().await;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(events as f64 / secs)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let url = receiver().await?;
        let mut json = serde_json::json!({ "bench": "webhooks", "events": a.events });
        for (webhooks, in_flight) in [(1usize, 1usize), (16, 16), (64, 64)] {
            // The receiver's ceiling first, at the same number of connections.
            let u = url.clone();
            let ceiling = tokio::task::spawn_blocking(move || wrk(&u, in_flight)).await??;
            let ours = run_once(&url, webhooks, a.events).await?;
            // The same signed POSTs with no engine, as many as Spool made, at the same
            // concurrency.
            let plain = bare(&url, in_flight, (a.events * webhooks).max(2000)).await?;
            println!(
                "{webhooks:>2} webhooks (≤ {in_flight:>2} in flight): {ours:>8.0} deliveries/s   the same signed POSTs with no engine {plain:>8.0}/s (ratio {:.2})   receiver ceiling (wrk -c{in_flight}) {ceiling:>9.0} req/s (ratio {:.2})",
                ours / plain,
                ours / ceiling
            );
            json[format!("bare_signed_posts_per_s_{in_flight}")] = serde_json::json!(plain.round());
            json[format!("vs_bare_{in_flight}")] = serde_json::json!((ours / plain * 100.0).round() / 100.0);
            json[format!("deliveries_per_s_{in_flight}")] = serde_json::json!(ours.round());
            json[format!("receiver_ceiling_{in_flight}")] = serde_json::json!(ceiling.round());
            json[format!("ratio_{in_flight}")] = serde_json::json!((ours / ceiling * 100.0).round() / 100.0);
        }
        // The fan-out: one matching webhook among 1, 100 and 10,000.
        let mut base = None;
        for webhooks in [1usize, 100, 10_000] {
            let rate = fan_out(&url, webhooks, a.events).await?;
            let b = *base.get_or_insert(rate);
            println!(
                "fan-out: {webhooks:>6} webhooks, 1 matching: {rate:>8.0} events/s   against 1 webhook: ratio {:.2}",
                rate / b
            );
            json[format!("fanout_events_per_s_{webhooks}")] = serde_json::json!(rate.round());
            json[format!("fanout_ratio_{webhooks}")] = serde_json::json!((rate / b * 100.0).round() / 100.0);
        }
        println!("{json}");
        Ok(())
    })
}
