//! A load process for the multi-process and crash tests: sends commands against a shared
//! database and prints its progress, one line per committed command.
//!
//! ```text
//! sf-load <sqlite:PATH | postgres:URL#SCHEMA> tally <id> <count>
//! sf-load <sqlite:PATH | postgres:URL#SCHEMA> bank <prefix> <accounts>
//! sf-load <sqlite:PATH | postgres:URL#SCHEMA> spread <prefix> <count>
//! sf-load <sqlite:PATH | postgres:URL#SCHEMA> spread-write-side <prefix> <count>
//! sf-load <sqlite:PATH | postgres:URL#SCHEMA> follow-tally - 0
//! sf-load <sqlite:PATH | postgres:URL#SCHEMA> tally-until-deleted <id> <count>
//! sf-load <sqlite:PATH | postgres:URL#SCHEMA> notes <member> <count>
//! sf-load <sqlite:PATH | postgres:URL#SCHEMA> read-notes <member> 0
//! ```
//! `tally` adds 1 to one tally `count` times (contention across processes); `bank` opens
//! accounts, deposits and overdraws each (so every account triggers a reaction and a
//! follow-up command through the outbox); `spread` runs [`SENDERS`] concurrent senders, each
//! adding 1 to its own tally `<prefix>-<k>` `count` times (one line when all are done);
//! `spread-write-side` does the same with the tally's saga alone (no view: another process
//! follows the log). `follow-tally` is that other process: it follows the log with the tally's
//! view until it is killed, printing `applied <n>` after each batch it applies.
//! `tally-until-deleted` adds 1 like `tally`, printing each receipt's sequence, and stops with
//! `deleted` once a send is refused because another process deleted the stream. `notes` keeps
//! `count` personal notes about a member, a line per note; `read-notes` replays the member and
//! prints `notes <n> redacted <r>`.

use std::process::ExitCode;
use std::sync::Arc;

use bank::{Deposit, OpenAccount, Withdraw};
use sourceflow::prelude::*;
use sourceflow::store::Store;
use sourceflow_tests::members::{note, Member};
use sourceflow_tests::scenarios::{Add, TallySaga, TallyView};

/// The concurrent senders of `spread`.
const SENDERS: usize = 16;

async fn open_store(spec: &str) -> Result<Arc<dyn Store>, String> {
    if let Some(path) = spec.strip_prefix("sqlite:") {
        let store = sourceflow_sqlx::SqliteStore::open(path)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Arc::new(store));
    }
    if let Some(rest) = spec.strip_prefix("postgres:") {
        let (url, schema) = rest.rsplit_once('#').ok_or("postgres:URL#SCHEMA")?;
        let store = sourceflow_sqlx::PostgresStore::connect_with_schema(url, schema)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Arc::new(store));
    }
    Err(format!("unknown store {spec:?}"))
}

async fn run(args: &[String]) -> Result<(), String> {
    let [spec, mode, key, count] = args else {
        return Err("usage: sf-load STORE (tally|bank) KEY COUNT".to_owned());
    };
    let count: u64 = count.parse().map_err(|_| "COUNT must be a number")?;
    let builder = SourceFlow::builder().shared_store(open_store(spec).await?);
    let builder = match mode.as_str() {
        "spread-write-side" => builder.without_discovery().saga(TallySaga),
        "follow-tally" => builder.without_discovery().view(TallyView),
        _ => builder,
    };
    let flow = builder.build().await.map_err(|e| e.to_string())?;
    match mode.as_str() {
        "tally" => {
            for i in 1..=count {
                flow.send(key.as_str(), Add { n: 1 })
                    .await
                    .map_err(|e| e.to_string())?;
                println!("committed {i}");
            }
        }
        "tally-until-deleted" => {
            for _ in 1..=count {
                match flow.send(key.as_str(), Add { n: 1 }).await {
                    Ok(receipt) => println!("committed {}", receipt.sequence),
                    Err(Error::StreamDeleted { .. }) => {
                        println!("deleted");
                        return Ok(());
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        "bank" => {
            for i in 1..=count {
                let id = EntityId::from(format!("{key}-{i}"));
                let owner = format!("owner {i}");
                flow.send(
                    &id,
                    OpenAccount {
                        owner,
                        overdraft_limit: 1_000,
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
                flow.send(&id, Deposit { amount: 100 })
                    .await
                    .map_err(|e| e.to_string())?;
                flow.send(&id, Withdraw { amount: 150 })
                    .await
                    .map_err(|e| e.to_string())?;
                println!("committed {i}");
            }
        }
        "spread" | "spread-write-side" => {
            let senders = (0..SENDERS).map(|k| {
                let (flow, id) = (flow.clone(), EntityId::from(format!("{key}-{k}")));
                tokio::spawn(async move {
                    for _ in 0..count {
                        flow.send(&id, Add { n: 1 })
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Ok::<_, String>(())
                })
            });
            for sender in futures_util::future::join_all(senders).await {
                sender.map_err(|e| e.to_string())??;
            }
            println!("committed {}", SENDERS as u64 * count);
        }
        "follow-tally" => {
            use std::io::Write as _;
            flow.follow_with(|p| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "applied {}", p.applied);
                let _ = out.flush();
            })
            .await
            .map_err(|e| e.to_string())?;
        }
        "notes" => {
            for i in 1..=count {
                flow.send(key.as_str(), note(key, i))
                    .await
                    .map_err(|e| e.to_string())?;
                println!("committed {i}");
            }
        }
        "read-notes" => {
            let member: Member = flow.replay(key.as_str()).await.map_err(|e| e.to_string())?;
            let redacted = member.notes.iter().filter(|n| n.is_redacted()).count();
            println!("notes {} redacted {redacted}", member.notes.len());
        }
        other => return Err(format!("unknown mode {other:?}")),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sf-load: {e}");
            ExitCode::FAILURE
        }
    }
}
