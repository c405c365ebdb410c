//! The sequencer alone, on the in-memory log (`MemLog`) and a host of the test's own: no
//! runtime, no disk. Ordering, batching, the pipeline (batch N+1 decided while N is on its
//! way, readers never seeing it), a failed commit in the middle of a pipeline, a panicking
//! decision.

use spool_core::{Command, IndexCommand, Outcome, State, WorkKey};
use spool_log::{EventLog, MemLog};
use spool_runtime::{
    Keyring, MasterKey, Reply, RuntimeError, SeededIds, Sequencer, SequencerConfig, SequencerHost, SequencerThreads,
    Submission, TestClock, Work, inbox,
};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// The state readers see, folded from what the sequencer publishes.
#[derive(Default)]
struct TestHost {
    state: RwLock<State>,
    published: Mutex<Vec<u64>>,
}

impl SequencerHost for TestHost {
    fn publish(&self, events: &[spool_model::Envelope]) {
        let mut st = self.state.write().unwrap();
        for env in events {
            assert_eq!(env.seq, st.applied_seq + 1, "published in order, without gaps");
            spool_core::evolve(&mut st, env);
            self.published.lock().unwrap().push(env.seq);
        }
    }
    fn committed(&self, _touched: &BTreeSet<WorkKey>, _last_seq: u64, _timers: bool) {}
    fn durable_state(&self) -> State {
        self.state.read().unwrap().clone()
    }
}

struct Rig {
    log: Arc<MemLog>,
    host: Arc<TestHost>,
    tx: tokio::sync::mpsc::Sender<Submission>,
    threads: Option<SequencerThreads>,
}

type Answer = tokio::sync::oneshot::Receiver<Result<(Reply, Outcome), RuntimeError>>;

impl Rig {
    async fn new() -> Rig {
        let log = Arc::new(MemLog::new());
        let keyring = Arc::new(Keyring::load(MasterKey::generate(), log.clone()).await.unwrap());
        let host = Arc::new(TestHost::default());
        let (tx, rx) = inbox();
        let seq = Sequencer::new(
            log.clone(),
            keyring,
            Arc::new(TestClock::new(1_764_000_000_000)),
            Arc::new(SeededIds::new(7)),
            host.clone(),
            SequencerConfig::default(),
        );
        let start = host.clone();
        let threads = seq.spawn(rx, move || start.durable_state()).unwrap();
        Rig { log, host, tx, threads: Some(threads) }
    }

    async fn submit(&self, cmd: Command) -> Answer {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let render = Box::new(|_: &State, _: Outcome| Reply { status: 200, body: Vec::new() });
        self.tx.send(Submission { work: Work::from(cmd), idem: None, side: Vec::new(), render, reply }).await.unwrap();
        rx
    }

    fn decided(&self) -> usize {
        self.threads.as_ref().unwrap().decided_batches()
    }

    fn index_names(&self) -> BTreeSet<String> {
        self.host.state.read().unwrap().indexes.values().map(|i| i.name.clone()).collect()
    }

    /// The host's state is the fold of the log, byte for byte.
    fn assert_reads_equal_the_log(&self) {
        let fold = spool_runtime::fold::load_state(&*self.log).unwrap();
        let reads = self.host.durable_state();
        assert_eq!(reads.applied_seq, self.log.head());
        assert_eq!(reads.to_snapshot(), fold.to_snapshot(), "what readers see is the fold of the log");
        let seqs: Vec<u64> = self.log.read_from(1, 4096).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=self.log.head()).collect::<Vec<_>>(), "no gap in the log");
    }

    async fn stop(mut self) {
        drop(self.tx);
        let threads = self.threads.take().unwrap();
        tokio::task::spawn_blocking(move || threads.join()).await.unwrap();
    }
}

fn index(name: &str) -> Command {
    Command::Index(IndexCommand::CreateIndex { name: name.into(), user_id: "u".into(), description: None })
}

async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..2000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{what}: not reached in 10 s");
}

