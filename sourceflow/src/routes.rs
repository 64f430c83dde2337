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

/// The registries, indexed once.
#[derive(Debug)]
pub struct Registry {
    components: HashMap<TypeId, ComponentRecord>,
    routes: HashMap<TypeId, Vec<RouteRecord>>,
}

impl Registry {
    /// The registry of everything linked into this binary, built on first use.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let mut registry = Registry {
                components: HashMap::default(),
                routes: HashMap::default(),
            };
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

    /// The handler methods of a component.
    pub fn routes_of(&self, component: TypeId) -> &[RouteRecord] {
        self.routes.get(&component).map_or(&[], Vec::as_slice)
    }
}
