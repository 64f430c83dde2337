//! The link-time registries the macros fill, and the routing table built from them.
//!
//! Every `#[derive(Command)]`, `#[derive(Event)]`, `#[derive(Entity)]` and
//! `#[derive(ViewModel)]` submits a [`TypeRecord`]; every `#[saga]`, `#[view]` and
//! `#[aggregate]` submits a [`ComponentRecord`] and one [`RouteRecord`] per handler method.
//! The records are plain `'static` data and `fn` pointers, collected with `inventory`.
//! [`Registry::global`] turns them into hash maps once; dispatch is then a `TypeId` lookup and a
//! direct call.
//!
//! # The linker caveat
//! `inventory` relies on the linker keeping the records of every crate the binary links. A type
//! defined in a crate that nothing in the binary references may not be linked, so its records are
//! missing. If a saga seems unknown at runtime, reference its crate (or register the component
//! explicitly with `SourceFlow::builder().saga(..)`, which also registers its routes).

use foldhash::HashMap;
use std::any::{Any, TypeId};
use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;

use crate::aggregate::ReactionContext;
use crate::error::Error;
use crate::message::{Command, Entity, Event, EventMeta, Message, ViewModel};
use crate::saga::SagaContext;
use crate::validate::Violations;
use crate::view::ViewContext;

/// A decoded message shared between its consumers.
pub type ErasedMessage = Arc<dyn Any + Send + Sync>;
/// A type-erased component instance (a saga, view or aggregate).
pub type ErasedComponent = Arc<dyn Any + Send + Sync>;
/// A type-erased entity or view model state.
pub type ErasedState = Box<dyn Any + Send>;

/// What kind of type a [`TypeRecord`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TypeKind {
    /// A `#[derive(Command)]` type.
    Command,
    /// A `#[derive(Event)]` type.
    Event,
    /// A `#[derive(Entity)]` type.
    Entity,
    /// A `#[derive(ViewModel)]` type.
    ViewModel,
}

/// Codec and identity of one message, entity or view model type.
#[derive(Clone, Copy, Debug)]
pub struct TypeRecord {
    /// Command, event, entity or view model.
    pub kind: TypeKind,
    /// The stable wire name.
    pub name: &'static str,
    /// Payload version (events), 1 otherwise.
    pub version: u32,
    /// The Rust type's `TypeId`.
    pub type_id: fn() -> TypeId,
    /// The Rust type's name, for error messages.
    pub rust_name: fn() -> &'static str,
    /// Decodes a JSON payload into the type.
    pub decode: fn(&[u8]) -> Result<ErasedMessage, serde_json::Error>,
    /// Runs the type's declared validation (messages only).
    pub validate: fn(&(dyn Any + Send + Sync), &mut Violations),
}

impl TypeRecord {
    /// The record of a command type.
    pub const fn command<C: Command>() -> Self {
        Self::message::<C>(TypeKind::Command, 1)
    }

    /// The record of an event type.
    pub const fn event<E: Event>() -> Self {
        Self::message::<E>(TypeKind::Event, E::VERSION)
    }

    const fn message<M: Message>(kind: TypeKind, version: u32) -> Self {
        Self {
            kind,
            name: M::NAME,
            version,
            type_id: type_id_of::<M>,
            rust_name: std::any::type_name::<M>,
            decode: decode_message::<M>,
            validate: validate_message::<M>,
        }
    }

    /// The record of an entity type.
    pub const fn entity<E: Entity>() -> Self {
        Self {
            kind: TypeKind::Entity,
            name: E::NAME,
            version: 1,
            type_id: type_id_of::<E>,
            rust_name: std::any::type_name::<E>,
            decode: decode_message::<E>,
            validate: validate_nothing,
        }
    }

    /// The record of a view model type.
    pub const fn view_model<M: ViewModel>() -> Self {
        Self {
            kind: TypeKind::ViewModel,
            name: M::NAME,
            version: 1,
            type_id: type_id_of::<M>,
            rust_name: std::any::type_name::<M>,
            decode: decode_message::<M>,
            validate: validate_nothing,
        }
    }
}

inventory::collect!(TypeRecord);

fn type_id_of<T: 'static>() -> TypeId {
    TypeId::of::<T>()
}

fn decode_message<T>(bytes: &[u8]) -> Result<ErasedMessage, serde_json::Error>
where
    T: serde::de::DeserializeOwned + Send + Sync + 'static,
{
    serde_json::from_slice::<T>(bytes).map(|m| Arc::new(m) as ErasedMessage)
}

