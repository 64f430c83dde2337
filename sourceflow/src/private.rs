//! Support for macro-generated code. Not public API: names here change without notice.

use std::any::{Any, TypeId};
use std::marker::PhantomData;
use std::sync::Arc;

pub use futures_util::future::BoxFuture;
pub use inventory;

pub use crate::codec::{ErasedComponent, StateVtable, TypeKind, TypeRecord, UpcastRecord};
pub use crate::routes::{ApplierRecord, ComponentKind, ComponentRecord, RouteFn, RouteRecord};
/// The JSON value upcasters work on.
pub type JsonValue = serde_json::Value;

use crate::base::error::{DomainError, Error};
use crate::base::message::{Command, Entity, EntityId, Event, Message, ViewModel};
use crate::base::validate::{Validate, Violations};
use crate::context::view::ViewContext;

/// `TypeId::of::<T>` as a `fn` pointer for static records.
pub fn type_id_of<T: 'static>() -> TypeId {
    TypeId::of::<T>()
}

/// The wire name of a message type, as a `fn` pointer for static records.
pub fn message_name<M: Message>() -> &'static str {
    M::NAME
}

// The record builders below carry the trait bounds that check the user's types. The macros
// call them with the user's type tokens as the span, so a wrong type fails once, on the
// user's own token, with the trait's `on_unimplemented` message ("`Deposit` is not an event").

/// The wire name of a `#[handles]` argument; the bound checks that it is a command.
pub const fn command_name<C: Command>() -> fn() -> &'static str {
    message_name::<C>
}

/// The wire name of a `#[projects_on]` / `#[subscribes]` argument; the bound checks that it is
/// an event.
pub const fn event_name<E: Event>() -> fn() -> &'static str {
    message_name::<E>
}

/// The state of a saga or aggregate; the bound checks that `entity = ..` names an entity.
pub const fn entity_state<E: Entity>() -> StateVtable {
    StateVtable::entity::<E>()
}

/// The state of a view; the bound checks that `model = ..` names a view model.
pub const fn view_model_state<M: ViewModel>() -> StateVtable {
    StateVtable::view_model::<M>()
}

/// Compile-time check that a component can be shared between tasks.
pub fn assert_component<T: Send + Sync + 'static>() {}

/// Compile-time check that a handler's `&mut` argument is the component's declared state
/// (`entity = ..` / `model = ..`): the runtime creates, loads and saves the declared type.
pub fn assert_same_state<Declared, Found: SameState<Declared>>() {}

/// Implemented only for `T: SameState<T>`; see [`assert_same_state`].
#[diagnostic::on_unimplemented(
    message = "this handler takes `&mut {Self}`, but its component's state is `{Declared}`",
    label = "expected `{Declared}` here",
    note = "the runtime loads and saves the type named in `#[saga(entity = ..)]`, \
            `#[aggregate(entity = ..)]` or `#[view(model = ..)]`; take `&mut {Declared}`, or \
            change the attribute"
)]
pub trait SameState<Declared> {}

impl<T> SameState<T> for T {}

/// Runs a message's `Validate` impl (for `#[command(validate)]` without a path).
pub fn validate_with_impl<M: Validate>(message: &M, violations: &mut Violations) {
    message.validate(violations);
}

/// Downcasts a component, message or state handed to a generated route function.
///
/// # Errors
/// [`Error::Config`] if the runtime handed over a different type (a registry mix-up).
pub fn downcast<T: 'static>(value: &(dyn Any + Send + Sync)) -> Result<&T, Error> {
    value.downcast_ref::<T>().ok_or_else(|| mismatch::<T>())
}

/// Downcasts the mutable entity state handed to a saga route function.
///
/// # Errors
/// [`Error::Config`] if the state is missing or of another type.
pub fn downcast_state<T: 'static>(value: Option<&mut (dyn Any + Send)>) -> Result<&mut T, Error> {
    value
        .and_then(|v| v.downcast_mut::<T>())
        .ok_or_else(|| mismatch::<T>())
}

