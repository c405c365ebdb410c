//! The sequencer: a batch decides each command on the state the earlier ones left (so of 16
//! concurrent keys with the same secret exactly one is created), and a failed commit answers
//! every command of its batch with an error and leaves the state equal to the fold of the log.

use redb::StorageBackend;
use redb::backends::InMemoryBackend;
use spool_core::{ApiKeyCommand, Command, IndexCommand, Secret};
use spool_log::{EventLog, RedbLog, RedbLogOptions};
use spool_runtime::{MasterKey, Runtime, RuntimeConfig, RuntimeError, SeededIds, TestClock};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug)]
struct Flaky {
    inner: Arc<InMemoryBackend>,
    fail: Arc<AtomicBool>,
}

fn full() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left on device")
}

impl StorageBackend for Flaky {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        if self.fail.load(Ordering::SeqCst) { Err(full()) } else { self.inner.set_len(len) }
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        if self.fail.load(Ordering::SeqCst) { Err(full()) } else { self.inner.sync_data() }
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        if self.fail.load(Ordering::SeqCst) { Err(full()) } else { self.inner.write(offset, data) }
    }
}

fn index(name: &str) -> Command {
    Command::Index(IndexCommand::CreateIndex { name: name.into(), user_id: "u".into(), description: None })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_fails_its_whole_batch_and_the_state_stays_the_fold_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let mem = Arc::new(InMemoryBackend::new());
    let master = MasterKey::generate();
    let open = |mem: &Arc<InMemoryBackend>| {
        Arc::new(
            RedbLog::open_with_backend(Flaky { inner: mem.clone(), fail: fail.clone() }, RedbLogOptions::default())
                .unwrap(),
        )
    };
    let config = || {
        let mut cfg = RuntimeConfig::new(dir.path());
        cfg.master_key = Some(master.clone());
        cfg.run_effects = false;
        cfg
    };
    let clock = Arc::new(TestClock::new(1_764_000_000_000));
    let log = open(&mem);
    let rt = Runtime::start(log.clone(), config(), clock.clone(), Arc::new(SeededIds::new(3))).await.unwrap();
    rt.wait_ready().await;

    // Decisions within one batch see each other: one secret, one key.
    let tries: Vec<_> = (0..16)
        .map(|i| {
            let rt = rt.clone();
            tokio::spawn(async move {
                rt.execute(Command::ApiKey(ApiKeyCommand::CreateApiKey {
                    name: format!("k{i}"),
                    scopes: vec![spool_model::Scope::Read],
                    expires_in_days: None,
                    secret: Secret("sk_live_the_same_secret".into()),
                }))
                .await
            })
        })
        .collect();
    let mut created = 0;
    for t in tries {
        match t.await.unwrap() {
            Ok(_) => created += 1,
            Err(RuntimeError::Domain(spool_core::DomainError::InvalidState(_))) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(created, 1);

    rt.execute(index("kept")).await.unwrap();
    let head = log.head();
    fail.store(true, Ordering::SeqCst);
    let lost: Vec<_> = (0..8)
        .map(|i| {
            let rt = rt.clone();
            tokio::spawn(async move { rt.execute(index(&format!("lost{i}"))).await })
        })
        .collect();
    for t in lost {
        assert!(matches!(t.await.unwrap(), Err(RuntimeError::Log(_))), "a command of a failed batch succeeded");
    }
    assert_eq!(log.head(), head);
    rt.read(|st| {
        assert_eq!(st.applied_seq, head, "the state holds events the log does not");
        assert!(st.indexes.values().all(|i| !i.name.starts_with("lost")));
        assert_eq!(st.indexes.len(), 1);
    });

    // redb refuses every write after an I/O error until the file is opened again: the runtime
    // keeps answering reads from the state (the fold of what is durable) and every write with
    // an error; a restart (here: a new log over the same storage) carries on from the log.
    fail.store(false, Ordering::SeqCst);
    assert!(matches!(rt.execute(index("refused")).await, Err(RuntimeError::Log(_))));
    assert_eq!(rt.read(|st| st.indexes.len()), 1);
    rt.shutdown().await;
    drop(rt);
    drop(log);
    let log = open(&mem);
    let rt = Runtime::start(log.clone(), config(), clock, Arc::new(SeededIds::new(4))).await.unwrap();
    rt.wait_ready().await;
    rt.execute(index("after")).await.unwrap();
    rt.read(|st| {
        let mut names: Vec<_> = st.indexes.values().map(|i| i.name.clone()).collect();
        names.sort();
        assert_eq!(names, ["after", "kept"]);
        assert_eq!(st.applied_seq, log.head());
        assert_eq!(st.api_keys.len(), 1);
    });
    rt.shutdown().await;
}
