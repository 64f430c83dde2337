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

/// One line of a span capture (`BANK_NATS_TRACE_FILE`): the span's name and fields, and the
/// trace id it belongs to.
#[derive(Debug)]
struct Captured {
    name: String,
    fields: std::collections::HashMap<String, String>,
}

impl Captured {
    fn get(&self, field: &str) -> &str {
        self.fields.get(field).map_or("", String::as_str)
    }
}

fn captured(path: &std::path::Path) -> Vec<Captured> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let fields: std::collections::HashMap<String, String> = line
                .split('\t')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            Captured {
                name: fields.get("span").cloned().unwrap_or_default(),
                fields,
            }
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(sourceflow_nats),
    ignore = "set SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL to run"
)]
fn an_api_session_is_one_trace_through_the_worker_process() {
    let (Ok(nats), Ok(pg)) = (
        std::env::var("SOURCEFLOW_NATS_URL"),
        std::env::var("SOURCEFLOW_PG_URL"),
    ) else {
        panic!("built with SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL set, run without them");
    };
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("banktrace{}", &tag[..10]);
    let schema = format!("sf_banktrace_{tag}");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (api_spans, worker_spans) = (
        dir.path().join("api.spans"),
        dir.path().join("worker.spans"),
    );
    let worker = command(&prefix, &schema, "worker")
        .env("BANK_NATS_TRACE_FILE", &worker_spans)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a worker");
    let workers = Workers(vec![worker]);
    std::thread::sleep(Duration::from_secs(2));

    let output = command(&prefix, &schema, "api")
        .env("BANK_NATS_TRACE_FILE", &api_spans)
        .output()
        .expect("run the api");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "api failed: {stdout}");
    assert!(
        stdout.contains("balance -225 after 3 movements, fees 25"),
        "{stdout}"
    );

    // The API process: the session's span and the sends inside it, all of one trace.
    let api = captured(&api_spans);
    let session = api
        .iter()
        .find(|s| s.name == "bank.api.session")
        .unwrap_or_else(|| panic!("no session span in {api:?}"));
    let trace_id = session.get("trace_id").to_owned();
    assert_eq!(trace_id.len(), 32, "{session:?}");
    let sends: Vec<&Captured> = api
        .iter()
        .filter(|s| s.name == "sourceflow.nats.send")
        .collect();
    assert_eq!(
        sends.len(),
        5,
        "open, deposit, withdraw, refused and invalid: {api:?}"
    );
    for send in &sends {
        assert_eq!(send.get("trace_id"), trace_id, "{send:?}");
        assert_eq!(
            send.get("parent_span_id"),
            session.get("span_id"),
            "{send:?}"
        );
    }
    let send_ids: Vec<&str> = sends.iter().map(|s| s.get("span_id")).collect();

    // The worker process writes a span when it closes: wait for the views' spans (the last).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let worker_side = loop {
        let spans = captured(&worker_spans);
        let events = spans
            .iter()
            .filter(|s| s.name == "sourceflow.nats.event" && s.get("trace_id") == trace_id)
            .count();
        if events >= 4 || std::time::Instant::now() >= deadline {
            break spans;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(workers);
    let in_trace = |name: &str| -> Vec<&Captured> {
        worker_side
            .iter()
            .filter(|s| s.name == name && s.get("trace_id") == trace_id)
            .collect()
    };
    // Each command the API sent is handled in a span whose parent is the API's send span.
    let commands = in_trace("sourceflow.nats.command");
    assert_eq!(commands.len(), 5, "{worker_side:#?}");
    for command in &commands {
        assert!(
            send_ids.contains(&command.get("parent_span_id")),
            "{command:?} {send_ids:?}"
        );
    }
    // Inside them the runtime runs each command, and commits open, deposit and withdraw (the
    // refused and the invalid one commit nothing).
    assert_eq!(in_trace("sourceflow.send").len(), 5, "{worker_side:#?}");
    assert!(in_trace("sourceflow.commit").len() >= 3, "{worker_side:#?}");
    // The views receive the commands' events in the same trace, each one a child of the
    // handling of its command: opened, deposited, withdrawn, overdrawn.
    let command_ids: Vec<&str> = commands.iter().map(|s| s.get("span_id")).collect();
    let events = in_trace("sourceflow.nats.event");
    assert!(events.len() >= 4, "{worker_side:#?}");
    for event in &events {
        assert!(
            command_ids.contains(&event.get("parent_span_id")),
            "{event:?} {command_ids:?}"
        );
    }
    for name in [
        "bank.AccountOpened",
        "bank.Deposited",
        "bank.Withdrawn",
        "bank.Overdrawn",
    ] {
        assert!(
            events.iter().any(|e| e.get("event") == name),
            "{name}: {events:#?}"
        );
    }
    assert!(
        worker_side
            .iter()
            .any(|s| s.name == "sourceflow.nats.apply"),
        "{worker_side:#?}"
    );
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
