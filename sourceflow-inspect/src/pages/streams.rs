//! A type's streams (paged by id, searchable by id prefix) and one stream: its commands with
//! the events each recorded, in sequence order, the stored entity state, and time travel.

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::response::Html;
use serde::Deserialize;
use sourceflow::message::StoredCommand;
use sourceflow::store::Page;
use sourceflow::{EntityId, Envelope, RecordedEvent, Sequence, StreamId, StreamStatus};

use super::{App, Base, PageError, PageResult};
use crate::html::{escape, href, page, pretty_json, time};

/// Stream ids per page of a type's list.
pub(crate) const IDS_PER_PAGE: usize = 50;
/// Commands per page of a stream.
pub(crate) const COMMANDS_PER_PAGE: u64 = 50;

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    #[serde(rename = "type")]
    entity_type: String,
    #[serde(default)]
    prefix: String,
    after: Option<String>,
}

pub(crate) async fn list(
    State(app): State<App>,
    Base(base): Base,
    Query(query): Query<ListQuery>,
) -> PageResult {
    let page_request = Page {
        after: query.after.as_deref().map(EntityId::from),
        limit: IDS_PER_PAGE + 1,
    };
    let mut ids = app
        .inspect()?
        .stream_ids_with_prefix(&query.entity_type, &query.prefix, page_request)
        .await?;
    let more = ids.len() > IDS_PER_PAGE;
    ids.truncate(IDS_PER_PAGE);

    let entity_type = &query.entity_type;
    let mut body = format!(
        r#"<form method="get" action="{action}" class="search"><input type="hidden" name="type" value="{t}"><label>Id starts with <input name="prefix" value="{prefix}"></label> <button>Search</button></form>
<table id="streams"><thead><tr><th>Stream id</th></tr></thead><tbody>
"#,
        action = href(&base, "/streams", &[]),
        t = escape(entity_type),
        prefix = escape(&query.prefix),
    );
    for id in &ids {
        let _ = writeln!(
            body,
            r#"<tr><td><a href="{link}">{id}</a></td></tr>"#,
            link = href(
                &base,
                "/stream",
                &[("type", entity_type), ("id", id.as_str())]
            ),
            id = escape(id.as_str()),
        );
    }
    if ids.is_empty() {
        body.push_str(r#"<tr><td class="empty">No streams.</td></tr>"#);
    }
    body.push_str("</tbody></table>\n<nav class=\"pager\">");
    if query.after.is_some() {
        let first = href(
            &base,
            "/streams",
            &[("type", entity_type), ("prefix", &query.prefix)],
        );
        let _ = write!(body, r#"<a href="{first}" id="first-page">First page</a>"#);
    }
    if let (true, Some(last)) = (more, ids.last()) {
        let next = href(
            &base,
            "/streams",
            &[
                ("type", entity_type),
                ("prefix", &query.prefix),
                ("after", last.as_str()),
            ],
        );
        let _ = write!(body, r#"<a href="{next}" id="next-page">Next page</a>"#);
    }
    body.push_str("</nav>\n");
    Ok(Html(page(
        &base,
        &format!("Streams of {entity_type}"),
        &body,
    )))
}

#[derive(Deserialize)]
pub(crate) struct StreamQuery {
    #[serde(rename = "type")]
    entity_type: String,
    id: String,
    /// The first command sequence of the page.
    from: Option<u64>,
    /// Time travel: the sequence to show the state after.
    at: Option<u64>,
}

pub(crate) async fn stream(
    State(app): State<App>,
    Base(base): Base,
    Query(query): Query<StreamQuery>,
) -> PageResult {
    let store = app.store();
    let stream = StreamId::new(query.entity_type.clone(), EntityId::from(query.id.as_str()));
    let last = store.last_sequence(&stream).await?;
    if last == Sequence::ZERO {
        return Err(PageError::NotFound(format!("no stream {stream}")));
    }
    // A deleted stream shows its tombstone and erased records (no payloads); an archived one
    // has only its archive marker in the hot tables, so its page opens there.
    let marker = store.load_commands(&stream, last, Some(last)).await?;
    let status = marker.last().map_or(StreamStatus::Live, |c| {
        StreamStatus::after(&c.envelope.name)
    });
    let opening = match status {
        StreamStatus::Archived => last.0,
        _ => 1,
    };
    let from = query.from.unwrap_or(opening).clamp(1, last.0);
    let to = from.saturating_add(COMMANDS_PER_PAGE - 1).min(last.0);
    // Events appended without a command are recorded under command 0, before the first.
    let events_from = if from == 1 { 0 } else { from };
    let (entity, commands, events) = tokio::try_join!(
        store.get_entity(&stream),
        store.load_commands(&stream, Sequence(from), Some(Sequence(to))),
        app.inspect()?
            .events_of_commands(&stream, Sequence(events_from), Sequence(to)),
    )?;

    let mut body = String::new();
    let _ = writeln!(
        body,
        r#"<p class="meta">Type <code>{t}</code> · id <code id="stream-id">{id}</code> · {last} commands · <a href="{list}">all streams of the type</a></p>"#,
        t = escape(&query.entity_type),
        id = escape(&query.id),
        last = last.0,
        list = href(&base, "/streams", &[("type", &query.entity_type)]),
    );

    match status {
        StreamStatus::Live => {}
        StreamStatus::Deleted => body.push_str(
            r#"<p class="meta" id="stream-status">Deleted: its commands and events are erased (no payloads are kept) and it takes no more commands.</p>"#,
        ),
        StreamStatus::Archived => body.push_str(
            r#"<p class="meta" id="stream-status">Archived: its history is in the archive tables until the stream is restored.</p>"#,
        ),
        _ => {}
    }
    body.push_str("<h2>Stored entity state</h2>\n");
    match &entity {
        Some((version, state)) => {
            let _ = writeln!(
                body,
                r#"<p class="meta">Version <span id="state-version">{}</span></p><pre id="state">{}</pre>"#,
                version.0,
                pretty_json(state)
            );
        }
        None => body.push_str(r#"<p class="empty" id="state">No stored state.</p>"#),
    }

    body.push_str(&time_travel(&app, &base, &query, &stream, last).await);

    let _ = write!(
        body,
        r#"<h2>Commands {from}–{to} and their events</h2>
<ol class="messages" id="messages">
"#
    );
    for event in events.iter().filter(|e| e.command_sequence.0 == 0) {
        body.push_str(&event_item(&base, event));
    }
    for command in &commands {
        body.push_str(&command_item(&base, command));
        for event in events
            .iter()
            .filter(|e| e.command_sequence == command.sequence)
        {
            body.push_str(&event_item(&base, event));
        }
    }
    body.push_str("</ol>\n<nav class=\"pager\">");
    let link = |from: u64| {
        href(
            &base,
            "/stream",
            &[
                ("type", &query.entity_type),
                ("id", &query.id),
                ("from", &from.to_string()),
            ],
        )
    };
    if from > 1 {
        let previous = from.saturating_sub(COMMANDS_PER_PAGE).max(1);
        let _ = write!(
            body,
            r#"<a href="{}" id="previous-page">Earlier commands</a>"#,
            link(previous)
        );
    }
    if to < last.0 {
        let _ = write!(
            body,
            r#"<a href="{}" id="next-page">Later commands</a>"#,
            link(to + 1)
        );
    }
    body.push_str("</nav>\n");
    Ok(Html(page(&base, &format!("Stream {stream}"), &body)))
}

/// The time-travel form and, when a sequence was asked for, the state after it: replayed with
/// the application's entity type in library mode, otherwise a pointer to the raw commands.
async fn time_travel(
    app: &App,
    base: &str,
    query: &StreamQuery,
    stream: &StreamId,
    last: Sequence,
) -> String {
    let mut out = format!(
        r#"<h2>Time travel</h2>
<form method="get" action="{action}" class="search"><input type="hidden" name="type" value="{t}"><input type="hidden" name="id" value="{id}"><label>State after command <input name="at" size="8" inputmode="numeric" value="{at}"></label> <button>Show</button></form>
"#,
        action = href(base, "/stream", &[]),
        t = escape(&query.entity_type),
        id = escape(&query.id),
        at = query.at.unwrap_or(last.0),
    );
    let Some(at) = query.at else {
        return out;
    };
    let at = Sequence(at.min(last.0));
    let replay = match (&app.0.flow, app.0.entities.get(&query.entity_type)) {
        (Some(flow), Some(state_at)) => Some(state_at(flow.clone(), stream.id.clone(), at).await),
        _ => None,
    };
    match replay {
        Some(Ok(state)) => {
            let text = serde_json::to_string_pretty(&state).unwrap_or_default();
            let _ = writeln!(
                out,
                r#"<p class="meta">Replayed to command {at}</p><pre id="state-at">{}</pre>"#,
                escape(&text),
                at = at.0,
            );
        }
        Some(Err(why)) => {
            let _ = write!(
                out,
                r#"<p class="error" id="state-at">Replay failed: {}</p>"#,
                escape(&why)
            );
        }
        None => {
            let page_from = at.0.saturating_sub(COMMANDS_PER_PAGE - 1).max(1);
            let _ = writeln!(
                out,
                r#"<p class="meta" id="state-at">This inspector does not link the application's type <code>{t}</code>, so it cannot replay it: the state after command {at} is what commands 1–{at} made of it, shown raw <a href="{link}">here</a>. Mount the inspector in the application (library mode) to see the replayed state.</p>"#,
                t = escape(&query.entity_type),
                at = at.0,
                link = href(
                    base,
                    "/stream",
                    &[
                        ("type", &query.entity_type),
                        ("id", &query.id),
                        ("from", &page_from.to_string()),
                    ],
                ),
            );
        }
    }
    out
}

/// A trace link for a correlation id.
fn correlation_link(base: &str, envelope: &Envelope) -> String {
    let id = envelope.correlation_id.to_string();
    format!(
        r#"<a href="{}">{id}</a>"#,
        href(base, "/trace", &[("correlation", &id)])
    )
}

fn metadata(base: &str, envelope: &Envelope) -> String {
    format!(
        r#"<dl class="envelope"><dt>message</dt><dd>{message}</dd><dt>correlation</dt><dd>{correlation}</dd><dt>causation</dt><dd>{causation}</dd><dt>time</dt><dd>{time}</dd><dt>version</dt><dd>{version}</dd></dl>"#,
        message = envelope.message_id,
        correlation = correlation_link(base, envelope),
        causation = envelope
            .causation_id
            .map_or_else(|| "—".to_owned(), |id| id.to_string()),
        time = time(&envelope.timestamp),
        version = envelope.version,
    )
}

pub(crate) fn command_item(base: &str, command: &StoredCommand) -> String {
    format!(
        r#"<li class="command" id="command-{seq}"><div class="head"><span class="kind">command</span> <span class="seq">#{seq}</span> <span class="name">{name}</span></div>{meta}<pre class="payload">{payload}</pre></li>
"#,
        seq = command.sequence.0,
        name = escape(&command.envelope.name),
        meta = metadata(base, &command.envelope),
        payload = pretty_json(&command.payload),
    )
}

pub(crate) fn event_item(base: &str, event: &RecordedEvent) -> String {
    format!(
        r#"<li class="event" id="event-{seq}"><div class="head"><span class="kind">event</span> <span class="seq">#{seq}</span> <span class="name">{name}</span> <span class="position">position {position}</span></div>{meta}<pre class="payload">{payload}</pre></li>
"#,
        seq = event.sequence.0,
        name = escape(&event.envelope.name),
        position = event.position.0,
        meta = metadata(base, &event.envelope),
        payload = pretty_json(&event.payload),
    )
}
