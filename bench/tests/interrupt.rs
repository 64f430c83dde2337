//! An interrupted run removes what it made outside its process: the Postgres schemas of the
//! workload under way and the directory of SQLite files. Needs `SOURCEFLOW_PG_URL` when the
//! tests are built (reported as ignored otherwise).

#[test]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
fn an_interrupted_run_removes_its_schemas_and_files() {
    #[cfg(sourceflow_pg)]
    pg::an_interrupted_run_removes_its_schemas_and_files();
}

#[cfg(sourceflow_pg)]
mod pg {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::Duration;

    /// The Postgres schemas whose names end with `_<pid>` (every schema a run makes does).
    fn schemas_of(pid: u32) -> Vec<String> {
        let url = std::env::var("SOURCEFLOW_PG_URL").expect("SOURCEFLOW_PG_URL");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&url)
                    .await
                    .expect("connect to SOURCEFLOW_PG_URL");
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'sfbench%' \
                 AND nspname LIKE $1 ORDER BY 1",
                )
                .bind(format!("%\\_{pid}"))
                .fetch_all(&pool)
                .await
                .expect("list schemas");
                pool.close().await;
                names
            })
    }

    pub fn an_interrupted_run_removes_its_schemas_and_files() {
        {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut bench = Command::new(env!("CARGO_BIN_EXE_sourceflow-bench"))
                .args(["--quick", "--only", "w8"])
                .env("SOURCEFLOW_BENCH_DIR", dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start the bench");
            let pid = bench.id();
            // Progress lines, read on a thread of their own so that waiting can time out.
            let (lines, progress) = mpsc::channel();
            let stderr = bench.stderr.take().expect("stderr");
            let reader = std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = lines.send(line);
                }
            });
            // W8 says this once every system's schema exists, before its first cell.
            loop {
                let line = progress
                    .recv_timeout(Duration::from_secs(120))
                    .expect("W8 started within two minutes");
                if line.contains("W8: Postgres,") {
                    break;
                }
            }
            let made = schemas_of(pid);
            assert!(made.len() >= 3, "the run made its schemas: {made:?}");
            assert_eq!(
                std::fs::read_dir(dir.path()).expect("bench dir").count(),
                1,
                "the run made its directory of SQLite files"
            );

            let sent = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .expect("kill -INT");
            assert!(sent.success());
            let mut said = Vec::new();
            while let Ok(line) = progress.recv_timeout(Duration::from_secs(60)) {
                said.push(line);
            }
            let status = bench.wait().expect("the bench exits");
            reader.join().expect("reader");

            assert_eq!(status.code(), Some(130), "exit status; it said: {said:#?}");
            assert_eq!(schemas_of(pid), Vec::<String>::new(), "it said: {said:#?}");
            for schema in &made {
                assert!(
                    said.iter()
                        .any(|l| l.contains(&format!("removed the Postgres schema {schema}"))),
                    "{schema} reported removed; it said: {said:#?}"
                );
            }
            assert_eq!(
                std::fs::read_dir(dir.path()).expect("bench dir").count(),
                0,
                "the SQLite files are gone; it said: {said:#?}"
            );
        }
    }
}
