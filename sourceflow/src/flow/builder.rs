//! The [`Builder`]: configuration, discovery of components, and assembly of a flow.

use std::any::TypeId;
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use super::check::{self, Instance};
use super::{FlowInner, SourceFlow};
use crate::base::clock::{Clock, SystemClock};
use crate::base::error::Error;
use crate::context::saga::CommandStreams;
use crate::read::subscriber::{Progress, Recent};
use crate::read::ReadSide;
use crate::routes::{ComponentKind, Registry};
use crate::signals::Signals;
use crate::store::{KeyStore, SealedStore, Store};
use crate::write::bus::{CommandDispatcher, RetryPolicy};
use crate::write::cache::{EntityCache, StreamLocks};
use crate::write::schedule::{SchedulerOptions, Scheduling};
use crate::write::WriteSide;

/// Configures and validates a [`SourceFlow`].
pub struct Builder {
    store: Option<Arc<dyn Store>>,
    instances: Vec<Instance>,
    dispatchers: Vec<Arc<dyn CommandDispatcher>>,
    retry: RetryPolicy,
    no_discovery: bool,
    keep_outbox: bool,
    background: HashSet<TypeId>,
    entity_cache: usize,
    rebuild_stale_views: bool,
    clock: Arc<dyn Clock>,
    scheduler: SchedulerOptions,
    key_store: Option<Arc<dyn KeyStore>>,
    key_cache: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            store: None,
            instances: Vec::new(),
            dispatchers: Vec::new(),
            retry: RetryPolicy::default(),
            no_discovery: false,
            keep_outbox: false,
            background: HashSet::new(),
            entity_cache: 10_000,
            rebuild_stale_views: false,
            clock: Arc::new(SystemClock),
            scheduler: SchedulerOptions::default(),
            key_store: None,
            key_cache: Duration::from_secs(5),
        }
    }
}

impl Builder {
    /// The store to use: `MemoryStore`, `SqliteStore`, `PostgresStore` or your own.
    pub fn store(mut self, store: impl Store + 'static) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// A store already shared elsewhere.
    pub fn shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Registers a `#[saga]` instance (needed when the type is not `Default`, or holds
    /// dependencies such as clients or configuration).
    pub fn saga<S: Send + Sync + 'static>(self, saga: S) -> Self {
        self.component(ComponentKind::Saga, saga)
    }

    /// Registers a `#[view]` instance.
    pub fn view<V: Send + Sync + 'static>(self, view: V) -> Self {
        self.component(ComponentKind::View, view)
    }

