//! The routing table: every `#[saga]`, `#[view]` and `#[aggregate]` submits a
//! [`ComponentRecord`] and one [`RouteRecord`] per handler method, as plain `'static` data and
//! `fn` pointers collected with `inventory`. [`Registry::global`] indexes them once; dispatch is
//! then a `TypeId` lookup and a direct call.

use foldhash::HashMap;
use std::any::{Any, TypeId};
use std::sync::OnceLock;

use futures_util::future::BoxFuture;

use crate::base::error::Error;
use crate::base::message::EventMeta;
use crate::codec::{ErasedComponent, StateVtable, TypeIndex, TypeRecord};
use crate::context::{ReactionContext, SagaContext, ViewContext};

/// What kind of component a [`ComponentRecord`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ComponentKind {
    /// A `#[saga]` impl: handles commands.
    Saga,
    /// A `#[view]` impl: projects events onto view models.
    View,
    /// An `#[aggregate]` impl: reacts to events.
    Aggregate,
}

/// One `#[saga]`, `#[view]` or `#[aggregate]` type.
#[derive(Clone, Copy, Debug)]
pub struct ComponentRecord {
    /// Saga, view or aggregate.
    pub kind: ComponentKind,
    /// The component's name: its type name unless `name = ".."` was given. Used as the stream
    /// type of entity-less sagas and as the position key of views and aggregates.
    pub name: &'static str,
    /// The component type's `TypeId`.
    pub type_id: fn() -> TypeId,
    /// The entity (sagas, aggregates) or view model (views) it works on.
    pub state: Option<StateVtable>,
    /// An instance built with `Default`, if the type implements it (used for discovery).
    pub construct: fn() -> Option<ErasedComponent>,
    /// Views only: project in the background instead of before `send` returns.
    pub background: bool,
    /// Views only: the version of the view's projection (`#[view(version = N)]`, default 1).
    /// Models stored by another version are stale: the view is rebuilt.
    pub version: u32,
}

inventory::collect!(ComponentRecord);

/// Handles one command: `(saga, entity (None for entity-less sagas), command, context)`.
pub type HandleFn = for<'a> fn(
    &'a (dyn Any + Send + Sync),
    Option<&'a mut (dyn Any + Send)>,
    &'a (dyn Any + Send + Sync),
    &'a mut SagaContext,
) -> BoxFuture<'a, Result<(), Error>>;

/// Projects one event: `(view, event, metadata, context)`.
pub type ProjectFn = for<'a> fn(
    &'a (dyn Any + Send + Sync),
    &'a (dyn Any + Send + Sync),
    &'a EventMeta,
    &'a mut ViewContext,
) -> BoxFuture<'a, Result<(), Error>>;

/// Reacts to one event: `(aggregate, event, context)`.
pub type ReactFn = for<'a> fn(
    &'a (dyn Any + Send + Sync),
    &'a (dyn Any + Send + Sync),
    &'a mut ReactionContext,
) -> BoxFuture<'a, Result<(), Error>>;

/// The handler a route calls.
#[derive(Clone, Copy, Debug)]
pub enum RouteFn {
    /// A `#[handles]` method.
    Handle(HandleFn),
    /// A `#[projects_on]` method.
    Project(ProjectFn),
    /// A `#[subscribes]` method.
    React(ReactFn),
}

/// One handler method: the message type it takes and the monomorphised function that calls it.
#[derive(Clone, Copy, Debug)]
pub struct RouteRecord {
    /// The component type's `TypeId`.
    pub component: fn() -> TypeId,
    /// The message type's `TypeId`.
    pub message: fn() -> TypeId,
    /// The message's wire name.
    pub message_name: fn() -> &'static str,
    /// The method's name, for diagnostics and reaction ids.
    pub method: &'static str,
    /// The function that downcasts and calls the method.
    pub call: RouteFn,
}

inventory::collect!(RouteRecord);

/// Folds one event into an entity's state: `(state, event, metadata)`.
pub type ApplyFn =
    fn(&mut (dyn Any + Send), &(dyn Any + Send + Sync), &EventMeta) -> Result<(), Error>;

/// One method of an entity's `#[applies]` block: the event it folds.
#[derive(Clone, Copy, Debug)]
pub struct ApplierRecord {
    /// The entity type's `TypeId`.
    pub entity: fn() -> TypeId,
    /// The event type's `TypeId`.
    pub event: fn() -> TypeId,
    /// The event's wire name.
    pub event_name: fn() -> &'static str,
    /// The method's name, for diagnostics.
    pub method: &'static str,
    /// The function that downcasts and calls the method.
    pub apply: ApplyFn,
}

inventory::collect!(ApplierRecord);

/// The registries, indexed once.
#[derive(Debug)]
pub struct Registry {
    components: HashMap<TypeId, ComponentRecord>,
    routes: HashMap<TypeId, Vec<RouteRecord>>,
    appliers: HashMap<TypeId, Vec<ApplierRecord>>,
}

impl Registry {
    /// The registry of everything linked into this binary, built on first use.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let mut registry = Registry {
                components: HashMap::default(),
                routes: HashMap::default(),
                appliers: HashMap::default(),
            };
            for record in inventory::iter::<ApplierRecord> {
                registry
                    .appliers
                    .entry((record.entity)())
                    .or_default()
                    .push(*record);
            }
            for record in inventory::iter::<ComponentRecord> {
                registry.components.insert((record.type_id)(), *record);
            }
            for record in inventory::iter::<RouteRecord> {
                registry
                    .routes
                    .entry((record.component)())
                    .or_default()
                    .push(*record);
            }
            registry
        })
    }

    /// The record of a type, by `TypeId`.
    pub fn type_record(&self, type_id: TypeId) -> Option<&TypeRecord> {
        TypeIndex::global().get(type_id)
    }

    /// Every registered type.
    pub fn types(&self) -> impl Iterator<Item = &TypeRecord> {
        TypeIndex::global().iter()
    }

    /// The record of a component, by `TypeId`.
    pub fn component(&self, type_id: TypeId) -> Option<&ComponentRecord> {
        self.components.get(&type_id)
    }

    /// Every registered component.
    pub fn components(&self) -> impl Iterator<Item = &ComponentRecord> {
        self.components.values()
    }

    /// The `#[applies]` methods of an entity type (empty: it replays its commands).
    pub fn appliers_of(&self, entity: TypeId) -> &[ApplierRecord] {
        self.appliers.get(&entity).map_or(&[], Vec::as_slice)
    }

    /// The handler methods of a component.
    pub fn routes_of(&self, component: TypeId) -> &[RouteRecord] {
        self.routes.get(&component).map_or(&[], Vec::as_slice)
    }
}
