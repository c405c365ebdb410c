//! Helpers for the crash tests. `spool debug hammer` appends from many tasks and prints one
//! line per acknowledged append; the test kills it with SIGKILL and checks the log against
//! what was acknowledged.

use crate::DataDirArg;
use spool_log::{AppendRequest, EventLog, Expected, NewEvent, RedbLog};
use spool_model::{Event, IndexId};
use std::io::Write;
use std::sync::Arc;

#[derive(clap::Subcommand)]
pub enum DebugCmd {
    /// Append from many tasks until killed; print `ack <stream> <version> <seq>` per append.
    Hammer {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long, default_value_t = 32)]
        tasks: u32,
        /// Events per append request.
        #[arg(long, default_value_t = 1)]
        batch: u32,
    },
    /// Print `{"state_format", "digest"}` of the state the first `--until` events fold to (what
    /// `spool verify --against` asks another build).
    FoldDigest {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        until: u64,
    },
}

pub fn run(cmd: DebugCmd) -> anyhow::Result<()> {
    match cmd {
        DebugCmd::Hammer { dir, tasks, batch } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(hammer(dir, tasks, batch))
        }
        DebugCmd::FoldDigest { dir, until } => crate::offline::print_fold_digest(&dir, until),
    }
}

async fn hammer(dir: DataDirArg, tasks: u32, batch: u32) -> anyhow::Result<()> {
    let log = Arc::new(RedbLog::open_dir(&dir.data_dir)?);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1024);
    for t in 0..tasks {
        let log = log.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let stream = format!("idx_hammer{t:03}");
            let mut version = log.stream_version(&stream).expect("read version");
            let mut n = 0u64;
            loop {
                let events = (0..batch)
                    .map(|i| NewEvent {
                        at_ms: 1_764_000_000_000 + n,
                        event: Event::IndexCreated {
                            index_id: IndexId(ulid::Ulid::from_parts(
                                u64::from(t),
                                u128::from(version) + u128::from(i),
                            )),
                            name: format!("{stream}/{}", version + u64::from(i)),
                            user_id: "hammer".into(),
                        },
                    })
                    .collect();
                let done = log.append(AppendRequest::one(&stream, Expected::Exact(version), events)).await;
                let done = match done {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("append failed: {e}");
                        std::process::exit(3);
                    }
                };
                version = done.versions[0];
                n += 1;
                if tx.send(format!("ack {stream} {version} {}", done.last_seq)).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let stdout = std::io::stdout();
    while let Some(line) = rx.recv().await {
        let mut out = stdout.lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}
