//! An export that fails for good after its multipart upload began aborts the upload, so its
//! parts do not stay in the bucket (an in-memory bucket twin: object_store's `InMemory`, whose
//! aborted uploads can no longer be completed). This binary holds only this test: the failpoint
//! is on for the whole process.

use spool_core::{Command, Outcome};
use spool_model::{ConnectorId, ConnectorLocation, ConnectorScope, ExportKind, ImportMode, Provider};
use spool_runtime::{MasterKey, Runtime, RuntimeConfig, SeededIds, TestClock};
use spool_storage::twin::{TwinStore, Twins};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_that_fails_for_good_mid_upload_aborts_its_multipart_upload() {
    spool_model::enable_failpoint("export_fatal_after_first_part");
    let work = tempfile::tempdir().unwrap();
    let twin = TwinStore::new(1);
    let twins = Twins::default();
    twins.add("bucket", twin.clone());
    let mut cfg = RuntimeConfig::new(work.path().join("data"));
    cfg.master_key = Some(MasterKey::generate());
    cfg.storage.twins = Some(twins);
    // Any artifact goes up in parts of 64 bytes.
    cfg.export_part_bytes = 64;
    let rt =
        Runtime::open(cfg, Arc::new(TestClock::new(1_764_000_000_000)), Arc::new(SeededIds::new(3))).await.unwrap();
    rt.wait_ready().await;
    let connector_id = ConnectorId(rt.new_ulid());
    let create = Command::Connector(spool_core::ConnectorCommand::CreateConnector {
        connector_id,
        provider: Provider::S3,
        name: "bucket".into(),
        scopes: vec![ConnectorScope::Import, ConnectorScope::Export],
        import_mode: ImportMode::All,
        export_base_path: Some("out".into()),
        location: ConnectorLocation {
            bucket: Some("bucket".into()),
            region: Some("us-east-1".into()),
            ..Default::default()
        },
        credentials: None,
    });
    let creds = spool_storage::Credentials {
        aws_access_key_id: Some("AKIATEST".into()),
        aws_secret_access_key: Some("secret".into()),
        ..Default::default()
    };
    rt.execute(Runtime::create_connector(create, Some(creds))).await.unwrap();
    let Outcome::Index(index) = rt
        .execute(Command::Index(spool_core::IndexCommand::CreateIndex {
            name: "i".into(),
            user_id: "u".into(),
            description: None,
        }))
        .await
        .unwrap()
    else {
        panic!("no index")
    };
    let Outcome::Export(export_id) = rt
        .execute(Command::Export(spool_core::ExportCommand::CreateExport {
            kind: ExportKind::Index,
            target: index.to_string(),
            run_ids: Vec::new(),
            connector_id: Some(connector_id),
            subpath: Some("x".into()),
            user_id: "u".into(),
        }))
        .await
        .unwrap()
    else {
        panic!("no export")
    };
    let mut failed = None;
    for _ in 0..500 {
        failed = rt.read(|st| {
            st.exports
                .get(&export_id)
                .filter(|e| e.status.as_str() == "failed")
                .map(|e| (e.upload_id.clone(), e.parts.clone(), e.destination.clone()))
        });
        if failed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (upload_id, parts, destination) = failed.expect("the export failed");
    let upload_id = upload_id.expect("the upload had begun");
    assert_eq!(parts.len(), 1, "one part was written before the failure");
    let spool_model::ExportDestination::Connector { object_path, .. } = destination else { panic!("{destination:?}") };
    let location = object_store::path::Path::parse(&object_path).unwrap();
    // The upload was aborted: completing it with its recorded part is refused.
    use object_store::multipart::{MultipartStore, PartId};
    let part = PartId { content_id: parts[0].clone() };
    let completed =
        MultipartStore::complete_multipart(twin.contents().as_ref(), &location, &upload_id, vec![part]).await;
    assert!(completed.is_err(), "the failed export's multipart upload was left open");
    rt.shutdown().await;
}
