//! The inspector over HTTP, against a real server on a real SQLite file filled by the shop's
//! seed: every page, paging and search, a stream's interleaving, the correlation tree, the log's
//! pages and the live tail, time travel, stored markup shown as text, and the token rules of
//! the actions. The binary is run as a process for the command-line rules.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::*;
use shop::domain::{Order, PlaceOrder};
use shop::views::OrderSummaryView;
use sourceflow::store::Store;
use sourceflow::{EntityId, Sequence, SourceFlow, StreamId};
use sourceflow_inspect::Inspector;
use sourceflow_sqlx::SqliteStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "correct-horse-battery-staple";

async fn sqlite_flow(dir: &tempfile::TempDir) -> SourceFlow {
    let store = SqliteStore::open(dir.path().join("shop.db"))
        .await
        .expect("open the SQLite file");
    seeded(store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pages_paging_trace_and_markup() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let flow = sqlite_flow(&dir).await;
    let store: Arc<dyn Store> = flow.store().clone();
    let addr = serve(sourceflow_inspect::router(store.clone())).await;
    every_page_renders(&addr, &*store).await;
    paging_and_search(&addr, &*store).await;
    stream_interleaves(&addr, &*store).await;
    trace_is_causal_tree(&addr, &*store).await;
    log_pages(&addr, &*store).await;
    markup_is_text(&addr, &*store).await;
}

/// The overview lists the stored leases: a follower holding its read side, and one whose
/// time ran out, each with its holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_lists_who_follows_the_log() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("leases.db"))
            .await
            .expect("open the SQLite file"),
    );
    let addr = serve(sourceflow_inspect::router(store.clone())).await;
    let empty = get(&addr, "/").await.ok();
    assert!(empty.contains("No leases."), "no lease yet");
    let leases = store.leases().expect("the store keeps leases");
    let (holder, gone) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let now = chrono::Utc::now();
    let held = leases
        .hold(
            "sourceflow.follow:shop.OrderSummaryView",
            holder,
            now,
            now + chrono::TimeDelta::seconds(10),
        )
        .await
        .expect("hold");
    assert!(held);
    let old = now - chrono::TimeDelta::minutes(1);
    leases
        .hold(
            "sourceflow.follow:<old>",
            gone,
            old,
            old + chrono::TimeDelta::seconds(10),
        )
        .await
        .expect("hold");
    let overview = get(&addr, "/").await.ok();
    let table = &overview[overview
        .find(r#"<table id="leases">"#)
        .expect("the lease table")..];
    let table = &table[..table.find("</table>").expect("its end")];
    let row = |name: &str| {
        let at = table
            .find(name)
            .unwrap_or_else(|| panic!("{name} listed: {table}"));
        table[at..].split("</tr>").next().expect("a row").to_owned()
    };
    let following = row("sourceflow.follow:shop.OrderSummaryView");
    assert!(following.contains(&holder.to_string()), "{following}");
    assert!(following.contains(r#"<td class="ok">in "#), "{following}");
    let ran_out = row("sourceflow.follow:&lt;old&gt;");
    assert!(ran_out.contains(&gone.to_string()), "{ran_out}");
    assert!(ran_out.contains(r#"<td class="lag">ran out "#), "{ran_out}");
}

/// Opens the event stream at `target` and returns once the response's head has arrived: the
/// tail is following from then on.
async fn open_events(addr: &str, target: &str, extra: &str) -> (tokio::net::TcpStream, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let seen = read_until(&mut stream, String::new(), "\r\n\r\n").await;
    (stream, seen)
}

/// Reads from `stream` until what was read contains `wanted`.
async fn read_until(stream: &mut tokio::net::TcpStream, mut seen: String, wanted: &str) -> String {
    let mut buffer = [0u8; 8192];
    while !seen.contains(wanted) {
        let n = stream
            .read(&mut buffer)
            .await
            .expect("read the event stream");
        assert!(n > 0, "the event stream ended before {wanted}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tail_follows_new_commits() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let flow = sqlite_flow(&dir).await;
    let head = flow.store().head().await.expect("head");
    for (name, inspector) in [
        ("polling", Inspector::new(flow.store().clone())),
        ("subscribe", Inspector::for_flow(&flow)),
    ] {
        let addr = serve(inspector.router()).await;
        let target = format!("/tail/events?after={}", head.0);
        let (mut events, seen) = open_events(&addr, &target, "").await;
        assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
        assert!(seen.contains("content-type: text/event-stream"), "{seen}");
        // A commit made while the tail follows.
        let order = EntityId::from(format!("tail-{name}"));
        let customer_id = "tail-customer".to_owned();
        flow.send(
            &order,
            PlaceOrder {
                customer_id,
                contact: None,
            },
        )
        .await
        .expect("send");
        let wanted = format!("\"id\":\"tail-{name}\"");
        let seen = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            read_until(&mut events, seen, &wanted),
        )
        .await
        .expect("the tail delivers the new commit");
        assert!(seen.contains("event: recorded"), "{seen}");
        let new_head = flow.store().head().await.expect("head");
        assert!(seen.contains(&format!("id: {}\n", new_head.0)), "{seen}");
        assert!(
            !seen.contains(&format!("id: {}\n", head.0)),
            "starts after the given position"
        );
    }
    // A reconnecting browser resumes after its Last-Event-ID.
    let addr = serve(Inspector::new(flow.store().clone()).router()).await;
    let last = flow.store().head().await.expect("head").0;
    let resume = format!("Last-Event-ID: {}\r\n", last - 1);
    let (mut events, seen) = open_events(&addr, "/tail/events?after=0", &resume).await;
    let seen = read_until(&mut events, seen, &format!("id: {last}\n")).await;
    assert!(!seen.contains(&format!("id: {}\n", last - 1)), "{seen}");
    assert!(!seen.contains("id: 1\n"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_replays_in_library_mode_and_points_to_raw_json_otherwise() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let flow = sqlite_flow(&dir).await;
    let id = all_ids(flow.store().as_ref(), "shop.Order")
        .await
        .swap_remove(5);
    let stream = StreamId::new("shop.Order", EntityId::from(id.as_str()));
    let last = flow.store().last_sequence(&stream).await.expect("last");
    assert!(last.0 >= 2, "an order with several commands");

    let library = serve(Inspector::for_flow(&flow).entity::<Order>().router()).await;
    let html = get(
        &library,
        &format!("/stream?type=shop.Order&id={}&at=1", encode(&id)),
    )
    .await
    .ok();
    let state: Order = flow
        .state_at::<Order>(id.as_str(), Sequence(1))
        .await
        .expect("state_at");
    let pretty =
        serde_json::to_string_pretty(&serde_json::to_value(&state).expect("json")).expect("pretty");
    let shown = html
        .split("<pre id=\"state-at\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .expect("the replayed state");
    assert_eq!(unescape(shown), pretty);
    let latest = flow
        .state_at::<Order>(id.as_str(), last)
        .await
        .expect("state_at");
    assert_ne!(
        state, latest,
        "the first command's state differs from the last"
    );

    let raw = serve(sourceflow_inspect::router(flow.store().clone())).await;
    let html = get(
        &raw,
        &format!("/stream?type=shop.Order&id={}&at=1", encode(&id)),
    )
    .await
    .ok();
    assert!(
        html.contains("does not link the application's type"),
        "{html}"
    );
    assert!(!html.contains("<pre id=\"state-at\">"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_the_token_and_read_only_has_none() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let flow = sqlite_flow(&dir).await;

    // Read-only: no action route exists, and the overview offers none.
    let read_only = serve(
        Inspector::for_flow(&flow)
            .view::<OrderSummaryView>()
            .router(),
    )
    .await;
    let refused = request(
        &read_only,
        "POST",
        "/actions/rebuild",
        &[],
        "view=OrderSummaryView",
    )
    .await;
    assert!(matches!(refused.status, 404 | 405), "{}", refused.status);
    let overview = get(&read_only, "/").await.ok();
    assert!(!overview.contains("/actions/"));

    let guarded = serve(
        Inspector::for_flow(&flow)
            .view::<OrderSummaryView>()
            .actions(TOKEN)
            .router(),
    )
    .await;
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let bearer = format!("Bearer {TOKEN}");
    let wrong = "Bearer correct-horse-battery-stapler".to_owned();
    // No token, a wrong one, a token in the query string of a POST: refused, nothing rebuilt.
    for headers in [
        form.to_vec(),
        vec![form[0], ("authorization", wrong.as_str())],
    ] {
        let reply = request(
            &guarded,
            "POST",
            "/actions/rebuild",
            &headers,
            "view=OrderSummaryView",
        )
        .await;
        assert_eq!(reply.status, 401, "{}", reply.body);
        let reply = request(&guarded, "POST", "/actions/outbox", &headers, "").await;
        assert_eq!(reply.status, 401);
    }
    let reply = request(
        &guarded,
        "POST",
        &format!("/actions/rebuild?token={TOKEN}"),
        &form,
        "view=OrderSummaryView",
    )
    .await;
    assert_eq!(reply.status, 401);
    // Pages need it too.
    assert_eq!(get(&guarded, "/").await.status, 401);
    // From another origin, even with the token.
    let reply = request(
        &guarded,
        "POST",
        "/actions/rebuild",
        &[
            form[0],
            ("authorization", bearer.as_str()),
            ("origin", "http://evil.example"),
        ],
        "view=OrderSummaryView",
    )
    .await;
    assert_eq!(reply.status, 403);

    // With the token: the view is rebuilt from the whole log.
    let head = flow.store().head().await.expect("head");
    let reply = request(
        &guarded,
        "POST",
        "/actions/rebuild",
        &[form[0], ("authorization", bearer.as_str())],
        "view=OrderSummaryView",
    )
    .await;
    let body = reply.ok();
    assert!(
        body.contains(&format!("Rebuilt OrderSummaryView from {} events.", head.0)),
        "{body}"
    );
    let reply = request(
        &guarded,
        "POST",
        "/actions/outbox",
        &[("authorization", bearer.as_str())],
        "",
    )
    .await;
    assert!(reply.ok().contains("Outbox sent; 0 entries left."));

    // The URL with ?token= sets the cookie and drops the token from the address.
    let reply = get(&guarded, &format!("/log?after=5&token={TOKEN}")).await;
    assert_eq!(reply.status, 303);
    assert_eq!(reply.header("location"), Some("/log?after=5"));
    let cookie = reply.header("set-cookie").expect("a cookie").to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("name=value").to_owned();
    let reply = request(
        &guarded,
        "GET",
        "/log?after=5",
        &[("cookie", pair.as_str())],
        "",
    )
    .await;
    assert_eq!(reply.status, 200);
    let overview = request(&guarded, "GET", "/", &[("cookie", pair.as_str())], "")
        .await
        .ok();
    assert!(overview.contains("Rebuild OrderSummaryView"));
}

/// The status of `GET /` sent to `addr` with `host` as its `Host` header.
async fn raw_get_with_host(addr: &str, host: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("receive");
    let text = String::from_utf8_lossy(&raw);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status")
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sourceflow-inspect"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_a_sqlite_file_and_refuses_an_exposed_bind() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let flow = sqlite_flow(&dir).await;
    let path = dir.path().join("shop.db");
    drop(flow);

    // Beyond loopback without a token: refused before listening.
    for bind in ["0.0.0.0", "::"] {
        let output = binary()
            .args(["--db"])
            .arg(&path)
            .args(["--bind", bind, "--port", "0"])
            .output()
            .expect("run the binary");
        assert!(!output.status.success(), "{bind}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("without a token"), "{stderr}");
        assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"));
    }
    // A missing file is not created.
    let output = binary()
        .args(["--db"])
        .arg(dir.path().join("missing.db"))
        .args(["--port", "0"])
        .output()
        .expect("run the binary");
    assert!(!output.status.success());
    assert!(!dir.path().join("missing.db").exists());
    // Actions without a token: a usage error.
    let output = binary()
        .args(["--db"])
        .arg(&path)
        .args(["--allow-actions", "--port", "0"])
        .output()
        .expect("run the binary");
    assert!(!output.status.success());

    // On loopback: prints its URL and serves the file.
    let mut child = binary()
        .args(["--db"])
        .arg(&path)
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the URL line");
    let url = line
        .trim()
        .strip_prefix("sourceflow-inspect listening on http://")
        .expect("the URL")
        .trim_end_matches('/')
        .to_owned();
    assert!(url.starts_with("127.0.0.1:"), "{url}");
    let overview = get(&url, "/").await;
    let port = url.rsplit(':').next().expect("a port").to_owned();
    let by_name = request(&url, "GET", "/", &[], "").await;
    // A page of another site whose name was pointed at 127.0.0.1 names its own host.
    let rebound = raw_get_with_host(&url, &format!("evil.example:{port}")).await;
    let localhost = raw_get_with_host(&url, &format!("localhost:{port}")).await;
    let _ = child.kill();
    let _ = child.wait();
    let overview = overview.ok();
    assert!(overview.contains("shop.Order"));
    assert_eq!(by_name.status, 200);
    assert_eq!(rebound, 403, "a rebound host name is refused");
    assert_eq!(localhost, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_pages_paging_and_trace() {
    let flow = seeded(sourceflow::MemoryStore::new()).await;
    let store: Arc<dyn Store> = flow.store().clone();
    let addr = serve(sourceflow_inspect::router(store.clone())).await;
    every_page_renders(&addr, &*store).await;
    paging_and_search(&addr, &*store).await;
    stream_interleaves(&addr, &*store).await;
    trace_is_causal_tree(&addr, &*store).await;
    log_pages(&addr, &*store).await;
    markup_is_text(&addr, &*store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_tail_ends_at_its_position() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let flow = sqlite_flow(&dir).await;
    let head = flow.store().head().await.expect("head").0;
    for inspector in [
        Inspector::new(flow.store().clone()),
        Inspector::for_flow(&flow),
    ] {
        let addr = serve(inspector.router()).await;
        let reply = get(
            &addr,
            &format!("/tail/events?after={}&until={}", head - 5, head - 2),
        )
        .await;
        assert_eq!(reply.status, 200);
        let ids: Vec<&str> = reply
            .body
            .lines()
            .filter_map(|line| line.strip_prefix("id: "))
            .collect();
        let wanted: Vec<String> = (head - 4..=head - 2).map(|p| p.to_string()).collect();
        assert_eq!(ids, wanted);
        assert!(
            reply
                .body
                .contains(&format!("event: end\ndata: {}", head - 2)),
            "{}",
            reply.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounted_under_a_path_its_links_follow() {
    let flow = seeded(sourceflow::MemoryStore::new()).await;
    let inspector = Inspector::for_flow(&flow).router();
    let app = axum::Router::new().nest("/ops/inspect", inspector);
    let addr = serve(app).await;
    {
        let overview = get(&addr, "/ops/inspect").await.ok();
        assert!(
            overview.contains(r#"href="/ops/inspect/streams?type=shop.Order""#),
            "{overview}"
        );
        assert!(overview.contains(r#"href="/ops/inspect/assets/style.css""#));
        assert!(overview.contains(r#"action="/ops/inspect/trace""#));
        assert!(overview.contains(r#"<a href="/ops/inspect">Overview</a>"#));
    }
    let list = get(&addr, "/ops/inspect/streams?type=shop.Order")
        .await
        .ok();
    let first = listed_ids(&list).remove(0);
    assert!(list.contains(&format!(
        r#"href="/ops/inspect/stream?type=shop.Order&amp;id={}""#,
        encode(&first)
    )));
    let tail = get(&addr, "/ops/inspect/tail").await.ok();
    assert!(tail.contains(r#"data-events="/ops/inspect/tail/events""#));
    assert_eq!(get(&addr, "/ops/inspect/assets/tail.js").await.status, 200);
    // Outside the mount point, nothing of the inspector.
    assert_eq!(get(&addr, "/streams?type=shop.Order").await.status, 404);

    // With a token, the cookie's redirect keeps the mount point.
    let guarded = Inspector::for_flow(&flow).token(TOKEN).router();
    let addr = serve(axum::Router::new().nest("/ops/inspect", guarded)).await;
    let reply = get(&addr, &format!("/ops/inspect/log?token={TOKEN}&after=3")).await;
    assert_eq!(reply.status, 303);
    assert_eq!(reply.header("location"), Some("/ops/inspect/log?after=3"));
}

/// A deleted stream is left out of the listings and its page shows no erased payload; an
/// archived stream's page says where its history is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_archived_streams_show_no_erased_data() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let flow = sqlite_flow(&dir).await;
    let store: Arc<dyn Store> = flow.store().clone();
    let ids = all_ids(&*store, "shop.Order").await;
    let (deleted, archived) = (ids[7].clone(), ids[8].clone());
    let before = get(
        &serve(sourceflow_inspect::router(store.clone())).await,
        &format!("/stream?type=shop.Order&id={}", encode(&deleted)),
    )
    .await
    .ok();
    assert!(before.contains("customer_id"), "the order's payloads show");
    flow.delete_stream::<Order>(deleted.as_str())
        .await
        .expect("delete");
    flow.archive_stream::<Order>(archived.as_str())
        .await
        .expect("archive");

    let addr = serve(sourceflow_inspect::router(store.clone())).await;
    let listed = listed_ids(
        &get(
            &addr,
            &format!("/streams?type=shop.Order&prefix={}", encode(&deleted)),
        )
        .await
        .ok(),
    );
    assert!(listed.is_empty(), "{listed:?}");
    assert!(!all_ids(&*store, "shop.Order").await.contains(&deleted));

    let html = get(
        &addr,
        &format!("/stream?type=shop.Order&id={}", encode(&deleted)),
    )
    .await
    .ok();
    assert!(html.contains(r#"id="stream-status">Deleted"#), "{html}");
    assert!(!html.contains("customer_id"), "no erased payload: {html}");
    assert!(html.contains("sourceflow.Erased"));

    let html = get(
        &addr,
        &format!("/stream?type=shop.Order&id={}", encode(&archived)),
    )
    .await
    .ok();
    assert!(html.contains(r#"id="stream-status">Archived"#), "{html}");
    assert!(html.contains("sourceflow.ArchiveStream"), "{html}");
}
