//! A web inspector for any sourceflow store: which commands and events a stream holds, what a
//! correlation id set in motion, how far each view and reaction lags behind the log, what waits
//! in the outbox. Server-rendered HTML, no JavaScript build step; the live tail uses
//! server-sent events.
//!
//! Two ways to run it:
//! - the binary, on any SQLite file or Postgres database (raw JSON, no user types needed):
//!   `sourceflow-inspect --db app.db` or `sourceflow-inspect --database-url postgres://...`;
//! - the library, mounted in your own service with [`Inspector::router`]: with your
//!   [`SourceFlow`] linked in it also shows an entity's state at any sequence (time travel
//!   through [`SourceFlow::state_at`]) and, when enabled with a token, rebuilds views and
//!   sends the outbox.
//!
//! ```no_run
//! use sourceflow::prelude::*;
//! use sourceflow_inspect::Inspector;
//!
//! # #[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize, Entity)]
//! # pub struct Account { pub balance: i64 }
//! # async fn run(flow: SourceFlow) -> Result<(), Box<dyn std::error::Error>> {
//! let inspector = Inspector::for_flow(&flow).entity::<Account>().router();
//! let app = axum::Router::new().nest("/inspect", inspector);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Safety of what it shows
//! Payloads are user data: every stored string is HTML-escaped, every response carries a
//! strict Content-Security-Policy ([`CONTENT_SECURITY_POLICY`]: no inline script, only this
//! server's stylesheet and script), and every query binds its arguments. The inspector is
//! read-only unless actions are enabled with [`Inspector::actions`], which also makes every
//! page require the token. The binary refuses to listen beyond loopback without a token
//! ([`check_bind`]).
//!
//! # What it reads
//! Everything goes through [`Store`], its tooling interface
//! [`StoreAdmin`](sourceflow::store::StoreAdmin) and the inspector queries
//! [`StoreInspect`](sourceflow::store::StoreInspect) (implemented by `MemoryStore`,
//! `SqliteStore` and `PostgresStore`); lists are paged by key, never by offset.
#![warn(missing_docs)]

mod access;
mod html;
mod pages;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use futures_util::future::BoxFuture;
use sourceflow::store::Store;
use sourceflow::{Entity, EntityId, Sequence, SourceFlow};

pub use access::{check_bind, check_token, AccessError, CONTENT_SECURITY_POLICY};
pub use html::escape;

/// Replays one entity type's stream up to a sequence and returns the state as JSON.
pub(crate) type StateAtFn = Arc<
    dyn Fn(SourceFlow, EntityId, Sequence) -> BoxFuture<'static, Result<serde_json::Value, String>>
        + Send
        + Sync,
>;

/// Rebuilds one view; answers the number of events projected.
pub(crate) type RebuildFn =
    Arc<dyn Fn(SourceFlow) -> BoxFuture<'static, Result<u64, String>> + Send + Sync>;

/// Configures an inspector and builds its [`Router`].
///
/// Read-only by default. Library mode ([`Inspector::for_flow`]) adds what needs the
/// application's types: time travel for each [`entity`](Self::entity), and, with
/// [`actions`](Self::actions), rebuilding each [`view`](Self::view) and sending the outbox.
#[derive(Clone)]
pub struct Inspector {
    store: Arc<dyn Store>,
    flow: Option<SourceFlow>,
    entities: BTreeMap<String, StateAtFn>,
    views: BTreeMap<String, RebuildFn>,
    token: Option<String>,
    actions: bool,
    loopback_only: bool,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector")
            .field("store", &self.store)
            .field("library_mode", &self.flow.is_some())
            .field("entities", &self.entities.keys().collect::<Vec<_>>())
            .field("views", &self.views.keys().collect::<Vec<_>>())
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("actions", &self.actions)
            .field("loopback_only", &self.loopback_only)
            .finish()
    }
}

impl Inspector {
    /// An inspector over `store`: every page, payloads as raw JSON.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            flow: None,
            entities: BTreeMap::new(),
            views: BTreeMap::new(),
            token: None,
            actions: false,
            loopback_only: false,
        }
    }

    /// An inspector over `flow`'s store, in library mode: the live tail follows
    /// [`SourceFlow::subscribe`], and the entity types and views registered with
    /// [`entity`](Self::entity) and [`view`](Self::view) get time travel and rebuilds.
    pub fn for_flow(flow: &SourceFlow) -> Self {
        let mut inspector = Self::new(flow.store().clone());
        inspector.flow = Some(flow.clone());
        inspector
    }

    /// Time travel for entity type `E` (library mode): a stream's page offers `E`'s state after
    /// any command, replayed with [`SourceFlow::state_at`]. Ignored without a flow.
    pub fn entity<E: Entity>(mut self) -> Self {
        let state_at: StateAtFn = Arc::new(|flow: SourceFlow, id: EntityId, at: Sequence| {
            Box::pin(async move {
                let state = flow
                    .state_at::<E>(id, at)
                    .await
                    .map_err(|e| e.to_string())?;
                serde_json::to_value(state).map_err(|e| e.to_string())
            })
        });
        self.entities.insert(E::NAME.to_owned(), state_at);
        self
    }

    /// Offers rebuilding view `V` (library mode, with [`actions`](Self::actions) enabled):
    /// [`SourceFlow::rebuild`] clears its models and re-projects the whole log. Listed under
    /// the view's type name.
    pub fn view<V: 'static>(mut self) -> Self {
        let full = std::any::type_name::<V>();
        let name = full.rsplit("::").next().unwrap_or(full).to_owned();
        let rebuild: RebuildFn = Arc::new(|flow: SourceFlow| {
            Box::pin(async move { flow.rebuild::<V>().await.map_err(|e| e.to_string()) })
        });
        self.views.insert(name, rebuild);
        self
    }

    /// Requires `token` on every request (`Authorization: Bearer`, or a cookie set by opening
    /// any page once with `?token=`), without enabling actions: for a server reachable beyond
    /// loopback.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Enables the actions that change the store (rebuilding a view, sending the outbox), and
    /// requires `token` on every request, as [`token`](Self::token) does.
    pub fn actions(mut self, token: impl Into<String>) -> Self {
        self.actions = true;
        self.token(token)
    }

    /// Answers only requests whose `Host` names this machine (`127.0.0.1`, `[::1]`,
    /// `localhost`): for an inspector on loopback without a token, so that a web page whose
    /// domain was pointed at 127.0.0.1 (DNS rebinding) cannot read the store through the
    /// browser. The binary sets it whenever it runs without a token.
    pub fn loopback_only(mut self) -> Self {
        self.loopback_only = true;
        self
    }

    /// The routes, to serve alone or to mount with [`Router::nest`] under a path of your
    /// choice (links follow the mount point).
    pub fn router(self) -> Router {
        pages::router(pages::App::new(self))
    }
}

/// The routes of a read-only inspector over `store`: `Inspector::new(store).router()`.
pub fn router(store: Arc<dyn Store>) -> Router {
    Inspector::new(store).router()
}
