//! The global log: a page of events by position, and the live tail that follows new commits
//! over server-sent events (pausable in the page).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::pin::Pin;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Html;
use futures_core::Stream;
use futures_util::StreamExt;
use serde::Deserialize;
use sourceflow::store::Store;
use sourceflow::{Position, RecordedEvent};

use super::{App, Base, PageResult};
use crate::html::{escape, href, page, time};

/// Events per page of the global log.
pub(crate) const EVENTS_PER_PAGE: u64 = 100;
/// Events the tail starts with, before the newest commit.
const TAIL_BACKLOG: u64 = 20;
/// How often the tail looks for new commits when no flow wakes it.
const POLL: Duration = Duration::from_millis(250);

#[derive(Deserialize)]
pub(crate) struct LogQuery {
    after: Option<u64>,
}

pub(crate) async fn log_page(
    State(app): State<App>,
    Base(base): Base,
    Query(query): Query<LogQuery>,
) -> PageResult {
    let store = app.store();
    let head = store.head().await?;
    let after = query.after.unwrap_or(0);
    let events = store
        .read_all(Position(after), EVENTS_PER_PAGE as usize)
        .await?;
    let mut body = format!(
        r#"<p class="meta">Head at position <span id="head">{head}</span>. <a href="{tail}">Follow live</a></p>
<form method="get" action="{action}" class="search"><label>After position <input name="after" size="10" inputmode="numeric" value="{after}"></label> <button>Read</button></form>
<table id="log"><thead><tr><th class="num">Position</th><th>Event</th><th>Stream</th><th class="num">Seq</th><th>Time</th><th>Correlation</th></tr></thead><tbody>
"#,
        head = head.0,
        tail = href(&base, "/tail", &[]),
        action = href(&base, "/log", &[]),
    );
    for event in &events {
        body.push_str(&row(&base, event));
    }
    if events.is_empty() {
        body.push_str(
            r#"<tr><td colspan="6" class="empty">No events after this position.</td></tr>"#,
        );
    }
    body.push_str("</tbody></table>\n<nav class=\"pager\">");
    if after > 0 {
        let previous = after.saturating_sub(EVENTS_PER_PAGE).to_string();
        let _ = write!(
            body,
            r#"<a href="{}" id="previous-page">Earlier events</a>"#,
            href(&base, "/log", &[("after", &previous)])
        );
    }
    if let Some(last) = events.last().filter(|e| e.position < head) {
        let next = last.position.0.to_string();
        let _ = write!(
            body,
            r#"<a href="{}" id="next-page">Later events</a>"#,
            href(&base, "/log", &[("after", &next)])
        );
    }
    body.push_str("</nav>\n");
    Ok(Html(page(&base, "Global log", &body)))
}

fn row(base: &str, event: &RecordedEvent) -> String {
    let stream = &event.envelope.stream;
    let correlation = event.envelope.correlation_id.to_string();
    format!(
        r#"<tr><td class="num">{position}</td><td>{name}</td><td><a href="{stream_link}">{stream}</a></td><td class="num">{seq}</td><td>{time}</td><td><a href="{trace}">…{short}</a></td></tr>
"#,
        position = event.position.0,
        name = escape(&event.envelope.name),
        stream_link = href(
            base,
            "/stream",
            &[("type", &stream.entity_type), ("id", stream.id.as_str())]
        ),
        stream = escape(&stream.to_string()),
        seq = event.sequence.0,
        time = time(&event.envelope.timestamp),
        trace = href(base, "/trace", &[("correlation", &correlation)]),
        // UUID v7 ids share their leading time digits: the random tail tells them apart.
        short = &correlation[correlation.len() - 12..],
    )
}

#[derive(Deserialize)]
pub(crate) struct TailQuery {
    /// Start after this position.
    after: Option<u64>,
    /// Stop after this position (a replay of a window of the log); follow forever without.
    until: Option<u64>,
}

