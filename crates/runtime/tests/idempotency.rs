//! Idempotency records: replayed while young, swept after the TTL; a sealed record's data key
//! goes with it, so the secret it held can no longer be opened.

use spool_core::{Command, Outcome, Secret};
use spool_log::SideTable;
use spool_runtime::{IdemBody, IdemKey, IdemRecord, Reply, Runtime, RuntimeConfig, SeededIds, TestClock};
use std::sync::Arc;
use std::time::Duration;

fn key(name: &str, seal: bool) -> IdemKey {
    IdemKey { scoped: format!("env-admin|POST|/api-keys|{name}"), fingerprint: [7; 32], seal }
}

#[tokio::test]
async fn records_are_replayed_then_swept_with_their_data_keys() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(TestClock::new(1_764_000_000_000));
    let mut cfg = RuntimeConfig::new(dir.path());
    cfg.idempotency_ttl = Duration::from_secs(3600);
    cfg.master_key = Some(spool_runtime::MasterKey::generate());
    let rt = Runtime::open(cfg, clock.clone(), Arc::new(SeededIds::new(7))).await.unwrap();
    rt.wait_ready().await;
    let render = |_: &spool_core::State, out: Outcome| Reply {
        status: 201,
        body: format!("{out:?} sk_live_SECRET").into_bytes(),
    };
    let cmd = || {
        Command::ApiKey(spool_core::ApiKeyCommand::CreateApiKey {
            name: "k".into(),
            scopes: vec![spool_model::Scope::Read],
            expires_in_days: None,
            secret: Secret("sk_live_SECRET_a".into()),
        })
    };
    let first = rt.execute_idempotent(cmd(), &key("a", true), vec![], render).await.unwrap();
    let again = rt.execute_idempotent(cmd(), &key("a", true), vec![], render).await.unwrap();
    assert_eq!(first, again, "replayed while young");
    let plain = rt
        .execute_idempotent(
            Command::Index(spool_core::IndexCommand::CreateIndex {
                name: "i".into(),
                user_id: "u".into(),
                description: None,
            }),
            &key("b", false),
            vec![],
            render,
        )
        .await
        .unwrap();
    assert_eq!(plain.status, 201);
    let sealed_owner =
        match IdemRecord::decode(&rt.log().side_get(SideTable::Idempotency, &key("a", true).scoped).unwrap().unwrap())
            .unwrap()
            .body
        {
            IdemBody::Sealed(s) => s.owner,
            IdemBody::Plain(_) => panic!("the answer holding a secret must be sealed"),
        };
    assert!(rt.log().side_get(SideTable::DataKeys, &sealed_owner).unwrap().is_some());

    assert_eq!(rt.sweep_idempotency().await, 0, "nothing is old yet");
    clock.advance(3_600_001);
    assert_eq!(rt.sweep_idempotency().await, 2);
    assert!(rt.log().side_get(SideTable::Idempotency, &key("a", true).scoped).unwrap().is_none());
    assert!(rt.log().side_get(SideTable::Idempotency, &key("b", false).scoped).unwrap().is_none());
    assert!(
        rt.log().side_get(SideTable::DataKeys, &sealed_owner).unwrap().is_none(),
        "the sealed answer's key is shredded"
    );
    // A key used again after the sweep is a new request.
    let later = rt.execute_idempotent(cmd(), &key("a", true), vec![], render).await;
    assert!(later.is_err(), "the same secret again is refused by the machine: {later:?}");
}
