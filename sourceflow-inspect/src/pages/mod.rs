//! The pages: what each route reads from the store and renders. `overview`, `streams` (a type's
//! streams and one stream, with time travel), `trace` (a correlation id's causal tree), `log`
//! (the global log by position and the live tail), `actions` (the few that change anything).

mod actions;
mod log;
mod overview;
mod streams;
mod trace;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sourceflow::store::{Store, StoreAdmin, StoreError, StoreInspect};
use sourceflow::SourceFlow;

use crate::{access, html, Inspector, RebuildFn, StateAtFn};

/// What every handler shares: the store, and in library mode the flow and the user's types.
#[derive(Clone)]
pub(crate) struct App(Arc<Inner>);

struct Inner {
    store: Arc<dyn Store>,
    flow: Option<SourceFlow>,
    entities: BTreeMap<String, StateAtFn>,
    views: BTreeMap<String, RebuildFn>,
    token: Option<String>,
    actions: bool,
    loopback_only: bool,
}

impl App {
    pub(crate) fn new(inspector: Inspector) -> Self {
        Self(Arc::new(Inner {
            store: inspector.store,
            flow: inspector.flow,
            entities: inspector.entities,
            views: inspector.views,
            token: inspector.token,
            actions: inspector.actions,
            loopback_only: inspector.loopback_only,
        }))
    }

    fn store(&self) -> &dyn Store {
        &*self.0.store
    }

    fn admin(&self) -> Result<&dyn StoreAdmin, PageError> {
        self.store()
            .admin()
            .ok_or(PageError::Unsupported("listings (StoreAdmin)"))
    }

    fn inspect(&self) -> Result<&dyn StoreInspect, PageError> {
        self.admin()?
            .inspect()
            .ok_or(PageError::Unsupported("inspector queries (StoreInspect)"))
    }
}

/// The routes, the token guard and the security headers.
pub(crate) fn router(app: App) -> Router {
    let mut routes = Router::new()
        .route("/", get(overview::overview))
        .route("/streams", get(streams::list))
        .route("/stream", get(streams::stream))
        .route("/trace", get(trace::trace))
        .route("/log", get(log::log_page))
        .route("/tail", get(log::tail))
        .route("/tail/events", get(log::events))
        .route("/assets/style.css", get(style))
        .route("/assets/tail.js", get(script));
    if app.0.actions {
        routes = routes
            .route("/actions/rebuild", post(actions::rebuild))
            .route("/actions/outbox", post(actions::send_outbox));
    }
    routes
        .layer(axum::middleware::from_fn_with_state(
            access::Access::new(app.0.token.as_deref(), app.0.loopback_only),
            access::guard,
        ))
        .layer(axum::middleware::from_fn(access::headers))
        .with_state(app)
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../assets/style.css"),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../assets/tail.js"),
    )
        .into_response()
}

/// The path the inspector is mounted under (empty at the root), from the original request
/// path and the part of it the inspector's router saw.
pub(crate) struct Base(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Base {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let original = OriginalUri::from_request_parts(parts, state).await?;
        let full = original.path();
        let seen = parts.uri.path();
        let base = full
            .strip_suffix(seen)
            .unwrap_or_else(|| full.trim_end_matches('/'));
        Ok(Base(base.trim_end_matches('/').to_owned()))
    }
}

/// Why a page could not be shown.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PageError {
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("this store does not offer {0}")]
    Unsupported(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = match &self {
            PageError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            PageError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
        };
        let body = format!(
            r#"<p class="error">{}</p>"#,
            html::escape(&self.to_string())
        );
        (status, Html(html::page("", "Error", &body))).into_response()
    }
}

/// What a page handler returns.
pub(crate) type PageResult = Result<Html<String>, PageError>;