    /// Registers an `#[aggregate]` instance.
    pub fn aggregate<A: Send + Sync + 'static>(self, aggregate: A) -> Self {
        self.component(ComponentKind::Aggregate, aggregate)
    }

    fn component<T: Send + Sync + 'static>(mut self, kind: ComponentKind, value: T) -> Self {
        self.instances.push((
            TypeId::of::<T>(),
            kind,
            std::any::type_name::<T>(),
            Arc::new(value),
        ));
        self
    }

    /// Projects view `V` in the background instead of before `send` returns: higher
    /// throughput, but a read right after `send` may not see the command's events yet.
    /// [`SourceFlow::catch_up`] waits for it.
    pub fn background<V: 'static>(mut self) -> Self {
        self.background.insert(TypeId::of::<V>());
        self
    }

    /// Adds a dispatcher offered every command before the local one (a remote transport).
    pub fn dispatcher(mut self, dispatcher: impl CommandDispatcher) -> Self {
        self.dispatchers.push(Arc::new(dispatcher));
        self
    }

    /// How many entity states this process keeps in memory between commands (default
    /// 10,000; 0 disables the cache). A cached state is checked by the commit's expected
    /// sequence, so a write from another process is never missed, only costs a retry. A
    /// command hands the state to its handler and puts the new one back when it commits; a
    /// command that is refused or fails leaves no entry (its handler may have changed the
    /// state half-way), so the stream's next command reads it from the store.
    pub fn entity_cache(mut self, capacity: usize) -> Self {
        self.entity_cache = capacity;
        self
    }

    /// Where the keys that seal [`Personal`](crate::personal::Personal) fields are kept: an
    /// external key management system behind [`KeyStore`]. By default the store's own key
    /// table ([`Store::keys`]).
    pub fn key_store(mut self, keys: impl KeyStore + 'static) -> Self {
        self.key_store = Some(Arc::new(keys));
        self
    }

    /// A key store already shared elsewhere (see [`key_store`](Self::key_store)): e.g. the
    /// write side's database, for a read side that keeps its views in a store of its own.
    pub fn shared_key_store(mut self, keys: Arc<dyn KeyStore>) -> Self {
        self.key_store = Some(keys);
        self
    }

    /// How long this process keeps a subject key it has read (5 s by default). A subject
    /// forgotten by another process sharing the store reads as redacted here at most this long
    /// after; `Duration::ZERO` reads the key store on every sealed read and write.
    pub fn key_cache(mut self, ttl: Duration) -> Self {
        self.key_cache = ttl;
        self
    }

    /// The clock delays are counted on and due schedules are judged by (the system clock by
    /// default; a [`ManualClock`](crate::schedule::ManualClock) in tests).
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How this process fires scheduled commands. On by default;
    /// [`SchedulerOptions::disabled`] (or [`without_scheduler`](Self::without_scheduler)) for
    /// processes that only read.
    pub fn scheduler(mut self, options: SchedulerOptions) -> Self {
        self.scheduler = options;
        self
    }

    /// Runs no scheduler in this process: scheduled commands are still made and cancelled
    /// here, and fired by other processes (or by [`SourceFlow::fire_due`]).
    pub fn without_scheduler(self) -> Self {
        self.scheduler(SchedulerOptions::disabled())
    }

    /// How conflicting writes are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Uses only the components registered with [`saga`](Self::saga), [`view`](Self::view) and
    /// [`aggregate`](Self::aggregate), instead of also discovering every `Default` one linked
    /// into the binary. Commands of sagas left out are then not reported as unhandled.
    pub fn without_discovery(mut self) -> Self {
        self.no_discovery = true;
        self
    }

    /// Rebuilds, during [`build`](Self::build), every view whose stored models were built by
    /// another version of its projection (`#[view(version = N)]`), logging progress at `info`
    /// level (target `sourceflow::rebuild`). Without it such a view makes `build` fail with
    /// [`Error::Config`] naming it, so stale models are never served.
    pub fn rebuild_stale_views(mut self) -> Self {
        self.rebuild_stale_views = true;
        self
    }

    /// Leaves follow-up commands in the outbox instead of sending them (used by the testing
    /// harness to inspect them).
    pub(crate) fn keep_outbox(mut self) -> Self {
        self.keep_outbox = true;
        self
    }

    /// Validates the routing table, finishes what a crash interrupted (drains the outbox,
    /// catches views and aggregates up to the log) and returns the flow.
    ///
    /// # Errors
    /// [`Error::Config`] listing every problem at once: no store, a command no saga handles, a
    /// command handled by two sagas, a wire name used by two types, a registered value that is
    /// not a component, two views or aggregates with one name, a component that is not
    /// `Default` and was not registered. [`Error::Store`] if catching up fails.
    pub async fn build(self) -> Result<SourceFlow, Error> {
        let rebuild_stale_views = self.rebuild_stale_views;
        let registry = Registry::global();
        let mut problems = Vec::new();
        let store = check::check_store(self.store, &mut problems);
        let (chosen, missing_instances) =
            check::check_components(registry, self.instances, !self.no_discovery, &mut problems);
        let (sagas, mut streams) = check::check_saga_owners(registry, &chosen, &mut problems);
        check::check_wire_names(registry, &mut problems);
        check::check_aliases(registry, &mut problems);
        check::check_upcasters(registry, &mut problems);
        check::check_commands_handled(
            registry,
            &sagas,
            &missing_instances,
            !self.no_discovery,
            &mut problems,
        );
        let subscribers =
            check::check_subscribers(registry, &chosen, &self.background, &mut problems);

        let store = match (store, problems.is_empty()) {
            (Some(store), true) => store,
            _ => {
                problems.sort();
                problems.dedup();
                return Err(Error::Config(problems));
            }
        };
        // Follow-ups may target sagas of other services: route every registered saga's commands
        // to their stream type even when the saga is not part of this flow.
        for record in registry
            .components()
            .filter(|c| c.kind == ComponentKind::Saga)
        {
            for route in registry.routes_of((record.type_id)()) {
                streams
                    .entry((route.message)())
                    .or_insert(Cow::Borrowed(record.state.map_or(record.name, |s| s.name)));
            }
        }
        let sealed = Arc::new(SealedStore::configured(
            store,
            self.key_store,
            self.key_cache,
        ));
        let store: Arc<dyn Store> = sealed.clone();
        let head = store.head().await?;
        let signals = Arc::new(Signals::new(head));
        let streams: CommandStreams = Arc::new(streams);
        let read = ReadSide {
            store: store.clone(),
            subscribers,
            streams: streams.clone(),
            signals: signals.clone(),
            background: Arc::new(tokio::sync::Notify::new()),
            recent: Recent::default(),
        };
        let write = WriteSide {
            store,
            sagas,
            streams,
            dispatchers: self.dispatchers,
            retry: self.retry,
            signals,
            drain_lock: tokio::sync::Mutex::new(()),
            drain_outbox: !self.keep_outbox,
            entities: EntityCache::new(self.entity_cache),
            stream_locks: StreamLocks::new(),
            in_flight: AtomicUsize::new(0),
            units: Default::default(),
            scheduling: Scheduling::new(self.clock, self.scheduler),
        };
        let flow = SourceFlow {
            inner: Arc::new(FlowInner {
                write,
                read: Arc::new(read),
                sealed,
            }),
        };
        refresh_stale_views(&flow.inner.read, rebuild_stale_views).await?;
        flow.catch_up().await?;
        flow.drain_outbox().await;
        flow.start_background();
        flow.start_scheduler();
        Ok(flow)
    }
}