fn mismatch<T>() -> Error {
    Error::Config(vec![format!(
        "route called with a value that is not a {}",
        std::any::type_name::<T>()
    )])
}

/// What a handler method may return: `()`, `Result<(), E>` with `E: Into<DomainError>`, or
/// `Result<(), sourceflow::Error>`.
#[diagnostic::on_unimplemented(
    message = "a handler cannot return `{Self}`",
    label = "handlers return `()` or `Result<(), E>` where `E: Into<DomainError>`",
    note = "return `Result<(), DomainError>` to reject a command; for another error type, \
            implement `From<YourError> for DomainError`"
)]
pub trait IntoHandlerResult {
    /// Normalises the method's return value.
    fn into_handler_result(self) -> Result<(), Error>;
}

impl IntoHandlerResult for () {
    fn into_handler_result(self) -> Result<(), Error> {
        Ok(())
    }
}

/// Projections that load models with `?` return the runtime's own error unchanged.
impl IntoHandlerResult for Result<(), Error> {
    fn into_handler_result(self) -> Result<(), Error> {
        self
    }
}

impl<E: Into<DomainError>> IntoHandlerResult for Result<(), E> {
    fn into_handler_result(self) -> Result<(), Error> {
        self.map_err(|e| Error::Rejected(e.into()))
    }
}

/// The key a `#[projects_on(id = field)]` projection uses: the field's value as an [`EntityId`].
pub fn key_of<K: Clone + Into<EntityId>>(field: &K) -> EntityId {
    field.clone().into()
}

/// The view model a single-model projection changes in place (`M::default()` if there is
/// none yet); written with the view's position at the end of the batch.
pub async fn model_mut<'a, M: ViewModel>(
    cx: &'a mut ViewContext,
    id: &EntityId,
) -> Result<&'a mut M, Error> {
    cx.model_mut::<M>(id).await
}

/// Probe used to build a component with `Default` when it has one (autoref specialisation):
/// `(&&Construct::<T>::new()).construct()`.
pub struct Construct<T>(PhantomData<fn() -> T>);

impl<T> Construct<T> {
    /// A probe for `T`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for Construct<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Picked when `T: Default`: discovery builds the component.
pub trait ConstructDefault {
    /// An instance built with `Default`.
    fn construct(&self) -> Option<ErasedComponent>;
}

impl<T: Default + Send + Sync + 'static> ConstructDefault for &Construct<T> {
    fn construct(&self) -> Option<ErasedComponent> {
        Some(Arc::new(T::default()))
    }
}

/// Picked otherwise: the component must be registered by value.
pub trait ConstructNone {
    /// `None`: no way to build the component.
    fn construct(&self) -> Option<ErasedComponent>;
}

impl<T> ConstructNone for Construct<T> {
    fn construct(&self) -> Option<ErasedComponent> {
        None
    }
}

/// Runs an upcaster written on the JSON value (`fn(&mut serde_json::Value) -> Result<(), E>`).
pub fn json_step<E: std::fmt::Display>(
    mut value: serde_json::Value,
    step: impl FnOnce(&mut serde_json::Value) -> Result<(), E>,
) -> Result<serde_json::Value, String> {
    step(&mut value).map_err(|e| e.to_string())?;
    Ok(value)
}

/// Runs a typed upcaster (`fn(Old) -> Result<New, E>`): the stored value is decoded as the old
/// type, and the new value encoded back to JSON for the next step.
pub fn typed_step<Old, New, E>(
    value: serde_json::Value,
    step: impl FnOnce(Old) -> Result<New, E>,
) -> Result<serde_json::Value, String>
where
    Old: serde::de::DeserializeOwned,
    New: serde::Serialize,
    E: std::fmt::Display,
{
    let old: Old = serde_json::from_value(value).map_err(|e| {
        format!(
            "the stored value is not a {}: {e}",
            std::any::type_name::<Old>()
        )
    })?;
    let new = step(old).map_err(|e| e.to_string())?;
    serde_json::to_value(new).map_err(|e| e.to_string())
}
