//! What the inspector's tests share: a store filled by the shop's seed (plus one stream of
//! hostile strings), a real server on a loopback port, a small HTTP/1.1 client, and the checks
//! every backend must pass.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};

use chrono::Utc;
use shop::seed::{seed, SeedOptions};
use sourceflow::message::{NewEvent, StoredCommand};
use sourceflow::store::{Page, Store, StoreAdmin};
use sourceflow::{EntityId, Envelope, Position, RecordedEvent, Sequence, SourceFlow, StreamId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// A type name, an id and payloads that try to break out of the page.
pub const HOSTILE_TYPE: &str = "evil.<script>alert('type')</script>";
pub const HOSTILE_ID: &str = "\"><img src=x onerror=alert('id')>";
pub const HOSTILE_NAME: &str = "<script>alert('name')</script>";
pub const HOSTILE_PAYLOAD: &str =
    r#"{"note":"<script>alert('payload')</script>","attr":"\"><img src=x onerror=alert(1)>"}"#;

/// Orders the seed places.
pub const ORDERS: usize = 120;

/// Fills `store` with the shop's seed traffic (views caught up) and the hostile stream; returns
/// the flow over it.
pub async fn seeded(store: impl Store + 'static) -> SourceFlow {
    let flow = shop::bulk_builder()
        .store(store)
        .build()
        .await
        .expect("the shop's flow");
    let options = SeedOptions {
        orders: ORDERS,
        seed: 23,
    };
    seed(&flow, options, 4, |_| {}).await.expect("seed");
    flow.catch_up().await.expect("views caught up");
    add_hostile(flow.store().as_ref()).await;
    flow
}

async fn add_hostile(store: &dyn Store) {
    let stream = StreamId::new(HOSTILE_TYPE, HOSTILE_ID);
    let correlation = Uuid::now_v7();
    let command_id = Uuid::now_v7();
    let envelope = |id: Uuid, causation: Option<Uuid>| Envelope {
        message_id: id,
        name: HOSTILE_NAME.into(),
        version: 1,
        stream: stream.clone(),
        correlation_id: correlation,
        causation_id: causation,
        timestamp: Utc::now(),
    };
    store
        .append_command(
            Sequence::ZERO,
            StoredCommand {
                envelope: envelope(command_id, None),
                sequence: Sequence::ZERO,
                payload: HOSTILE_PAYLOAD.as_bytes().to_vec(),
            },
        )
        .await
        .expect("append the hostile command");
    store
        .append_events(
            &stream,
            Sequence::ZERO,
            vec![NewEvent {
                envelope: envelope(Uuid::now_v7(), Some(command_id)),
                payload: HOSTILE_PAYLOAD.as_bytes().to_vec(),
            }],
        )
        .await
        .expect("append the hostile event");
}

/// Serves `router` on a free loopback port; returns `127.0.0.1:port`.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    addr.to_string()
}

/// An HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body, after checking the status is 200.
    pub fn ok(self) -> String {
        assert_eq!(self.status, 200, "status of {}", self.body);
        self.body
    }
}

/// Sends one request (`Connection: close`) and reads the whole response.
pub async fn request(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(body);
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("receive");
    parse(&raw)
}

fn parse(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

pub async fn get(addr: &str, target: &str) -> Reply {
    request(addr, "GET", target, &[], "").await
}

/// `text` percent-encoded for a query string.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The values of `attribute="..."` in `html`, in order.
pub fn attribute_values(html: &str, attribute: &str) -> Vec<String> {
    let needle = format!("{attribute}=\"");
    html.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest.find('"').map(|end| rest[..end].to_owned())
        })
        .collect()
}

/// Every link text of the stream table of a list page.
pub fn listed_ids(html: &str) -> Vec<String> {
    let table = html
        .split("<table id=\"streams\">")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .expect("the streams table");
    table
        .split("<td><a href=\"")
        .skip(1)
        .filter_map(|cell| {
            let text = cell.split_once("\">")?.1;
            Some(unescape(text.split("</a>").next()?))
        })
        .collect()
}

