//! The inspector over HTTP against a real server on Postgres, when `SOURCEFLOW_PG_URL` names a
//! server (ignored otherwise): the same checks as on SQLite, on a store filled by the shop's
//! seed in a fresh schema, dropped afterwards. The binary is run on the schema too.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use sourceflow_sqlx::PostgresStore;
use sqlx::Connection as _;

/// A fresh schema, dropped when the test ends (pass or fail).
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    fn new(url: &str) -> Self {
        let stamp = uuid::Uuid::now_v7().simple().to_string();
        Self {
            url: url.to_owned(),
            name: format!("inspect_test_{}", &stamp[stamp.len() - 12..]),
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // A runtime of its own: the test's may be shutting down.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("a runtime");
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                // The name is generated above from hex digits: safe to splice.
                let drop = format!("DROP SCHEMA IF EXISTS {name} CASCADE");
                sqlx::query(&drop).execute(&mut conn).await.map(drop_unit)
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("cannot drop the test schema {}", self.name);
        }
    }
}

fn drop_unit<T>(_: T) {}

/// The server: the test is ignored unless `SOURCEFLOW_PG_URL` was set when it was built
/// (`cfg(sourceflow_pg)`, from `build.rs`), and fails here if it is run without it.
fn pg_url() -> String {
    std::env::var("SOURCEFLOW_PG_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .expect("SOURCEFLOW_PG_URL names the Postgres server of this test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn postgres_pages_paging_trace_and_markup() {
    let url = pg_url();
    let schema = Schema::new(&url);
    let store = PostgresStore::connect_with_schema(&url, &schema.name)
        .await
        .expect("connect");
    let flow = seeded(store).await;
    let store = flow.store().clone();
    let addr = serve(sourceflow_inspect::router(store.clone())).await;
    every_page_renders(&addr, &*store).await;
    paging_and_search(&addr, &*store).await;
    stream_interleaves(&addr, &*store).await;
    trace_is_causal_tree(&addr, &*store).await;
    log_pages(&addr, &*store).await;
    markup_is_text(&addr, &*store).await;

    // The binary on the same schema.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sourceflow-inspect"))
        .args([
            "--database-url",
            &url,
            "--schema",
            &schema.name,
            "--port",
            "0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the URL line");
    let served = line
        .trim()
        .strip_prefix("sourceflow-inspect listening on http://")
        .map(|url| url.trim_end_matches('/').to_owned());
    let overview = match &served {
        Some(addr) => Some(get(addr, "/streams?type=shop.Payment").await),
        None => None,
    };
    let _ = child.kill();
    let _ = child.wait();
    let listed = listed_ids(&overview.expect("the binary's URL").ok());
    assert_eq!(
        listed,
        all_ids(&*store, "shop.Payment").await[..listed.len()]
    );
    assert!(!listed.is_empty());
}
