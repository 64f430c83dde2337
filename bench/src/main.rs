//! `sourceflow-bench`: runs the workloads and prints the ratio table.
//!
//! ```text
//! sourceflow-bench [--quick] [--check] [--only w1,w2,...]
//! ```
//! `SOURCEFLOW_PG_URL` enables W5 and W8 (Postgres), with `SOURCEFLOW_NATS_URL` also W9 (NATS). `SOURCEFLOW_BENCH_DIR` chooses where the SQLite
//! files go (default: the system temporary directory). The table goes to stdout, progress to
//! stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use sourceflow_bench::cleanup::{self, Leftover};
use sourceflow_bench::report::{self, Row};
use sourceflow_bench::workloads::{self, progress, Settings};

/// Every system in the table (sourceflow, the peers, the raw floors) runs on mimalloc, the
/// allocator a throughput-minded service would pick: glibc's spends a visible share of a
/// multi-threaded async process in its free-list bookkeeping. BENCHMARKS.md compares both.
/// (The `count-allocations` feature replaces it with a counting allocator.)
#[cfg(not(feature = "count-allocations"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str =
    "usage: sourceflow-bench [--quick] [--check] [--only w1,w2,w3,w4,w5,w6,w7,w8,w9,w10,w11,w12]

  --quick   smaller sizes, the whole run in under two minutes
  --check   exit with status 1 if a target is missed (or a workload fails)
  --only    run only these workloads (w2 also runs for w3)

environment:
  SOURCEFLOW_PG_URL     Postgres URL for W5, W8 and W9 (fresh schemas are created and dropped)
  SOURCEFLOW_NATS_URL   NATS JetStream URL for W9 (fresh streams are created and deleted)
  SOURCEFLOW_BENCH_DIR  where the SQLite files go (default: the temporary directory)

Ctrl-C (or SIGTERM) stops the run, removes what it made (schemas, streams, files) and exits
with status 130.";

struct Args {
    quick: bool,
    check: bool,
    only: Option<Vec<String>>,
    out: Option<PathBuf>,
    db: Option<PathBuf>,
    events: u64,
}

fn parse() -> anyhow::Result<Args> {
    let mut args = Args {
        quick: false,
        check: false,
        only: None,
        out: None,
        db: None,
        events: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--check" => args.check = true,
            "--only" => {
                args.only = Some(
                    value()?
                        .split(',')
                        .map(|s| s.trim().to_ascii_lowercase())
                        .collect(),
                )
            }
            "--out" => args.out = Some(value()?.into()),
            "--db" => args.db = Some(value()?.into()),
            "--events" => args.events = value()?.parse().context("--events takes a number")?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sourceflow-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the Tokio runtime")?;

    // Child phases, run by the parent in their own process.
    if let Some(only) = &args.only {
        if let [phase] = only.as_slice() {
            let result = match phase.as_str() {
                "w1-cqrs-child" => Some(runtime.block_on(workloads::w1_cqrs_child(args.quick))?),
                "w7-child" => {
                    let db = args.db.as_deref().context("w7-child needs --db")?;
                    Some(runtime.block_on(workloads::w7_child(db, args.events))?)
                }
                _ => None,
            };
            if let Some(result) = result {
                let out = args.out.as_deref().context("child phases need --out")?;
                std::fs::write(out, result.to_string())?;
                return Ok(ExitCode::SUCCESS);
            }
        }
    }

    const WORKLOADS: [&str; 12] = [
        "w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "w9", "w10", "w11", "w12",
    ];
    if let Some(unknown) = args
        .only
        .iter()
        .flatten()
        .find(|w| !WORKLOADS.contains(&w.as_str()))
    {
        bail!("unknown workload {unknown:?} in --only\n\n{USAGE}");
    }
    let wanted = |w: &str| args.only.as_ref().is_none_or(|o| o.iter().any(|x| x == w));
    let base = std::env::var_os("SOURCEFLOW_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("sourceflow-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("cannot create a directory in {}", base.display()))?;
    let _dir_registered = cleanup::register(Leftover::Dir(dir.path().to_path_buf()));
    let settings = Settings {
        quick: args.quick,
        pg_url: std::env::var("SOURCEFLOW_PG_URL")
            .ok()
            .filter(|u| !u.is_empty()),
        nats_url: std::env::var("SOURCEFLOW_NATS_URL")
            .ok()
            .filter(|u| !u.is_empty()),
        exe: std::env::current_exe().context("cannot find this executable")?,
        dir: dir.path().to_path_buf(),
    };
    let started = std::time::Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut failed = false;
    let mut record = |id: &'static str, outcome: anyhow::Result<Vec<Row>>| match outcome {
        Ok(new) => rows.extend(new),
        Err(e) => {
            progress(format!("{id} failed: {e:#}"));
            failed = true;
            rows.push(Row::not_available(
                id,
                "(workload failed)",
                format!("{e:#}"),
            ));
        }
    };
    let workloads = async {
        let path = dir.path();
        if wanted("w1") {
            record("W1", workloads::w1(&settings).await);
        }
        if wanted("w2") || wanted("w3") {
            match workloads::w2(&settings, path).await {
                Ok((new, w2)) => {
                    record("W2", Ok(new));
                    if wanted("w3") {
                        record("W3", workloads::w3(&settings, path, w2).await);
                    }
                }
                Err(e) => record("W2", Err(e)),
            }
        }
        if wanted("w4") {
            record("W4", workloads::w4(&settings, path).await);
        }
        if wanted("w5") {
            record("W5", workloads::w5(&settings).await);
        }
        if wanted("w6") {
            record("W6", workloads::w6(&settings, path).await);
        }
        if wanted("w7") {
            record("W7", workloads::w7(&settings, path).await);
        }
        if wanted("w8") {
            record("W8", workloads::w8::w8(&settings).await);
        }
        if wanted("w9") {
            record("W9", workloads::w9::w9(&settings).await);
        }
        if wanted("w10") {
            record("W10", workloads::w10::w10(&settings).await);
        }
        if wanted("w11") {
            record("W11", workloads::w11::w11(&settings, path).await);
        }
        if wanted("w12") {
            record("W12", workloads::w12::w12(&settings, path).await);
        }
    };
    // Interrupted, the workloads stop where they are (their futures dropped) and what they
    // made outside the process is removed before exiting.
    let interrupted = runtime.block_on(async {
        tokio::select! {
            () = workloads => false,
            () = cleanup::interrupted() => true,
        }
    });
    if interrupted {
        progress("interrupted: removing what this run made");
        let failed = runtime.block_on(cleanup::remove_all());
        drop(runtime);
        if failed > 0 {
            eprintln!("sourceflow-bench: {failed} leftover(s) could not be removed");
        }
        return Ok(ExitCode::from(130));
    }
    drop(runtime);

    println!(
        "sourceflow-bench ({} run, {:.0} s)\n",
        if args.quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64()
    );
    print!("{}", report::table(&rows));
    let missed = rows.iter().filter(|r| r.met() == Some(false)).count();
    println!("\n{missed} target(s) missed.");
    if args.check && (missed > 0 || failed) {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
