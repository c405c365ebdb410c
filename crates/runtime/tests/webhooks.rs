//! Webhook deliveries on the controllable clock: the retry schedule is followed to the step
//! (nothing is sent while the clock stands still), the last failure fails the delivery, and a
//! rotated secret's grace ends when the clock passes it.

use spool_core::machines::webhook::DeliveryStatus;
use spool_core::{Command, ConnectorCommand, ImportCommand, IndexCommand, Outcome, WebhookCommand};
use spool_model::{ConnectorId, ConnectorLocation, ConnectorScope, ImportMode, Provider, WebhookId};
use spool_runtime::{MasterKey, Runtime, RuntimeConfig, SeededIds, TestClock, WebhookSettings};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A receiver that answers every request 500 and counts them.
async fn receiver() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // Read the head and the body (Content-Length).
                loop {
                    let Ok(n) = s.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
                let _ = s
                    .write_all(
                        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope",
                    )
                    .await;
            });
        }
    });
    (url, count)
}

async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..2000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_follow_the_schedule_on_the_test_clock_and_the_rotation_grace_ends() {
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("roots");
    std::fs::create_dir_all(roots.join("v")).unwrap();
    let clock = Arc::new(TestClock::new(1_764_000_000_000));
    let mut cfg = RuntimeConfig::new(dir.path().join("data"));
    cfg.master_key = Some(MasterKey::generate());
    cfg.storage.local_roots = vec![roots.canonicalize().unwrap()];
    cfg.webhooks = WebhookSettings {
        allow_hosts: vec!["127.0.0.1".into()],
        retry_schedule_ms: vec![0, 60_000, 600_000],
        timeout: Duration::from_secs(5),
        rotation_grace: Duration::from_secs(1),
        disable_after: 20,
    };
    let rt = Runtime::open(cfg, clock.clone(), Arc::new(SeededIds::new(9))).await.unwrap();
    rt.wait_ready().await;
    let (url, hits) = receiver().await;

    let webhook_id = WebhookId(rt.new_ulid());
    let cmd = Command::Webhook(WebhookCommand::CreateWebhook {
        webhook_id,
        name: "ops".into(),
        url,
        events: vec!["import_job.started".into()],
        index_ids: None,
        metadata_json: None,
        secret: None,
    });
    rt.execute(Runtime::create_webhook(cmd, spool_runtime::new_secret(rt.ids().as_ref()))).await.unwrap();
    let Outcome::Index(index_id) = rt
        .execute(Command::Index(IndexCommand::CreateIndex { name: "i".into(), user_id: "u".into(), description: None }))
        .await
        .unwrap()
    else {
        panic!()
    };
    let connector_id = ConnectorId(rt.new_ulid());
    rt.execute(Command::Connector(ConnectorCommand::CreateConnector {
        connector_id,
        provider: Provider::Local,
        name: "l".into(),
        scopes: vec![ConnectorScope::Import],
        import_mode: ImportMode::All,
        export_base_path: None,
        location: ConnectorLocation {
            root: Some(roots.join("v").canonicalize().unwrap().to_string_lossy().into_owned()),
            ..Default::default()
        },
        credentials: None,
    }))
    .await
    .unwrap();
    rt.execute(Command::Import(ImportCommand::CreateImportJob {
        connector_id,
        index_id,
        source_prefix: String::new(),
        file_pattern: "*".into(),
        recursive: true,
        import_mode: None,
    }))
    .await
    .unwrap();

    let status = || {
        rt.read(|st| {
            let d = st
                .deliveries
                .values()
                .find(|d| d.webhook_id == webhook_id && d.event_type == spool_model::DomainEventName::ImportJobStarted);
            d.map(|d| (d.status, d.attempts))
        })
    };
    until("the first attempt", || status() == Some((DeliveryStatus::Retrying, 1))).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // The clock stands still: no second attempt, however long we wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1, "a retry went out before its time");
    clock.advance(80_000); // past 60 s ± 20 %
    until("the second attempt", || status() == Some((DeliveryStatus::Retrying, 2))).await;
    clock.advance(59_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 2, "the third attempt came before 600 s ± 20 %");
    clock.advance(700_000);
    until("the last attempt fails the delivery", || status() == Some((DeliveryStatus::Failed, 3))).await;
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    // Rotation: the previous secret signs only until the grace (1 s here) has passed.
    let secret = spool_runtime::new_secret(rt.ids().as_ref());
    rt.execute(Runtime::rotate_webhook_secret(webhook_id, secret.clone(), 1_000)).await.unwrap();
    let s = rt.webhook_secrets(&webhook_id).unwrap();
    assert_eq!(s.current, secret);
    assert!(s.previous.is_some());
    clock.advance(1_500);
    assert!(rt.webhook_secrets(&webhook_id).unwrap().previous.is_none());
    rt.shutdown().await;
}