/// Rebuilds the views whose models another version of their projection built, or names them
/// with the fix.
async fn refresh_stale_views(read: &ReadSide, rebuild: bool) -> Result<(), Error> {
    let stale = read.stale_views().await?;
    if stale.is_empty() {
        return Ok(());
    }
    if !rebuild {
        return Err(Error::Config(
            stale
                .iter()
                .map(|(view, stored)| {
                    format!(
                        "view {} is version {} but its stored models were built by version \
                         {stored}: rebuild it at start with \
                         SourceFlow::builder().rebuild_stale_views()",
                        view.name, view.version
                    )
                })
                .collect(),
        ));
    }
    for (view, stored) in stale {
        tracing::info!(
            target: "sourceflow::rebuild",
            view = view.name,
            from = stored,
            to = view.version,
            "rebuilding stale view"
        );
        let mut reported = 0u64;
        let applied = read
            .rebuild_subscriber(view, |p: Progress| {
                let percent = (p.position.0 * 100).checked_div(p.head.0).unwrap_or(100);
                if percent >= reported + 10 || p.position == p.head {
                    reported = percent;
                    tracing::info!(
                        target: "sourceflow::rebuild",
                        view = view.name,
                        position = p.position.0,
                        head = p.head.0,
                        applied = p.applied,
                        "{percent}%"
                    );
                }
            })
            .await?;
        tracing::info!(
            target: "sourceflow::rebuild",
            view = view.name,
            applied,
            version = view.version,
            "view rebuilt"
        );
    }
    Ok(())
}
