//! The overview: entity types with their streams, the log's head and recent activity, every
//! view's and reaction's position and lag, the leases of the read sides following the log, the
//! outbox backlog.

use std::fmt::Write as _;

use axum::extract::State;
use axum::response::Html;
use chrono::{TimeDelta, Utc};

use super::{App, Base, PageResult};
use crate::html::{escape, href, page};

pub(crate) async fn overview(State(app): State<App>, Base(base): Base) -> PageResult {
    let store = app.store();
    let inspect = app.inspect()?;
    let admin = app.admin()?;
    let head = store.head().await?;
    let since = Utc::now() - TimeDelta::minutes(1);
    let (types, counts, activity, positions, leases, outbox) = tokio::try_join!(
        admin.entity_types(),
        inspect.entity_state_counts(),
        inspect.recorded_since(since),
        inspect.positions(),
        inspect.leases(),
        inspect.outbox_len(),
    )?;

    let mut body = String::new();
    let _ = write!(
        body,
        r#"<section class="cards">
<div class="card"><span class="label">Log head</span><span class="value" id="head">{head}</span></div>
<div class="card"><span class="label">Events / min</span><span class="value" id="events-per-minute">{events}</span></div>
<div class="card"><span class="label">Commands / min</span><span class="value" id="commands-per-minute">{commands}</span></div>
<div class="card"><span class="label">Outbox backlog</span><span class="value" id="outbox">{outbox}</span></div>
</section>
"#,
        head = head.0,
        events = activity.events,
        commands = if activity.commands_estimated {
            format!("≈{}", activity.commands)
        } else {
            activity.commands.to_string()
        },
    );

    body.push_str(&search_forms(&base));

    body.push_str(
        r#"<h2>Entity types</h2>
<table id="types"><thead><tr><th>Type</th><th class="num">Streams with stored state</th></tr></thead><tbody>
"#,
    );
    for entity_type in &types {
        let count = counts
            .iter()
            .find(|(t, _)| t == entity_type)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(
            body,
            r#"<tr><td><a href="{link}">{name}</a></td><td class="num">{count}</td></tr>"#,
            link = href(&base, "/streams", &[("type", entity_type)]),
            name = escape(entity_type),
        );
    }
    if types.is_empty() {
        body.push_str(r#"<tr><td colspan="2" class="empty">No streams yet.</td></tr>"#);
    }
    body.push_str("</tbody></table>\n");

    body.push_str(
        r#"<h2>Views, reactions and checkpoints</h2>
<table id="positions"><thead><tr><th>Handler</th><th class="num">Position</th><th class="num">Behind the head</th><th class="num">View version</th></tr></thead><tbody>
"#,
    );
    // A view's version (`#[view(version = N)]`) is kept beside the positions, under
    // `<view>#version`: shown as a column of the view's row, not as a handler.
    let versions: std::collections::HashMap<&str, u64> = positions
        .iter()
        .filter_map(|(h, p)| h.strip_suffix("#version").map(|view| (view, p.0)))
        .collect();
    for (handler, position) in positions.iter().filter(|(h, _)| !h.ends_with("#version")) {
        let lag = head.0.saturating_sub(position.0);
        let class = if lag == 0 { "ok" } else { "lag" };
        let version = versions
            .get(handler.as_str())
            .map_or_else(String::new, u64::to_string);
        let _ = writeln!(
            body,
            r#"<tr><td>{name}</td><td class="num">{position}</td><td class="num {class}">{lag}</td><td class="num">{version}</td></tr>"#,
            name = escape(handler),
            position = position.0,
        );
    }
    if positions.is_empty() {
        body.push_str(r#"<tr><td colspan="4" class="empty">No stored positions.</td></tr>"#);
    }
    body.push_str("</tbody></table>\n");
    body.push_str(&lease_table(&leases));

    body.push_str(&action_forms(&app, &base));
    Ok(Html(page(&base, "Overview", &body)))
}

/// The leases: which process (a follower's id) applies the log for which read side, and for
/// how long unless it renews its lease.
fn lease_table(leases: &[sourceflow::store::LeaseRecord]) -> String {
    let mut table = String::from(
        r#"<h2>Read sides following the log</h2>
<table id="leases"><thead><tr><th>Lease</th><th>Holder</th><th>Runs out</th></tr></thead><tbody>
"#,
    );
    let now = Utc::now();
    for lease in leases {
        let left = lease.expires_at - now;
        let (class, when) = if left > TimeDelta::zero() {
            ("ok", format!("in {} s", left.num_seconds()))
        } else {
            ("lag", format!("ran out {} s ago", (-left).num_seconds()))
        };
        let _ = writeln!(
            table,
            r#"<tr><td>{name}</td><td>{holder}</td><td class="{class}">{when}</td></tr>"#,
            name = escape(&lease.name),
            holder = lease.holder,
        );
    }
    if leases.is_empty() {
        table.push_str(r#"<tr><td colspan="3" class="empty">No leases.</td></tr>"#);
    }
    table.push_str("</tbody></table>\n");
    table
}

/// The forms that jump to a correlation trace or a stream.
fn search_forms(base: &str) -> String {
    format!(
        r#"<section class="search">
<form method="get" action="{trace}"><label>Correlation id <input name="correlation" size="38" placeholder="0190…" required></label> <button>Trace</button></form>
<form method="get" action="{log}"><label>Global log after position <input name="after" size="10" inputmode="numeric" value="0"></label> <button>Read</button></form>
</section>
"#,
        trace = href(base, "/trace", &[]),
        log = href(base, "/log", &[]),
    )
}

/// The actions, when enabled: a rebuild button per registered view, and sending the outbox.
fn action_forms(app: &App, base: &str) -> String {
    if !app.0.actions {
        return String::new();
    }
    let mut out = String::from("<h2>Actions</h2>\n<section class=\"actions\">\n");
    if app.0.flow.is_none() {
        out.push_str(
            "<p>Actions need the application's types: mount the inspector in the application \
             (library mode).</p>\n",
        );
    }
    for view in app.0.views.keys() {
        let _ = writeln!(
            out,
            r#"<form method="post" action="{action}"><input type="hidden" name="view" value="{name}"><button>Rebuild {name}</button></form>"#,
            action = href(base, "/actions/rebuild", &[]),
            name = escape(view),
        );
    }
    if app.0.flow.is_some() {
        let _ = writeln!(
            out,
            r#"<form method="post" action="{action}"><button>Send the outbox</button></form>"#,
            action = href(base, "/actions/outbox", &[]),
        );
    }
    out.push_str("</section>\n");
    out
}
