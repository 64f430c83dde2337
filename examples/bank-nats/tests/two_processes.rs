//! The example as real processes: two workers and the API, one worker SIGKILLed between two
//! API sessions, and one SIGKILLed while a load of commands is in flight. Runs when `SOURCEFLOW_NATS_URL` and `SOURCEFLOW_PG_URL` are set; uses a
//! stream prefix and a Postgres schema of its own and removes both.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn command(prefix: &str, schema: &str, arg: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bank-nats"));
    command
        .arg(arg)
        .env("BANK_NATS_PREFIX", prefix)
        .env("SOURCEFLOW_PG_SCHEMA", schema)
        .stdin(Stdio::null());
    command
}

fn api(prefix: &str, schema: &str) -> String {
    let output = command(prefix, schema, "api")
        .output()
        .expect("run the api");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "api failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

struct Workers(Vec<Child>);

impl Workers {
    /// Two worker processes; the first creates the schema and streams before the second
    /// races it.
    fn start_two(prefix: &str, schema: &str) -> Self {
        let spawn = || {
            command(prefix, schema, "worker")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start a worker")
        };
        let mut workers = Workers(vec![spawn()]);
        std::thread::sleep(Duration::from_secs(2));
        workers.0.push(spawn());
        std::thread::sleep(Duration::from_secs(1));
        workers
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
fn an_api_process_and_worker_processes_survive_a_killed_worker() {
    let (Ok(nats), Ok(pg)) = (
        std::env::var("SOURCEFLOW_NATS_URL"),
        std::env::var("SOURCEFLOW_PG_URL"),
    ) else {
        panic!("built with SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL set, run without them");
    };
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("banktest{}", &tag[..10]);
    let schema = format!("sf_banknats_{tag}");
    let mut workers = Workers::start_two(&prefix, &schema);

    let first = api(&prefix, &schema);
    assert!(
        first.contains("balance -225 after 3 movements, fees 25"),
        "{first}"
    );
    assert!(first.contains("refused: insufficient_funds"), "{first}");
    assert!(
        first.contains("invalid: bank.Deposit: amount: must be positive"),
        "{first}"
    );

    // SIGKILL one worker: the other serves every partition.
    workers.0[0].kill().expect("kill a worker");
    let _ = workers.0[0].wait();
    let second = api(&prefix, &schema);
    assert!(
        second.contains("balance -225 after 3 movements, fees 25"),
        "{second}"
    );
    drop(workers);

    cleanup(&nats, &pg, &prefix, &schema);
}

#[test]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
fn a_worker_killed_mid_load_loses_nothing_and_applies_nothing_twice() {
    let (Ok(nats), Ok(pg)) = (
        std::env::var("SOURCEFLOW_NATS_URL"),
        std::env::var("SOURCEFLOW_PG_URL"),
    ) else {
        panic!("built with SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL set, run without them");
    };
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("bankload{}", &tag[..10]);
    let schema = format!("sf_bankload_{tag}");
    let mut workers = Workers::start_two(&prefix, &schema);

    // 16 accounts x 40 deposits, sent concurrently; the first worker dies once 150 are done,
    // with commands of its partitions in flight.
    let mut load = command(&prefix, &schema, "load")
        .args(["16", "40"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the load");
    let stdout = load.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut transcript = String::new();
    let mut killed = false;
    for line in lines.by_ref() {
        let line = line.expect("read the load's output");
        transcript.push_str(&line);
        transcript.push('\n');
        let progress = line
            .strip_prefix("api: load progress ")
            .and_then(|n| n.parse::<u32>().ok());
        if !killed && progress.is_some_and(|n| n >= 100) {
            workers.0[0].kill().expect("kill a worker");
            let _ = workers.0[0].wait();
            killed = true;
        }
    }
    let status = load.wait().expect("the load finishes");
    let stderr =
        std::io::read_to_string(load.stderr.take().expect("piped stderr")).unwrap_or_default();
    assert!(killed, "the load ended before the kill:\n{transcript}");
    assert!(status.success(), "the load failed:\n{transcript}\n{stderr}");
    assert!(
        transcript.contains("api: load verified: 16 accounts x 40 deposits, each applied once"),
        "{transcript}\n{stderr}"
    );
    drop(workers);
    cleanup(&nats, &pg, &prefix, &schema);
}

fn cleanup(nats: &str, pg: &str, prefix: &str, schema: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        match async_nats::connect(nats).await {
            Ok(client) => {
                let jetstream = async_nats::jetstream::new(client);
                if let Err(e) = sourceflow_nats::Topology::new(prefix)
                    .delete_streams(&jetstream)
                    .await
                {
                    eprintln!("cannot delete the streams {prefix}_*: {e}");
                }
            }
            Err(e) => eprintln!("cannot connect to delete the streams {prefix}_*: {e}"),
        }
        if let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(pg)
            .await
        {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .execute(&pool)
                .await;
            pool.close().await;
        }
    });
}
