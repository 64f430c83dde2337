//! The actions that change the store, routed only when enabled with a token (the guard has
//! checked it before these run): rebuilding a view, sending the outbox. Both need the flow.

use axum::extract::{Form, State};
use axum::response::Html;
use serde::Deserialize;

use super::{App, Base, PageError, PageResult};
use crate::html::{escape, href, page};

#[derive(Deserialize)]
pub(crate) struct RebuildForm {
    view: String,
}

fn no_flow() -> PageError {
    PageError::BadRequest(
        "this action needs the application's types: mount the inspector in the application"
            .to_owned(),
    )
}

pub(crate) async fn rebuild(
    State(app): State<App>,
    Base(base): Base,
    Form(form): Form<RebuildForm>,
) -> PageResult {
    let flow = app.0.flow.clone().ok_or_else(no_flow)?;
    let rebuild = app
        .0
        .views
        .get(&form.view)
        .ok_or_else(|| PageError::NotFound(format!("no view {} to rebuild", form.view)))?;
    let body = match rebuild(flow).await {
        Ok(events) => format!(
            r#"<p id="outcome">Rebuilt {} from {events} events.</p>"#,
            escape(&form.view)
        ),
        Err(why) => format!(
            r#"<p class="error" id="outcome">Rebuilding {} failed: {}</p>"#,
            escape(&form.view),
            escape(&why)
        ),
    };
    Ok(Html(page(&base, "Rebuild", &with_back(&base, body))))
}

pub(crate) async fn send_outbox(State(app): State<App>, Base(base): Base) -> PageResult {
    let flow = app.0.flow.clone().ok_or_else(no_flow)?;
    flow.drain_outbox().await;
    let left = app.inspect()?.outbox_len().await?;
    let body = format!(r#"<p id="outcome">Outbox sent; {left} entries left.</p>"#);
    Ok(Html(page(&base, "Outbox", &with_back(&base, body))))
}

fn with_back(base: &str, mut body: String) -> String {
    body.push_str(&format!(
        r#"<p><a href="{}">Back to the overview</a></p>"#,
        href(base, "/", &[])
    ));
    body
}
