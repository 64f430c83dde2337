//! An ad-hoc measurement, not a test of behaviour: commands per second through `SourceFlow` on
//! `PostgresStore` with 1, 8 and 32 concurrent senders, each on its own stream, with group
//! commit off (every unit of work its own transaction) and on, interleaved in one run.
//!
//! `cargo test -p sourceflow-tests --test postgres_senders_timing -- --ignored --nocapture`
//! with `SOURCEFLOW_PG_URL` set; `SOURCEFLOW_TIMING_COMMANDS` sets the commands per cell.

use std::sync::Arc;
use std::time::Instant;

use sourceflow_sqlx::PostgresStore;
use sourceflow_tests::scenarios::Add;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn commands_per_second_by_senders() {
    let url = sourceflow_tests::backends::pg_url();
    let commands: usize = std::env::var("SOURCEFLOW_TIMING_COMMANDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1920);
    let rounds = 3;
    let mut table: Vec<(usize, bool, Vec<f64>)> = Vec::new();
    for round in 0..rounds {
        for senders in [1usize, 8, 32] {
            for group_commit in [false, true] {
                let schema = format!("sf_timing_{}", uuid::Uuid::new_v4().simple());
                let store = PostgresStore::builder(&url)
                    .schema(&schema)
                    .max_connections(32)
                    .group_commit(group_commit)
                    .connect()
                    .await
                    .unwrap();
                let flow = sourceflow_tests::scenarios::flow(Arc::new(store)).await;
                // One command per stream first, so the cells time steady-state commands.
                for s in 0..senders {
                    flow.send(format!("s{round}-{s}").as_str(), Add { n: 1 })
                        .await
                        .unwrap();
                }
                let per_sender = commands / senders;
                let started = Instant::now();
                let tasks: Vec<_> = (0..senders)
                    .map(|s| {
                        let flow = flow.clone();
                        tokio::spawn(async move {
                            let id = format!("s{round}-{s}");
                            for _ in 0..per_sender {
                                flow.send(id.as_str(), Add { n: 1 }).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                let rate = (per_sender * senders) as f64 / started.elapsed().as_secs_f64();
                match table
                    .iter_mut()
                    .find(|(n, g, _)| *n == senders && *g == group_commit)
                {
                    Some((_, _, rates)) => rates.push(rate),
                    None => table.push((senders, group_commit, vec![rate])),
                }
                drop(flow);
                sourceflow_tests::backends::drop_schema(&url, &schema).await;
            }
        }
    }
    println!("senders | group commit | cmd/s per round | median");
    for (senders, group_commit, mut rates) in table {
        let shown: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        rates.sort_by(f64::total_cmp);
        println!(
            "{senders:>7} | {:>12} | {} | {:.0}",
            if group_commit { "on" } else { "off" },
            shown.join(" / "),
            rates[rates.len() / 2]
        );
    }
}