fn validate_message<M: Message>(message: &(dyn Any + Send + Sync), violations: &mut Violations) {
    if let Some(message) = message.downcast_ref::<M>() {
        message.validate_message(violations);
    }
}

fn validate_nothing(_: &(dyn Any + Send + Sync), _: &mut Violations) {}

/// How the runtime creates, loads and saves one state type (entity or view model) without
/// knowing it statically.
#[derive(Clone, Copy, Debug)]
pub struct StateVtable {
    /// The type's stable name.
    pub name: &'static str,
    /// The Rust type's `TypeId`.
    pub type_id: fn() -> TypeId,
    /// `T::default()`.
    pub default: fn() -> ErasedState,
    /// JSON decode.
    pub decode: fn(&[u8]) -> Result<ErasedState, serde_json::Error>,
    /// JSON encode.
    pub encode: fn(&(dyn Any + Send)) -> Result<Vec<u8>, serde_json::Error>,
    /// `T::clone()`.
    pub clone: fn(&(dyn Any + Send)) -> ErasedState,
    /// Structural equality through JSON (used by `verify`).
    pub to_json: fn(&(dyn Any + Send)) -> Result<serde_json::Value, serde_json::Error>,
}

impl StateVtable {
    /// The vtable of entity `E`.
    pub const fn entity<E: Entity>() -> Self {
        Self::of::<E>(E::NAME)
    }

    /// The vtable of view model `M`.
    pub const fn view_model<M: ViewModel>() -> Self {
        Self::of::<M>(M::NAME)
    }

    const fn of<T>(name: &'static str) -> Self
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Default + Clone + Send + 'static,
    {
        Self {
            name,
            type_id: type_id_of::<T>,
            default: default_state::<T>,
            decode: decode_state::<T>,
            encode: encode_state::<T>,
            clone: clone_state::<T>,
            to_json: state_to_json::<T>,
        }
    }
}

fn default_state<T: Default + Send + 'static>() -> ErasedState {
    Box::new(T::default())
}

fn decode_state<T>(bytes: &[u8]) -> Result<ErasedState, serde_json::Error>
where
    T: serde::de::DeserializeOwned + Send + 'static,
{
    serde_json::from_slice::<T>(bytes).map(|s| Box::new(s) as ErasedState)
}

fn encode_state<T: serde::Serialize + 'static>(
    state: &(dyn Any + Send),
) -> Result<Vec<u8>, serde_json::Error> {
    match state.downcast_ref::<T>() {
        Some(state) => serde_json::to_vec(state),
        None => Err(serde::ser::Error::custom(format!(
            "state is not a {}",
            std::any::type_name::<T>()
        ))),
    }
}

fn state_to_json<T: serde::Serialize + 'static>(
    state: &(dyn Any + Send),
) -> Result<serde_json::Value, serde_json::Error> {
    match state.downcast_ref::<T>() {
        Some(state) => serde_json::to_value(state),
        None => Err(serde::ser::Error::custom(format!(
            "state is not a {}",
            std::any::type_name::<T>()
        ))),
    }
}

fn clone_state<T: Clone + Default + Send + 'static>(state: &(dyn Any + Send)) -> ErasedState {
    match state.downcast_ref::<T>() {
        Some(state) => Box::new(state.clone()),
        None => Box::new(T::default()),
    }
}

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
    types_by_name: HashMap<&'static str, Vec<TypeRecord>>,
    types_by_id: HashMap<TypeId, TypeRecord>,
    components: HashMap<TypeId, ComponentRecord>,
    routes: HashMap<TypeId, Vec<RouteRecord>>,
}

impl Registry {
    /// The registry of everything linked into this binary, built on first use.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let mut registry = Registry {
                types_by_name: HashMap::default(),
                types_by_id: HashMap::default(),
                components: HashMap::default(),
                routes: HashMap::default(),
            };
            for record in inventory::iter::<TypeRecord> {
                registry
                    .types_by_name
                    .entry(record.name)
                    .or_default()
                    .push(*record);
                registry.types_by_id.insert((record.type_id)(), *record);
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

    /// Every registered type with this wire name (more than one is a configuration error).
    pub fn types_named(&self, name: &str) -> &[TypeRecord] {
        self.types_by_name.get(name).map_or(&[], Vec::as_slice)
    }

    /// The record of a type, by `TypeId`.
    pub fn type_record(&self, type_id: TypeId) -> Option<&TypeRecord> {
        self.types_by_id.get(&type_id)
    }

    /// Every registered type.
    pub fn types(&self) -> impl Iterator<Item = &TypeRecord> {
        self.types_by_id.values()
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
