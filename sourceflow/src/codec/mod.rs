//! Codecs: how a stored message, entity or view model is turned back into its Rust type, and
//! a typed value into its stored bytes, without knowing the type statically.
//!
//! Every `#[derive(Command)]`, `#[derive(Event)]`, `#[derive(Entity)]` and
//! `#[derive(ViewModel)]` submits a [`TypeRecord`] (its wire name, version and decode function)
//! with `inventory`; [`TypeIndex::global`] indexes them once. Every read path that turns stored
//! bytes into a value goes through this module.

pub mod storable;

use foldhash::HashMap;
use std::any::{Any, TypeId};
use std::sync::{Arc, OnceLock};

use crate::base::error::{Error, Location};
use crate::base::message::{Command, Entity, EntityId, Event, Message, RecordedEvent, ViewModel};
use crate::base::validate::Violations;

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
    /// JSON encode, refusing what would not read back identically.
    pub encode: fn(&(dyn Any + Send)) -> Result<Vec<u8>, storable::EncodeError>,
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
) -> Result<Vec<u8>, storable::EncodeError> {
    match state.downcast_ref::<T>() {
        Some(state) => storable::encode(state),
        None => Err(storable::EncodeError::Serde(serde::ser::Error::custom(
            format!("state is not a {}", std::any::type_name::<T>()),
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

/// The registered types, indexed by wire name and by `TypeId`, built once.
#[derive(Debug)]
pub struct TypeIndex {
    by_name: HashMap<&'static str, Vec<TypeRecord>>,
    by_id: HashMap<TypeId, TypeRecord>,
}

impl TypeIndex {
    /// The types linked into this binary, indexed on first use.
    pub fn global() -> &'static TypeIndex {
        static GLOBAL: OnceLock<TypeIndex> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let mut index = TypeIndex {
                by_name: HashMap::default(),
                by_id: HashMap::default(),
            };
            for record in inventory::iter::<TypeRecord> {
                index.by_name.entry(record.name).or_default().push(*record);
                index.by_id.insert((record.type_id)(), *record);
            }
            index
        })
    }

    /// Every registered type with this wire name (more than one is a configuration error).
    pub fn named(&self, name: &str) -> &[TypeRecord] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    /// The record of a type, by `TypeId`.
    pub fn get(&self, type_id: TypeId) -> Option<&TypeRecord> {
        self.by_id.get(&type_id)
    }

    /// Every registered type.
    pub fn iter(&self) -> impl Iterator<Item = &TypeRecord> {
        self.by_id.values()
    }
}

/// The command type registered under a wire name.
pub(crate) fn command_record(name: &str) -> Option<&'static TypeRecord> {
    TypeIndex::global()
        .named(name)
        .iter()
        .find(|r| r.kind == TypeKind::Command)
}

/// Decodes a stored view model.
pub(crate) fn decode_model<M: ViewModel>(id: &EntityId, bytes: &[u8]) -> Result<M, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::Decode {
        name: M::NAME.to_owned(),
        at: Location::ViewModel {
            model_type: M::NAME.to_owned(),
            id: id.clone(),
        },
        source,
    })
}

impl RecordedEvent {
    /// Decodes the payload as `E`.
    ///
    /// # Errors
    /// [`Error::UnknownMessage`] if the stored name is not `E`'s,
    /// [`Error::Decode`] if the payload does not match `E`.
    pub fn decode<E: Event>(&self) -> Result<E, Error> {
        if self.envelope.name != E::NAME {
            return Err(Error::UnknownMessage {
                name: self.envelope.name.to_string(),
                at: self.location(),
            });
        }
        serde_json::from_slice(&self.payload).map_err(|source| Error::Decode {
            name: self.envelope.name.to_string(),
            at: self.location(),
            source,
        })
    }

    fn location(&self) -> Location {
        Location::Stored {
            stream: self.envelope.stream.clone(),
            sequence: self.sequence,
        }
    }

    /// The payload as a JSON value (for tooling: exports, inspection).
    ///
    /// # Errors
    /// [`Error::Decode`] if the stored bytes are not JSON.
    pub fn payload_json(&self) -> Result<serde_json::Value, Error> {
        serde_json::from_slice(&self.payload).map_err(|source| Error::Decode {
            name: self.envelope.name.to_string(),
            at: self.location(),
            source,
        })
    }
}
