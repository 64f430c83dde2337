//! The inspector in a real browser: headless Chromium loads the overview, a stream (one of
//! hostile strings too) and the live tail from a real server on a SQLite file filled by the
//! shop's seed; the test asserts on the DOM after the page's script ran, and saves screenshots
//! under `target/tmp/inspect/` (a CI artifact).
//!
//! Ignored when Chromium is not installed (`.ci/run` installs Debian's `chromium`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sourceflow_inspect::Inspector;
use sourceflow_sqlx::SqliteStore;

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .unwrap_or_else(|| "/usr/bin/chromium".into())
        .into()
}

/// Chromium's arguments for one headless run with a profile of its own.
fn headless(profile: &Path) -> Command {
    let mut command = Command::new(chromium());
    command
        .arg("--headless")
        .arg("--no-sandbox")
        .arg("--disable-gpu")
        .arg("--disable-dev-shm-usage")
        .arg("--no-first-run")
        .arg("--hide-scrollbars")
        .arg(format!("--user-data-dir={}", profile.display()))
        // Lets the page's script run (the tail's event stream) before the DOM is read.
        .arg("--virtual-time-budget=5000");
    command
}

/// The DOM of `url` after its scripts ran.
async fn dump_dom(profile: PathBuf, url: String) -> String {
    tokio::task::spawn_blocking(move || {
        let output = headless(&profile)
            .arg("--dump-dom")
            .arg(&url)
            .output()
            .expect("run chromium");
        assert!(
            output.status.success(),
            "chromium failed on {url}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 DOM")
    })
    .await
    .expect("chromium's thread")
}

/// Saves a screenshot of `url` to `path`.
async fn screenshot(profile: PathBuf, url: String, path: PathBuf) {
    tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_file(&path);
        let output = headless(&profile)
            .arg("--window-size=1280,900")
            .arg(format!("--screenshot={}", path.display()))
            .arg(&url)
            .output()
            .expect("run chromium");
        assert!(
            output.status.success(),
            "chromium failed on {url}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let png = std::fs::read(&path).expect("the screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG at {}", path.display());
    })
    .await
    .expect("chromium's thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(sourceflow_chromium),
    ignore = "needs headless Chromium: apt-get install chromium (or set CHROMIUM)"
)]
async fn chromium_renders_overview_stream_and_live_tail() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("shop.db"))
        .await
        .expect("open");
    let flow = seeded(store).await;
    let addr = serve(Inspector::for_flow(&flow).router()).await;
    let base = format!("http://{addr}");
    let profile = dir.path().join("chromium-profile");
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("inspect");
    std::fs::create_dir_all(&shots).expect("the screenshot directory");

    let overview = dump_dom(profile.clone(), format!("{base}/")).await;
    assert!(overview.contains("<table id=\"types\">"), "{overview}");
    assert!(overview.contains(">shop.Order</a>"));
    let head = flow.store().head().await.expect("head").0;
    assert!(overview.contains(&format!("<span class=\"value\" id=\"head\">{head}</span>")));
    assert!(overview.contains("shop.OrderSummaryView"));

    let id = all_ids(flow.store().as_ref(), "shop.Order")
        .await
        .swap_remove(0);
    let stream_url = format!("{base}/stream?type=shop.Order&id={}", encode(&id));
    let stream = dump_dom(profile.clone(), stream_url.clone()).await;
    assert!(stream.contains("id=\"command-1\""), "{stream}");
    assert!(stream.contains("shop.OrderPlaced"));

    // The hostile stream: its strings are text nodes, never elements.
    let hostile = format!(
        "{base}/stream?type={}&id={}",
        encode(HOSTILE_TYPE),
        encode(HOSTILE_ID)
    );
    let dom = dump_dom(profile.clone(), hostile).await;
    assert!(
        dom.contains("&lt;script&gt;alert('payload')&lt;/script&gt;"),
        "{dom}"
    );
    assert!(!dom.contains("<img"), "{dom}");
    assert_eq!(
        dom.matches("<script").count(),
        0,
        "no script element at all: {dom}"
    );

    // The tail: the script followed the event stream and listed the newest events. (A
    // bounded window, so that the page finishes loading for the DOM to be read.)
    let tail_url = format!("{base}/tail?until={head}");
    let tail = dump_dom(profile.clone(), tail_url.clone()).await;
    assert!(
        tail.contains(&format!(
            "<span id=\"tail-status\">ended at position {head}</span>"
        )),
        "{tail}"
    );
    let listed = tail.matches("class=\"tail-event\"").count();
    assert_eq!(listed, 20, "the last 20 events: {tail}");
    assert!(
        tail.contains(&format!("data-position=\"{head}\"")),
        "the newest: {tail}"
    );

    screenshot(
        profile.clone(),
        format!("{base}/"),
        shots.join("overview.png"),
    )
    .await;
    screenshot(profile.clone(), stream_url, shots.join("stream.png")).await;
    screenshot(profile, tail_url, shots.join("tail.png")).await;
    println!("screenshots in {}", shots.display());
}
