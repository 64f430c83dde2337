//! Helpers shared by the CLI tests: run the `shop` binary on a temporary SQLite file.

#![allow(dead_code)] // Each test file uses a different subset.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// A temporary directory holding a database (and export files).
pub struct Shop {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
}

impl Shop {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("shop.db");
        Self { dir, db }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `shop --db <this db> <args>`, isolated from the environment and without colours.
    pub fn cmd(&self, args: &[&str]) -> Command {
        shop_on(&self.db, args)
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        run_ok(self.cmd(args), args)
    }

    /// Runs a command that must fail with one readable line on stderr; returns that line.
    pub fn fails(&self, args: &[&str]) -> String {
        run_fails(self.cmd(args), args)
    }

    /// Places an order and returns its id.
    pub fn place(&self, customer: &str) -> String {
        order_id(&self.ok(&["place-order", "--customer", customer]))
    }
}

/// `shop --db <db> <args>` with a clean environment.
pub fn shop_on(db: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shop"));
    cmd.arg("--db")
        .arg(db)
        .args(args)
        .env_remove("SHOP_DATABASE_URL")
        .env("NO_COLOR", "1")
        .env_remove("RUST_BACKTRACE");
    cmd
}

pub fn run_ok(mut cmd: Command, args: &[&str]) -> String {
    let out = cmd.output().expect("run shop");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "shop {args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    stdout
}

pub fn run_fails(mut cmd: Command, args: &[&str]) -> String {
    let out = cmd.output().expect("run shop");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "shop {args:?} should fail with exit code 1; stdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_one_line_error(&stderr);
    stderr.trim_end().to_owned()
}

/// An error is one line starting with `error:`, never a panic or a backtrace.
pub fn assert_one_line_error(stderr: &str) {
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(!stderr.contains("backtrace"), "backtrace: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {stderr}");
    assert!(
        lines[0].starts_with("error: "),
        "unexpected stderr: {stderr}"
    );
}

/// The id in `order <id> placed for <customer>`.
pub fn order_id(stdout: &str) -> String {
    let first = stdout.lines().next().unwrap_or_default();
    let mut words = first.split_whitespace();
    assert_eq!(words.next(), Some("order"), "unexpected output: {stdout}");
    words.next().expect("an order id").to_owned()
}

/// The events of `shop events` as JSON values.
pub fn events_json(stdout: &str) -> Vec<serde_json::Value> {
    serde_json::from_str::<Vec<serde_json::Value>>(stdout).expect("events print a JSON array")
}