pub fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Every stream id of a type, through the store's own listing.
pub async fn all_ids(store: &dyn Store, entity_type: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut page = Page::first(500);
    loop {
        let batch = store
            .stream_ids(entity_type, page.clone())
            .await
            .expect("ids");
        let Some(last) = batch.last().cloned() else {
            break;
        };
        ids.extend(batch.iter().map(|id| id.as_str().to_owned()));
        page.after = Some(last);
    }
    ids
}

/// Every event of the log.
pub async fn all_events(store: &dyn Store) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    let mut after = Position::START;
    loop {
        let batch = store.read_all(after, 1_000).await.expect("read_all");
        let Some(last) = batch.last() else { break };
        after = last.position;
        events.extend(batch);
    }
    events
}

// ---- the checks every backend passes ----------------------------------------------------------

/// Every page answers 200 with the security headers, for a store filled by the shop's seed.
pub async fn every_page_renders(addr: &str, store: &dyn Store) {
    let overview = get(addr, "/").await;
    assert_eq!(overview.status, 200);
    assert_eq!(
        overview.header("content-security-policy"),
        Some(sourceflow_inspect::CONTENT_SECURITY_POLICY)
    );
    assert_eq!(overview.header("x-content-type-options"), Some("nosniff"));
    let overview = overview.body;
    for entity_type in ["shop.Order", "shop.Stock", "shop.Payment"] {
        assert!(
            overview.contains(entity_type),
            "{entity_type} on the overview"
        );
    }
    let head = store.head().await.expect("head");
    assert!(
        overview.contains(&format!(
            r#"<span class="value" id="head">{}</span>"#,
            head.0
        )),
        "head {head} shown"
    );
    // Every view of the shop has a position, caught up with the head.
    for view in ["shop.OrderSummaryView", "shop.StockLevelView"] {
        let row = format!("<tr><td>{view}</td>");
        let at = overview
            .find(&row)
            .unwrap_or_else(|| panic!("{view} listed"));
        let rest = &overview[at..];
        let row = &rest[..rest.find("</tr>").expect("row end")];
        assert!(
            row.contains(r#"<td class="num ok">0</td>"#) || row.contains("lag"),
            "{row}"
        );
    }

    let orders = get(addr, "/streams?type=shop.Order").await.ok();
    let first = listed_ids(&orders)
        .into_iter()
        .next()
        .expect("an order listed");
    let stream = get(
        addr,
        &format!("/stream?type=shop.Order&id={}", encode(&first)),
    )
    .await
    .ok();
    assert!(
        stream.contains("shop.PlaceOrder"),
        "the first command shown"
    );
    assert!(stream.contains("shop.OrderPlaced"), "its event shown");
    assert!(
        stream.contains(r#"id="state-version""#),
        "the stored state shown"
    );

    let log = get(addr, "/log").await.ok();
    assert!(
        log.contains("<td class=\"num\">1</td>"),
        "position 1 on the log's first page"
    );
    let tail = get(addr, "/tail").await.ok();
    assert!(tail.contains(r#"<ol id="tail""#));
    let css = get(addr, "/assets/style.css").await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    let js = get(addr, "/assets/tail.js").await;
    assert_eq!(js.status, 200);

    let trace = get(addr, "/trace").await.ok();
    assert!(trace.contains("name=\"correlation\""));
    let missing = get(addr, "/stream?type=shop.Order&id=no-such-order").await;
    assert_eq!(missing.status, 404);
    let bad = get(addr, "/trace?correlation=not-a-uuid").await;
    assert_eq!(bad.status, 400);
}

/// Walking the list's pages by their `Next page` links yields every id once, in order; a
/// prefix search yields exactly the ids with that prefix.
pub async fn paging_and_search(addr: &str, store: &dyn Store) {
    let expected = all_ids(store, "shop.Order").await;
    assert_eq!(expected.len(), ORDERS, "one stream per seeded order");
    let mut walked = Vec::new();
    let mut target = "/streams?type=shop.Order".to_owned();
    let mut pages = 0;
    loop {
        let html = get(addr, &target).await.ok();
        pages += 1;
        let ids = listed_ids(&html);
        assert!(ids.len() <= 50, "a page holds at most 50 ids");
        walked.extend(ids);
        let next = html
            .split("id=\"next-page\"")
            .next()
            .and_then(|before| before.rsplit("<a href=\"").next())
            .filter(|_| html.contains("id=\"next-page\""));
        match next {
            Some(link) => target = unescape(link.trim_end_matches("\" ")),
            None => break,
        }
    }
    assert_eq!(walked, expected, "the pages, in order, hold every id once");
    assert_eq!(pages, ORDERS.div_ceil(50));

    // Search by the first two characters of an id, and of one that shares none.
    for prefix in [&expected[7][..2], &expected[0][..1], "zz-none"] {
        let html = get(
            addr,
            &format!("/streams?type=shop.Order&prefix={}", encode(prefix)),
        )
        .await
        .ok();
        let found = listed_ids(&html);
        let wanted: Vec<String> = expected
            .iter()
            .filter(|id| id.starts_with(prefix))
            .take(50)
            .cloned()
            .collect();
        assert_eq!(found, wanted, "ids starting with {prefix:?}");
    }
}

/// A stream's page shows its commands in order, each followed by the events it recorded.
pub async fn stream_interleaves(addr: &str, store: &dyn Store) {
    let id = all_ids(store, "shop.Order").await.swap_remove(3);
    let stream = StreamId::new("shop.Order", EntityId::from(id.as_str()));
    let commands = store
        .load_commands(&stream, Sequence(1), None)
        .await
        .expect("commands");
    let events = store
        .read_stream(&stream, Sequence(1))
        .await
        .expect("events");
    let mut expected = Vec::new();
    for command in &commands {
        expected.push(format!("command-{}", command.sequence.0));
        for event in events
            .iter()
            .filter(|e| e.command_sequence == command.sequence)
        {
            expected.push(format!("event-{}", event.sequence.0));
        }
    }
    let html = get(addr, &format!("/stream?type=shop.Order&id={}", encode(&id)))
        .await
        .ok();
    let shown: Vec<String> = attribute_values(&html, "id")
        .into_iter()
        .filter(|v| v.starts_with("command-") || v.starts_with("event-"))
        .collect();
    assert_eq!(shown, expected);
    let (version, _) = store
        .get_entity(&stream)
        .await
        .expect("entity")
        .expect("a state");
    assert!(html.contains(&format!(r#"<span id="state-version">{}</span>"#, version.0)));
}

/// The trace of a confirmed order's correlation holds exactly the commands and events with that
/// correlation id, each nested under the message that caused it.
pub async fn trace_is_causal_tree(addr: &str, store: &dyn Store) {
    let log = all_events(store).await;
    // A correlation that reached several streams: a confirmation's payment and stock.
    let mut streams_per_correlation: HashMap<Uuid, BTreeSet<StreamId>> = HashMap::new();
    for event in &log {
        streams_per_correlation
            .entry(event.envelope.correlation_id)
            .or_default()
            .insert(event.envelope.stream.clone());
    }
    let (&correlation, _) = streams_per_correlation
        .iter()
        .filter(|(_, streams)| streams.len() >= 3)
        .min_by_key(|(id, _)| **id)
        .expect("a correlation across three streams");

    // What the log holds, found without the inspector's query.
    let mut causes: HashMap<Uuid, Option<Uuid>> = HashMap::new();
    for event in log
        .iter()
        .filter(|e| e.envelope.correlation_id == correlation)
    {
        causes.insert(event.envelope.message_id, event.envelope.causation_id);
    }
    let streams = streams_per_correlation[&correlation].clone();
    for stream in &streams {
        let commands = store
            .load_commands(stream, Sequence(1), None)
            .await
            .expect("commands");
        for command in commands
            .iter()
            .filter(|c| c.envelope.correlation_id == correlation)
        {
            causes.insert(command.envelope.message_id, command.envelope.causation_id);
        }
    }

    let html = get(addr, &format!("/trace?correlation={correlation}"))
        .await
        .ok();
    let tree = html
        .split("<ul class=\"tree\" id=\"trace\">")
        .nth(1)
        .expect("the tree");
    let parents = nesting(tree);
    let shown: BTreeSet<Uuid> = parents.keys().copied().collect();
    let wanted: BTreeSet<Uuid> = causes.keys().copied().collect();
    assert_eq!(shown, wanted, "exactly the correlation's messages");
    for (message, parent) in &parents {
        let cause = causes[message].filter(|c| causes.contains_key(c));
        assert_eq!(*parent, cause, "{message} sits under its cause");
    }
    assert!(
        parents.values().filter(|p| p.is_none()).count() == 1,
        "one root: the command sent from outside"
    );
}

/// The enclosing `<li data-message>` of every `<li data-message>` in `html`.
fn nesting(html: &str) -> HashMap<Uuid, Option<Uuid>> {
    // Nested lists close with `</ul></li>`, the tree itself with `</ul>` and a line break.
    let tree = html.split("</ul>\n").next().expect("the tree's end");
    let mut parents = HashMap::new();
    let mut open: Vec<Uuid> = Vec::new();
    let mut rest = tree;
    loop {
        match (rest.find("<li "), rest.find("</li>")) {
            (Some(o), c) if c.is_none_or(|c| o < c) => {
                let tag = &rest[o..o + rest[o..].find('>').expect("tag end")];
                let id = attribute_values(tag, "data-message")
                    .into_iter()
                    .next()
                    .expect("a message id");
                let id: Uuid = id.parse().expect("a UUID");
                parents.insert(id, open.last().copied());
                open.push(id);
                rest = &rest[o + 4..];
            }
            (_, Some(c)) => {
                open.pop();
                rest = &rest[c + 5..];
            }
            _ => break,
        }
    }
    assert!(open.is_empty(), "every item closed");
    parents
}

/// The log's pages follow positions: 1–100, then 101–200.
pub async fn log_pages(addr: &str, store: &dyn Store) {
    let head = store.head().await.expect("head").0;
    assert!(head > 200, "enough events for three pages ({head})");
    let positions = |html: &str| -> Vec<u64> {
        html.split("<tr><td class=\"num\">")
            .skip(1)
            .filter_map(|cell| cell.split('<').next()?.parse().ok())
            .collect()
    };
    let first = get(addr, "/log").await.ok();
    assert_eq!(positions(&first), (1..=100).collect::<Vec<_>>());
    assert!(first.contains("href=\"/log?after=100\" id=\"next-page\""));
    let second = get(addr, "/log?after=100").await.ok();
    assert_eq!(positions(&second), (101..=200).collect::<Vec<_>>());
    assert!(second.contains("href=\"/log?after=0\" id=\"previous-page\""));
    let end = get(addr, &format!("/log?after={head}")).await.ok();
    assert!(positions(&end).is_empty());
    assert!(!end.contains("next-page"));
}

/// Stored markup is shown as text everywhere it appears.
pub async fn markup_is_text(addr: &str, store: &dyn Store) {
    let stream = StreamId::new(HOSTILE_TYPE, HOSTILE_ID);
    let event = store
        .read_stream(&stream, Sequence(1))
        .await
        .expect("hostile events")
        .remove(0);
    let head = event.position.0;
    let pages = [
        "/".to_owned(),
        format!("/streams?type={}", encode(HOSTILE_TYPE)),
        format!(
            "/stream?type={}&id={}",
            encode(HOSTILE_TYPE),
            encode(HOSTILE_ID)
        ),
        format!(
            "/stream?type={}&id={}&at=1",
            encode(HOSTILE_TYPE),
            encode(HOSTILE_ID)
        ),
        format!("/trace?correlation={}", event.envelope.correlation_id),
        format!("/log?after={}", head - 1),
        format!(
            "/streams?type={}&prefix={}",
            encode(HOSTILE_TYPE),
            encode(HOSTILE_ID)
        ),
    ];
    for page in pages {
        let html = get(addr, &page).await.ok();
        for raw in [
            "<script>alert",
            "<img src=x",
            "\"><img",
            "onerror=alert(1)>",
        ] {
            assert!(!html.contains(raw), "{page} shows {raw:?} as markup");
        }
        assert!(
            html.contains("&lt;script&gt;alert(") || html.contains("&lt;img src=x"),
            "{page} shows the markup as text"
        );
        // The only scripts are this server's own file.
        for src in html.match_indices("<script").map(|(at, _)| &html[at..]) {
            assert!(src.starts_with("<script src=\""), "{page}: inline script");
        }
    }
}