/// The tail's page: the script opens the event stream from `after` (by default a few events
/// before the head) and adds each event as it arrives; a button pauses and resumes.
pub(crate) async fn tail(
    State(app): State<App>,
    Base(base): Base,
    Query(query): Query<TailQuery>,
) -> PageResult {
    let head = app.store().head().await?;
    let after = query
        .after
        .unwrap_or_else(|| head.0.saturating_sub(TAIL_BACKLOG));
    let body = format!(
        r#"<p class="meta">Newest first. <span id="tail-status">connecting…</span> <button id="tail-toggle" type="button">Pause</button></p>
<ol id="tail" class="tail" data-events="{events}" data-stream="{stream}" data-trace="{trace}" data-after="{after}" data-until="{until}"></ol>
<noscript><p>The live tail needs JavaScript; the <a href="{log}">global log</a> pages without it.</p></noscript>
<script src="{script}"></script>
"#,
        events = href(&base, "/tail/events", &[]),
        stream = href(&base, "/stream", &[]),
        trace = href(&base, "/trace", &[]),
        log = href(&base, "/log", &[]),
        script = href(&base, "/assets/tail.js", &[]),
        until = query.until.map(|u| u.to_string()).unwrap_or_default(),
    );
    Ok(Html(page(&base, "Live tail", &body)))
}

/// One event as the tail's script reads it (the script sets it as text, never as markup).
fn tail_event(event: &RecordedEvent) -> Event {
    let envelope = &event.envelope;
    let data = serde_json::json!({
        "position": event.position.0,
        "name": envelope.name,
        "type": envelope.stream.entity_type,
        "id": envelope.stream.id.as_str(),
        "sequence": event.sequence.0,
        "time": time(&envelope.timestamp),
        "correlation": envelope.correlation_id.to_string(),
    });
    Event::default()
        .id(event.position.0.to_string())
        .event("recorded")
        .data(data.to_string())
}

type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>;
type KeepAliveStreamOf = axum::response::sse::KeepAliveStream<EventStream>;
type Recorded = Pin<Box<dyn Stream<Item = Result<RecordedEvent, String>> + Send>>;

/// The server-sent events of every commit after `after` (or after the browser's
/// `Last-Event-ID` on a reconnect): through [`SourceFlow::subscribe`](sourceflow::SourceFlow::subscribe)
/// in library mode, by polling the log otherwise. With `until`, the stream stops after that
/// position with an `end` event (the page's script then stops too).
pub(crate) async fn events(
    State(app): State<App>,
    headers: HeaderMap,
    Query(query): Query<TailQuery>,
) -> Sse<KeepAliveStreamOf> {
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let after = Position(resumed.or(query.after).unwrap_or(0));
    let recorded = follow(&app, after);
    let stream: EventStream = match query.until {
        None => Box::pin(recorded.map(sse_event)),
        Some(until) if after.0 >= until => Box::pin(futures_util::stream::iter([end(until)])),
        Some(until) => {
            // Up to and including the event at `until` (without waiting for a later commit),
            // then the end.
            let bounded = futures_util::stream::unfold(
                (recorded, false),
                move |(mut recorded, done)| async move {
                    if done {
                        return None;
                    }
                    let event = recorded.next().await?;
                    if event.as_ref().is_ok_and(|e| e.position.0 > until) {
                        return None;
                    }
                    let done = event.as_ref().is_ok_and(|e| e.position.0 >= until);
                    Some((event, (recorded, done)))
                },
            )
            .map(sse_event);
            Box::pin(bounded.chain(futures_util::stream::iter([end(until)])))
        }
    };
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Every event after `after`, then each new commit.
fn follow(app: &App, after: Position) -> Recorded {
    match &app.0.flow {
        Some(flow) => Box::pin(flow.subscribe(after).map(|e| e.map_err(|e| e.to_string()))),
        None => Box::pin(poll(app.0.store.clone(), after)),
    }
}

fn sse_event(event: Result<RecordedEvent, String>) -> Result<Event, Infallible> {
    Ok(match event {
        Ok(event) => tail_event(&event),
        Err(why) => Event::default().event("failed").data(why),
    })
}

fn end(until: u64) -> Result<Event, Infallible> {
    Ok(Event::default().event("end").data(until.to_string()))
}

/// Follows the log by reading it from the last position seen, waiting [`POLL`] when idle.
fn poll(
    store: std::sync::Arc<dyn Store>,
    after: Position,
) -> impl Stream<Item = Result<RecordedEvent, String>> + Send {
    futures_util::stream::unfold((store, after), |(store, after)| async move {
        loop {
            match store.read_all(after, 256).await {
                Ok(batch) if batch.is_empty() => tokio::time::sleep(POLL).await,
                Ok(batch) => {
                    let next = batch.last().map_or(after, |e| e.position);
                    let events: Vec<_> = batch.into_iter().map(Ok).collect();
                    return Some((futures_util::stream::iter(events), (store, next)));
                }
                Err(e) => {
                    tokio::time::sleep(POLL).await;
                    let items = vec![Err(e.to_string())];
                    return Some((futures_util::stream::iter(items), (store, after)));
                }
            }
        }
    })
    .flatten()
}