async fn answer(rx: Answer) -> Result<(Reply, Outcome), RuntimeError> {
    tokio::time::timeout(Duration::from_secs(10), rx).await.expect("answered within 10 s").expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_decided_in_order_and_answered_once_durable() {
    let rig = Rig::new().await;
    let mut pending = Vec::new();
    for i in 0..300 {
        pending.push(rig.submit(index(&format!("index {i:03}"))).await);
    }
    for rx in pending {
        answer(rx).await.unwrap();
    }
    assert_eq!(rig.index_names().len(), 300);
    // The log holds them in the order they were submitted.
    let names: Vec<String> = rig
        .log
        .read_from(1, 4096)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.event {
            spool_model::Event::IndexCreated { name, .. } => Some(name),
            _ => None,
        })
        .collect();
    assert_eq!(names, (0..300).map(|i| format!("index {i:03}")).collect::<Vec<_>>());
    rig.assert_reads_equal_the_log();
    // Fewer commits than commands: batches, and batches merged while the log was busy.
    assert!(rig.log.commits() < 300, "{} commits for 300 commands", rig.log.commits());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_is_decided_while_one_is_on_its_way_and_readers_never_see_an_undurable_decision() {
    let rig = Rig::new().await;
    rig.log.pause();
    let a = rig.submit(index("first")).await;
    until("the first batch handed to the log", || rig.log.queued() == 1).await;
    let b = rig.submit(index("second")).await;
    until("the second batch decided", || rig.decided() == 2).await;
    // Decided, not durable: nobody is answered and readers see neither.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(rig.index_names().is_empty(), "a reader saw a decision that is not durable");
    assert_eq!(rig.log.head(), 0);
    let mut a = a;
    assert!(a.try_recv().is_err(), "answered before its commit");
    rig.log.resume();
    answer(a).await.unwrap();
    answer(b).await.unwrap();
    assert_eq!(rig.index_names(), BTreeSet::from(["first".to_string(), "second".to_string()]));
    rig.assert_reads_equal_the_log();
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_fails_its_batch_and_every_batch_decided_on_it_and_decisions_go_on_from_the_log() {
    let rig = Rig::new().await;
    answer(rig.submit(index("before")).await).await.unwrap();
    rig.log.pause();
    let a = rig.submit(index("in flight")).await;
    until("a handed to the log", || rig.log.queued() == 1).await;
    // Decided on top of `a` while it is on its way: a creation, and a refusal (it writes
    // nothing, but its answer waits for what was decided before it).
    let b = rig.submit(index("on top")).await;
    let c = rig.submit(index("")).await;
    // One batch or two, depending on when the decide thread woke.
    until("b and c decided", || rig.decided() >= 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // `a`'s commit lands; the next one (b and c, merged) fails.
    rig.log.fail_commits_after(1);
    rig.log.resume();
    answer(a).await.unwrap();
    let b = answer(b).await;
    assert!(matches!(b, Err(RuntimeError::Log(_))), "{b:?}");
    let c = answer(c).await;
    assert!(
        matches!(c, Err(RuntimeError::Log(_))),
        "a refusal decided on a failed batch is not answered as one: {c:?}"
    );
    rig.log.heal();
    // The sequencer decides again on what is durable: `on top` was never written.
    answer(rig.submit(index("on top")).await).await.unwrap();
    let refused = answer(rig.submit(index("")).await).await;
    assert!(matches!(refused, Err(RuntimeError::Domain(_))), "{refused:?}");
    assert_eq!(
        rig.index_names(),
        BTreeSet::from(["before".to_string(), "in flight".to_string(), "on top".to_string()])
    );
    rig.assert_reads_equal_the_log();
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_decision_fails_its_command_alone() {
    spool_model::enable_failpoint("decide_panic");
    let rig = Rig::new().await;
    rig.log.pause();
    let first = rig.submit(index("one")).await;
    let poison = rig.submit(index("spool-failpoint-decide-panic")).await;
    let last = rig.submit(index("two")).await;
    rig.log.resume();
    answer(first).await.unwrap();
    match answer(poison).await {
        Err(RuntimeError::Poisoned { code: "decision_failed", message }) => {
            assert!(message.contains("failpoint"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    answer(last).await.unwrap();
    assert_eq!(rig.index_names(), BTreeSet::from(["one".to_string(), "two".to_string()]));
    rig.assert_reads_equal_the_log();
    rig.stop().await;
}
