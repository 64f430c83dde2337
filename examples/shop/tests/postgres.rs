//! The shop on Postgres, when `SOURCEFLOW_PG_URL` names a server (ignored otherwise): each test
//! works in fresh schemas (`--schema`) and drops them afterwards.

mod common;

use assert_cmd::Command;
use common::{events_json, order_id, run_ok};
use sqlx::Connection as _;

/// Fresh schemas, dropped when the test ends (pass or fail).
struct Schemas {
    url: String,
    names: Vec<String>,
}

impl Schemas {
    fn new(url: &str, count: usize) -> Self {
        let stamp = uuid::Uuid::now_v7().simple().to_string();
        Self {
            url: url.to_owned(),
            names: (0..count)
                .map(|i| format!("shop_test_{}_{i}", &stamp[stamp.len() - 12..]))
                .collect(),
        }
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Runtime::new() else {
            return;
        };
        runtime.block_on(async {
            let Ok(mut conn) = sqlx::PgConnection::connect(&self.url).await else {
                eprintln!("cannot connect to drop the test schemas {:?}", self.names);
                return;
            };
            for name in &self.names {
                // The names are generated above from hex digits: safe to splice.
                let drop = format!("DROP SCHEMA IF EXISTS {name} CASCADE");
                if let Err(e) = sqlx::query(&drop).execute(&mut conn).await {
                    eprintln!("cannot drop schema {name}: {e}");
                }
            }
        });
    }
}

/// The server: the test is ignored unless `SOURCEFLOW_PG_URL` was set when it was built
/// (`cfg(sourceflow_pg)`, from `build.rs`), and fails here if it is run without it.
fn pg_url() -> String {
    std::env::var("SOURCEFLOW_PG_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .expect("SOURCEFLOW_PG_URL names the Postgres server of this test")
}

fn shop(url: &str, schema: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shop"));
    cmd.args(["--database-url", url, "--schema", schema])
        .args(args)
        .env_remove("SHOP_DATABASE_URL")
        .env("NO_COLOR", "1");
    cmd
}

#[test]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
fn the_shop_runs_on_postgres_and_round_trips_through_an_export() {
    let url = pg_url();
    let schemas = Schemas::new(&url, 2);
    let (a, b) = (&schemas.names[0], &schemas.names[1]);
    let ok = |schema: &str, args: &[&str]| run_ok(shop(&url, schema, args), args);

    let id = order_id(&ok(a, &["place-order", "--customer", "alice"]));
    ok(a, &["add-item", &id, "TEA-SENCHA", "2"]);
    ok(a, &["add-item", &id, "POT-CAST", "1"]);
    let out = ok(a, &["confirm", &id]);
    assert!(out.contains("is paid"), "{out}");
    let bob = order_id(&ok(a, &["place-order", "--customer", "bob"]));
    ok(a, &["add-item", &bob, "POT-LIMITED", "3"]);
    let out = ok(a, &["confirm", &bob]);
    assert!(out.contains("payment declined"), "{out}");
    ok(a, &["seed", "--orders", "15", "--seed", "3", "--jobs", "4"]);

    let out = ok(a, &["order", &id]);
    assert!(out.contains("(alice, paid)"), "{out}");
    let out = ok(a, &["replay", &id]);
    assert!(out.contains("consistent"), "{out}");
    let out = ok(a, &["stats"]);
    assert!(out.contains("shop.Payment"), "{out}");
    let before = ok(a, &["orders", "--all"]);
    ok(a, &["rebuild"]);
    assert_eq!(ok(a, &["orders", "--all"]), before);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pg.jsonl");
    let file = file.to_str().unwrap();
    ok(a, &["export", file]);
    let out = ok(b, &["import", file]);
    assert!(out.contains("imported"), "{out}");
    assert_eq!(ok(b, &["orders", "--all"]), before);
    assert_eq!(
        events_json(&ok(a, &["events"])),
        events_json(&ok(b, &["events"]))
    );
    // Importing twice is refused: the target is not empty any more.
    let out = shop(&url, b, &["import", file]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    common::assert_one_line_error(&String::from_utf8_lossy(&out.stderr));
}
