//! Webhook deliveries on the controllable clock: the retry schedule is followed to the step
//! (nothing is sent while the clock stands still), the last failure fails the delivery, and a
//! rotated secret's grace ends when the clock passes it.

use spool_core::machines::webhook::DeliveryStatus;
use spool_core::{Command, ConnectorCommand, ImportCommand, IndexCommand, Outcome, WebhookCommand};
use spool_model::{ConnectorId, ConnectorLocation, ConnectorScope, ImportMode, IndexId, Provider, WebhookId};
use spool_runtime::{MasterKey, Runtime, RuntimeConfig, SeededIds, TestClock, WebhookSettings};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A receiver that answers every request 500 and counts them.
async fn receiver() -> (String, Arc<AtomicUsize>) {
    receiver_answering(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope")
        .await
}

/// A receiver that answers every request with `answer` and counts them.
async fn receiver_answering(answer: &'static [u8]) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let c = c.clone();
            tokio::spawn(async move {
                if read_request(&mut s).await.is_none() {
                    return;
                }
                c.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(answer).await;
            });
        }
    });
    (url, count)
}

/// Read one request, its head and its body (`Content-Length`); its text, or `None` when the
/// connection ends first.
async fn read_request(s: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    loop {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return Some(text);
            }
        }
    }
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

/// A webhook on `import_job.started` to `url`, an index, and a local connector over
/// `roots/v`: the (webhook, index, connector) an import job can be made with.
async fn hook_on_job_starts(rt: &Runtime, roots: &std::path::Path, url: String) -> (WebhookId, IndexId, ConnectorId) {
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
    (webhook_id, index_id, connector_id)
}

fn settings() -> WebhookSettings {
    WebhookSettings {
        allow_hosts: vec!["127.0.0.1".into()],
        retry_schedule_ms: vec![0, 60_000, 600_000],
        timeout: Duration::from_secs(5),
        rotation_grace: Duration::from_secs(1),
        disable_after: 20,
    }
}

/// Issue 27: a delivered delivery leaves the state for its row (`deliveries`, and its key on
/// its webhook's list, newest first); a retry of it is refused from the row after a restart, as
/// it was from the state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_delivery_is_a_row_and_its_retry_is_refused_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("roots");
    std::fs::create_dir_all(roots.join("v")).unwrap();
    let clock = Arc::new(TestClock::new(1_764_000_000_000));
    let key = MasterKey::generate();
    let config = || {
        let mut cfg = RuntimeConfig::new(dir.path().join("data"));
        cfg.master_key = Some(key.clone());
        cfg.storage.local_roots = vec![roots.canonicalize().unwrap()];
        cfg.webhooks = settings();
        cfg
    };
    let rt = Runtime::open(config(), clock.clone(), Arc::new(SeededIds::new(9))).await.unwrap();
    rt.wait_ready().await;
    let (url, hits) = receiver_answering(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").await;
    let (webhook_id, index_id, connector_id) = hook_on_job_starts(&rt, &roots, url).await;
    for _ in 0..3 {
        clock.advance(1_000);
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
    }
    let delivered = || rt.read(|st| st.webhooks.get(&webhook_id).map_or(0, |w| w.delivered));
    until("three deliveries delivered", || delivered() == 3).await;
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    let (in_state, open) = rt.read(|st| (st.deliveries.len(), st.webhooks.get(&webhook_id).map(|w| w.open.len())));
    assert_eq!((in_state, open), (0, Some(0)), "a delivered delivery stays in the state");
    let keys = rt.webhook_delivered(&webhook_id, None, 10).unwrap();
    assert_eq!(keys.len(), 3);
    assert!(keys.windows(2).all(|k| k[0].0 > k[1].0), "newest first: {keys:?}");
    let rows = rt.delivered_rows(keys.iter().map(|k| k.1)).unwrap();
    assert_eq!(rows.len(), 3);
    for (id, d) in &rows {
        assert_eq!((d.status, d.attempts, d.response_status_code), (DeliveryStatus::Delivered, 1, Some(204)), "{id}");
        assert!(d.payload_json.contains("import_job.started"), "{}", d.payload_json);
    }
    assert_eq!(rt.webhook_delivered(&webhook_id, None, 2).unwrap(), keys[..2].to_vec());
    // From a cursor: the older ones.
    assert_eq!(rt.webhook_delivered(&webhook_id, Some(keys[1]), 10).unwrap(), keys[2..].to_vec());
    rt.shutdown().await;
    drop(rt);

    // After a restart the state holds none of them; a retry reads the row and is refused.
    let rt = Runtime::open(config(), clock.clone(), Arc::new(SeededIds::new(10))).await.unwrap();
    rt.wait_ready().await;
    assert_eq!(rt.read(|st| st.deliveries.len()), 0);
    let err = rt
        .execute(Command::Webhook(WebhookCommand::RetryDelivery { delivery_id: keys[0].1 }))
        .await
        .expect_err("a delivered delivery has nothing to retry");
    assert!(err.to_string().contains("was delivered"), "{err}");
    let unknown = spool_model::DeliveryId(ulid::Ulid::from_parts(1, 1));
    let err = rt
        .execute(Command::Webhook(WebhookCommand::RetryDelivery { delivery_id: unknown }))
        .await
        .expect_err("an unknown delivery");
    assert!(matches!(err, spool_runtime::RuntimeError::Domain(spool_core::DomainError::NotFound { .. })), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 3, "nothing went out again");
    rt.shutdown().await;
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
    cfg.webhooks = settings();
    let rt = Runtime::open(cfg, clock.clone(), Arc::new(SeededIds::new(9))).await.unwrap();
    rt.wait_ready().await;
    let (url, hits) = receiver().await;

    let (webhook_id, index_id, connector_id) = hook_on_job_starts(&rt, &roots, url).await;
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

/// A receiver that notes each request's `webhook-id` (the delivery id) in arrival order and the
/// most requests it held at once; the `fail_nth` request (from 1) is answered 500, the others
/// 204 after a short wait (so a second sender would overlap it).
async fn ordering_receiver(fail_nth: usize) -> (String, Arc<std::sync::Mutex<Vec<String>>>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let most = Arc::new(AtomicUsize::new(0));
    let now = Arc::new(AtomicUsize::new(0));
    let (s2, m2) = (seen.clone(), most.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let (seen, most, now) = (s2.clone(), m2.clone(), now.clone());
            tokio::spawn(async move {
                let Some(head) = read_request(&mut s).await else { return };
                let held = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(held, Ordering::SeqCst);
                let id = head
                    .lines()
                    .find_map(|l| l.strip_prefix("webhook-id:").map(|v| v.trim().to_string()))
                    .unwrap_or_default();
                let nth = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(id);
                    seen.len()
                };
                tokio::time::sleep(Duration::from_millis(2)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                let answer: &[u8] = if nth == fail_nth {
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope"
                } else {
                    b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
                };
                let _ = s.write_all(answer).await;
            });
        }
    });
    (url, seen, most)
}

