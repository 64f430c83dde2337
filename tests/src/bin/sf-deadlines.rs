//! A scheduler process for the multi-process deadline tests: runs a flow with its scheduler on
//! a shared database until no schedule is left pending, printing how many are.
//!
//! ```text
//! sf-deadlines <sqlite:PATH | postgres:URL#SCHEMA> <lease-ms> [tick-delay-ms]
//! ```
//!
//! With a tick delay, every tick's handler takes that long, so the process holds its claims
//! most of the time (the process the tests kill).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use sourceflow::schedule::SchedulerOptions;
use sourceflow::store::Store;
use sourceflow::SourceFlow;
use sourceflow_tests::deadlines::{ReservationSaga, TickSaga, TICK_DELAY_MS};

async fn open_store(spec: &str) -> Result<Arc<dyn Store>, String> {
    if let Some(path) = spec.strip_prefix("sqlite:") {
        let store = sourceflow_sqlx::SqliteStore::open(path)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Arc::new(store));
    }
    if let Some(rest) = spec.strip_prefix("postgres:") {
        let (url, schema) = rest.rsplit_once('#').ok_or("postgres:URL#SCHEMA")?;
        let store = sourceflow_sqlx::PostgresStore::builder(url)
            .schema(schema)
            .max_connections(4)
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Arc::new(store));
    }
    Err(format!("unknown store {spec:?}"))
}

async fn run(args: &[String]) -> Result<(), String> {
    let (spec, lease, delay) = match args {
        [spec, lease] => (spec, lease, None),
        [spec, lease, delay] => (spec, lease, Some(delay)),
        _ => return Err("usage: sf-deadlines STORE LEASE_MS [TICK_DELAY_MS]".to_owned()),
    };
    let lease: u64 = lease.parse().map_err(|_| "LEASE_MS must be a number")?;
    if let Some(delay) = delay {
        let delay: u64 = delay
            .parse()
            .map_err(|_| "TICK_DELAY_MS must be a number")?;
        TICK_DELAY_MS.store(delay, std::sync::atomic::Ordering::Relaxed);
    }
    let flow = SourceFlow::builder()
        .shared_store(open_store(spec).await?)
        .without_discovery()
        .saga(ReservationSaga)
        .saga(TickSaga)
        .scheduler(
            SchedulerOptions::new()
                .poll(Duration::from_millis(20))
                .batch(32)
                .lease(Duration::from_millis(lease)),
        )
        .build()
        .await
        .map_err(|e| e.to_string())?;
    println!("ready");
    loop {
        let pending = flow
            .pending_schedules(None, 1)
            .await
            .map_err(|e| e.to_string())?;
        if pending.is_empty() {
            println!("done");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sf-deadlines: {e}");
            ExitCode::FAILURE
        }
    }
}
