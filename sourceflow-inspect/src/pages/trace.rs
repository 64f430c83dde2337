//! A correlation trace: every command and event sharing one correlation id, across streams, as
//! a tree of causation links (a command's events under it, a reaction's follow-up command under
//! the event that caused it).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::response::Html;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sourceflow::store::Correlated;
use sourceflow::Envelope;
use uuid::Uuid;

use super::{App, Base, PageError, PageResult};
use crate::html::{escape, href, page, pretty_json, time};

/// The most commands and the most events one trace shows.
pub(crate) const TRACE_LIMIT: usize = 1_000;

#[derive(Deserialize)]
pub(crate) struct TraceQuery {
    correlation: Option<String>,
}

pub(crate) async fn trace(
    State(app): State<App>,
    Base(base): Base,
    Query(query): Query<TraceQuery>,
) -> PageResult {
    let given = query.correlation.as_deref().map(str::trim).unwrap_or("");
    let mut body = format!(
        r#"<form method="get" action="{action}" class="search"><label>Correlation id <input name="correlation" size="38" value="{value}" required></label> <button>Trace</button></form>
"#,
        action = href(&base, "/trace", &[]),
        value = escape(given),
    );
    if given.is_empty() {
        return Ok(Html(page(&base, "Correlation trace", &body)));
    }
    let correlation = Uuid::parse_str(given)
        .map_err(|_| PageError::BadRequest(format!("not a UUID: {given}")))?;
    let found = app.inspect()?.correlated(correlation, TRACE_LIMIT).await?;
    let _ = writeln!(
        body,
        r#"<p class="meta">{} commands and {} events share correlation <code>{correlation}</code>.</p>"#,
        found.commands.len(),
        found.events.len(),
    );
    if found.commands.len() >= TRACE_LIMIT || found.events.len() >= TRACE_LIMIT {
        let _ = writeln!(
            body,
            r#"<p class="error">Only the first {TRACE_LIMIT} commands and events are shown.</p>"#
        );
    }
    body.push_str(&tree(&base, &found));
    Ok(Html(page(&base, "Correlation trace", &body)))
}

/// One message of the trace.
struct Node<'a> {
    kind: &'static str,
    envelope: &'a Envelope,
    /// `#sequence` for commands, `#sequence at position` for events.
    at: String,
    payload: &'a [u8],
    /// Commands before events at the same instant, events by position.
    order: (DateTime<Utc>, u8, u64),
}

/// The nested lists of the causal tree: roots are the messages whose cause is not in the trace.
fn tree(base: &str, found: &Correlated) -> String {
    let mut nodes: Vec<Node<'_>> = Vec::new();
    for command in &found.commands {
        nodes.push(Node {
            kind: "command",
            envelope: &command.envelope,
            at: format!("#{}", command.sequence.0),
            payload: &command.payload,
            order: (command.envelope.timestamp, 0, command.sequence.0),
        });
    }
    for event in &found.events {
        nodes.push(Node {
            kind: "event",
            envelope: &event.envelope,
            at: format!("#{} · position {}", event.sequence.0, event.position.0),
            payload: &event.payload,
            order: (event.envelope.timestamp, 1, event.position.0),
        });
    }
    nodes.sort_by_key(|n| n.order);
    let ids: HashSet<Uuid> = nodes.iter().map(|n| n.envelope.message_id).collect();
    let mut children: HashMap<Option<Uuid>, Vec<usize>> = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        let parent = node.envelope.causation_id.filter(|id| ids.contains(id));
        children.entry(parent).or_default().push(i);
    }
    let mut out = String::from(r#"<ul class="tree" id="trace">"#);
    let mut shown = HashSet::new();
    render(base, &nodes, &children, None, &mut shown, &mut out);
    out.push_str("</ul>\n");
    out
}

fn render(
    base: &str,
    nodes: &[Node<'_>],
    children: &HashMap<Option<Uuid>, Vec<usize>>,
    parent: Option<Uuid>,
    shown: &mut HashSet<usize>,
    out: &mut String,
) {
    let Some(kids) = children.get(&parent) else {
        return;
    };
    for &i in kids {
        // A message id that repeats across streams could make a cycle: show each node once.
        if !shown.insert(i) {
            continue;
        }
        let node = &nodes[i];
        let envelope = node.envelope;
        let stream = &envelope.stream;
        let _ = write!(
            out,
            r#"<li class="{kind}" data-message="{message}"><div class="head"><span class="kind">{kind}</span> <span class="name">{name}</span> <a href="{link}">{stream}</a> <span class="seq">{at}</span> <span class="time">{time}</span></div><details><summary>payload · message {message}</summary><pre class="payload">{payload}</pre></details>"#,
            kind = node.kind,
            message = envelope.message_id,
            name = escape(&envelope.name),
            link = href(
                base,
                "/stream",
                &[("type", &stream.entity_type), ("id", stream.id.as_str())]
            ),
            stream = escape(&stream.to_string()),
            at = node.at,
            time = time(&envelope.timestamp),
            payload = pretty_json(node.payload),
        );
        if children.contains_key(&Some(envelope.message_id)) {
            out.push_str("<ul>");
            render(base, nodes, children, Some(envelope.message_id), shown, out);
            out.push_str("</ul>");
        }
        out.push_str("</li>\n");
    }
}