/// Issue 30: one sender per webhook pipelines each answer's record with the next POST. The
/// receiver still gets a webhook's deliveries one at a time, in `sequence` order, each once; a
/// failed one waits for its retry and lets the next ones go; order holds across the senders' turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhooks_sender_pipelines_its_records_and_keeps_one_post_at_a_time_in_sequence_order() {
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("roots");
    std::fs::create_dir_all(roots.join("v")).unwrap();
    let clock = Arc::new(TestClock::new(1_764_000_000_000));
    let mut cfg = RuntimeConfig::new(dir.path().join("data"));
    cfg.master_key = Some(MasterKey::generate());
    cfg.storage.local_roots = vec![roots.canonicalize().unwrap()];
    cfg.webhooks = settings();
    let rt = Runtime::open(cfg, clock.clone(), Arc::new(SeededIds::new(11))).await.unwrap();
    rt.wait_ready().await;
    let (url, seen, most) = ordering_receiver(10).await;
    let (webhook_id, index_id, connector_id) = hook_on_job_starts(&rt, &roots, url).await;
    // More than two senders' turns (`WEBHOOK_SENDS_PER_TURN_MAX`): order holds across them.
    const JOBS: u64 = 150;
    let mut made = Vec::new();
    for _ in 0..JOBS {
        let rt = rt.clone();
        made.push(tokio::spawn(async move {
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
        }));
    }
    for m in made {
        m.await.unwrap();
    }
    let delivered = || rt.read(|st| st.webhooks.get(&webhook_id).map_or(0, |w| w.delivered));
    until("every delivery but the failed one delivered", || delivered() == JOBS - 1).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), usize::try_from(JOBS).unwrap(), "each delivery sent once: {seen:?}");
    assert_eq!(most.load(Ordering::SeqCst), 1, "two deliveries of one webhook were in flight at once");
    // The sequence of each delivery, from its row (delivered) or the state (the retrying one).
    let keys = rt.webhook_delivered(&webhook_id, None, 1000).unwrap();
    let rows = rt.delivered_rows(keys.iter().map(|k| k.1)).unwrap();
    let mut sequence: std::collections::HashMap<String, u64> =
        rows.iter().map(|(id, d)| (id.to_string(), d.sequence)).collect();
    let retrying = rt.read(|st| {
        st.deliveries.values().map(|d| (d.delivery_id.to_string(), d.sequence, d.status)).collect::<Vec<_>>()
    });
    assert_eq!(retrying.len(), 1, "{retrying:?}");
    assert_eq!(retrying[0].2, DeliveryStatus::Retrying);
    assert_eq!(retrying[0].0, seen[9], "the tenth one failed");
    sequence.insert(retrying[0].0.clone(), retrying[0].1);
    let order: Vec<u64> = seen.iter().map(|id| sequence[id]).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "not in sequence order: {order:?}");
    rt.shutdown().await;
}
