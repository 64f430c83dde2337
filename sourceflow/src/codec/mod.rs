//! Codecs: how a stored message, entity or view model is turned back into its Rust type, and
//! a typed value into its stored bytes, without knowing the type statically.
//!
//! Every `#[derive(Command)]`, `#[derive(Event)]`, `#[derive(Entity)]` and
//! `#[derive(ViewModel)]` submits a [`TypeRecord`] (its wire name, version and decode function)
//! with `inventory`; [`TypeIndex::global`] indexes them once. Every read path that turns stored
//! bytes into a value goes through this module.

pub mod personal;
pub mod state;
pub mod storable;
pub mod upcast;

use foldhash::HashMap;
use std::any::{Any, TypeId};
use std::sync::{Arc, OnceLock};

use crate::base::error::{Error, Location};
use crate::base::message::{Command, Entity, EntityId, Event, Message, RecordedEvent, ViewModel};
use crate::base::validate::Violations;

pub use upcast::UpcastRecord;

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
    /// The version written today: [`Message::VERSION`] for commands and events,
    /// [`Entity::VERSION`] for entities, 1 for view models.
    pub version: u32,
    /// Earlier wire names that resolve to this type.
    pub aliases: &'static [&'static str],
    /// The Rust type's `TypeId`.
    pub type_id: fn() -> TypeId,
    /// The Rust type's name, for error messages.
    pub rust_name: fn() -> &'static str,
    /// Decodes a JSON payload of the current version into the type.
    pub decode: fn(&[u8]) -> Result<ErasedMessage, serde_json::Error>,
    /// Decodes an upcast JSON value into the type.
    pub decode_value: fn(serde_json::Value) -> Result<ErasedMessage, serde_json::Error>,
    /// Runs the type's declared validation (messages only).
    pub validate: fn(&(dyn Any + Send + Sync), &mut Violations),
}

impl TypeRecord {
    /// The record of a command type.
    pub const fn command<C: Command>() -> Self {
        Self::message::<C>(TypeKind::Command)
    }

    /// The record of an event type.
    pub const fn event<E: Event>() -> Self {
        Self::message::<E>(TypeKind::Event)
    }

    const fn message<M: Message>(kind: TypeKind) -> Self {
        Self {
            kind,
            name: M::NAME,
            version: M::VERSION,
            aliases: M::ALIASES,
            type_id: type_id_of::<M>,
            rust_name: std::any::type_name::<M>,
            decode: decode_message::<M>,
            decode_value: decode_message_value::<M>,
            validate: validate_message::<M>,
        }
    }

    /// The record of an entity type.
    pub const fn entity<E: Entity>() -> Self {
        Self {
            kind: TypeKind::Entity,
            name: E::NAME,
            version: E::VERSION,
            aliases: E::ALIASES,
            type_id: type_id_of::<E>,
            rust_name: std::any::type_name::<E>,
            decode: decode_message::<E>,
            decode_value: decode_message_value::<E>,
            validate: validate_nothing,
        }
    }

    /// The record of a view model type.
    pub const fn view_model<M: ViewModel>() -> Self {
        Self {
            kind: TypeKind::ViewModel,
            name: M::NAME,
            version: 1,
            aliases: M::ALIASES,
            type_id: type_id_of::<M>,
            rust_name: std::any::type_name::<M>,
            decode: decode_message::<M>,
            decode_value: decode_message_value::<M>,
            validate: validate_nothing,
        }
    }
}

inventory::collect!(TypeRecord);

// The events sourceflow records itself when a stream is deleted or archived: registered like
// any event, so views can project on them and every reader decodes them.
inventory::submit! { TypeRecord::event::<crate::base::lifecycle::StreamDeleted>() }
inventory::submit! { TypeRecord::event::<crate::base::lifecycle::StreamArchived>() }

fn type_id_of<T: 'static>() -> TypeId {
    TypeId::of::<T>()
}

/// Reads stored JSON as `T`.
///
/// `serde_json::from_slice` checks each string it meets (every key and every text value) as
/// UTF-8 with a call of its own; here the whole payload is checked once, which is quick for
/// ASCII, and read as text, which skips those calls. Bytes that are not UTF-8 are read as bytes,
/// for serde_json's own error.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, serde_json::Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

fn decode_message<T>(bytes: &[u8]) -> Result<ErasedMessage, serde_json::Error>
where
    T: serde::de::DeserializeOwned + Send + Sync + 'static,
{
    from_json::<T>(bytes).map(|m| Arc::new(m) as ErasedMessage)
}

fn decode_message_value<T>(value: serde_json::Value) -> Result<ErasedMessage, serde_json::Error>
where
    T: serde::de::DeserializeOwned + Send + Sync + 'static,
{
    serde_json::from_value::<T>(value).map(|m| Arc::new(m) as ErasedMessage)
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
    /// The schema version stored with the state ([`Entity::VERSION`]; 1 for view models).
    pub version: u32,
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
        Self::of::<E>(E::NAME, E::VERSION)
    }

    /// The vtable of view model `M`.
    pub const fn view_model<M: ViewModel>() -> Self {
        Self::of::<M>(M::NAME, 1)
    }

    const fn of<T>(name: &'static str, version: u32) -> Self
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Default + Clone + Send + 'static,
    {
        Self {
            name,
            version,
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
    from_json::<T>(bytes).map(|s| Box::new(s) as ErasedState)
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

/// The registered types, indexed by wire name (and every alias) and by `TypeId`, with their
/// upcaster steps, built once.
#[derive(Debug)]
pub struct TypeIndex {
    by_name: HashMap<&'static str, Vec<TypeRecord>>,
    by_id: HashMap<TypeId, TypeRecord>,
    steps: HashMap<(TypeId, u32), Vec<&'static UpcastRecord>>,
}

impl TypeIndex {
    /// The types linked into this binary, indexed on first use.
    pub fn global() -> &'static TypeIndex {
        static GLOBAL: OnceLock<TypeIndex> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let mut index = TypeIndex {
                by_name: HashMap::default(),
                by_id: HashMap::default(),
                steps: HashMap::default(),
            };
            for record in inventory::iter::<TypeRecord> {
                index.by_name.entry(record.name).or_default().push(*record);
                for alias in record.aliases {
                    index.by_name.entry(alias).or_default().push(*record);
                }
                index.by_id.insert((record.type_id)(), *record);
            }
            for step in inventory::iter::<UpcastRecord> {
                index
                    .steps
                    .entry(((step.target)(), step.from))
                    .or_default()
                    .push(step);
                if let (Some(name), Some(record)) =
                    (step.stored_name, index.by_id.get(&(step.target)()).copied())
                {
                    let named = index.by_name.entry(name).or_default();
                    if !named.iter().any(|r| (r.type_id)() == (record.type_id)()) {
                        named.push(record);
                    }
                }
            }
            index
        })
    }

    /// `name` as the wire name it equals in this index (a type's name, an alias, or a name an
    /// upcaster step renames from), borrowed for the program's life.
    pub fn static_name(&self, name: &str) -> Option<&'static str> {
        self.by_name.get_key_value(name).map(|(name, _)| *name)
    }

    /// Every registered type this wire name resolves to: its own name, an alias, or the name
    /// an upcaster step renames from (more than one of a kind is a configuration error).
    pub fn named(&self, name: &str) -> &[TypeRecord] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    /// The type of `kind` a stored wire name resolves to.
    pub fn resolve(&self, kind: TypeKind, name: &str) -> Option<&TypeRecord> {
        self.named(name).iter().find(|r| r.kind == kind)
    }

    /// The record of a type, by `TypeId`.
    pub fn get(&self, type_id: TypeId) -> Option<&TypeRecord> {
        self.by_id.get(&type_id)
    }

    /// Every registered type.
    pub fn iter(&self) -> impl Iterator<Item = &TypeRecord> {
        self.by_id.values()
    }

    /// The step reading version `from` of a type (the first, if several are declared).
    pub fn step(&self, type_id: TypeId, from: u32) -> Option<&'static UpcastRecord> {
        self.steps
            .get(&(type_id, from))
            .and_then(|steps| steps.first().copied())
    }

    /// Every wire name that resolves to the type: its name, its aliases, and the names its
    /// upcaster steps rename from.
    pub fn names_of(&self, type_id: TypeId) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self
            .by_name
            .iter()
            .filter(|(_, records)| records.iter().any(|r| (r.type_id)() == type_id))
            .map(|(name, _)| *name)
            .collect();
        names.sort_unstable();
        names
    }
}

/// The command type a stored or received wire name resolves to.
pub(crate) fn command_record(name: &str) -> Option<&'static TypeRecord> {
    TypeIndex::global().resolve(TypeKind::Command, name)
}

impl TypeRecord {
    /// Decodes a stored or received payload of this type, written as `version` under
    /// `stored_name`: directly when it is today's version, through the upcaster steps when it
    /// is older.
    ///
    /// # Errors
    /// [`Error::Decode`] if the payload does not match, [`Error::NewerVersion`] if it was written
    /// by a newer version of the type, [`Error::Upcast`] if a step is missing or fails.
    pub fn decode_stored(
        &self,
        stored_name: &str,
        version: u32,
        payload: &[u8],
        at: &dyn Fn() -> Location,
    ) -> Result<ErasedMessage, Error> {
        let decode_error = |source| Error::Decode {
            name: stored_name.to_owned(),
            at: at(),
            source,
        };
        if version == self.version {
            return (self.decode)(payload).map_err(decode_error);
        }
        let value = self.upcast_stored(stored_name, version, payload, at)?;
        (self.decode_value)(value).map_err(decode_error)
    }

    /// A stored payload of this type, written as `version`, as the JSON value of today's
    /// version (for comparisons and tooling).
    ///
    /// # Errors
    /// As [`decode_stored`](Self::decode_stored), without decoding into the type.
    pub fn upcast_stored(
        &self,
        stored_name: &str,
        version: u32,
        payload: &[u8],
        at: &dyn Fn() -> Location,
    ) -> Result<serde_json::Value, Error> {
        if version > self.version {
            return Err(upcast::newer(self, stored_name, version, at()));
        }
        let value = from_json(payload).map_err(|source| Error::Decode {
            name: stored_name.to_owned(),
            at: at(),
            source,
        })?;
        upcast::to_current(self, stored_name, version, value, at)
    }
}

/// Decodes a stored view model.
pub(crate) fn decode_model<M: ViewModel>(id: &EntityId, bytes: &[u8]) -> Result<M, Error> {
    from_json(bytes).map_err(|source| Error::Decode {
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
    /// [`Error::UnknownMessage`] if the stored name is neither `E`'s nor one of its aliases,
    /// [`Error::Decode`] if the payload does not match `E`, [`Error::NewerVersion`] if it was
    /// written by a newer version of `E`, [`Error::Upcast`] if an upcaster step is missing or
    /// fails.
    pub fn decode<E: Event>(&self) -> Result<E, Error> {
        let name = &*self.envelope.name;
        let at = || self.location();
        if name == E::NAME && self.envelope.version == E::VERSION {
            return from_json(&self.payload).map_err(|source| Error::Decode {
                name: name.to_owned(),
                at: at(),
                source,
            });
        }
        let record = TypeIndex::global()
            .resolve(TypeKind::Event, name)
            .filter(|r| (r.type_id)() == TypeId::of::<E>())
            .ok_or_else(|| Error::UnknownMessage {
                name: name.to_owned(),
                at: at(),
            })?;
        let value = self.upcast_as(record)?;
        serde_json::from_value(value).map_err(|source| Error::Decode {
            name: name.to_owned(),
            at: at(),
            source,
        })
    }

    /// Decodes the payload as whichever registered event type its wire name resolves to,
    /// upcast to today's version.
    ///
    /// # Errors
    /// [`Error::UnknownMessage`] if no event type has the stored name, else as
    /// [`TypeRecord::decode_stored`].
    pub fn decode_erased(&self) -> Result<(&'static TypeRecord, ErasedMessage), Error> {
        let name = &*self.envelope.name;
        let record = TypeIndex::global()
            .resolve(TypeKind::Event, name)
            .ok_or_else(|| Error::UnknownMessage {
                name: name.to_owned(),
                at: self.location(),
            })?;
        Ok((record, self.decode_as(record)?))
    }

    /// Where the event is stored, for errors.
    pub(crate) fn location(&self) -> Location {
        Location::Stored {
            stream: self.envelope.stream.clone(),
            sequence: self.sequence,
        }
    }

    /// Decodes the payload as `record`'s type (the type its stored name resolves to), upcast
    /// from the stored version.
    pub(crate) fn decode_as(&self, record: &TypeRecord) -> Result<ErasedMessage, Error> {
        record.decode_stored(
            &self.envelope.name,
            self.envelope.version,
            &self.payload,
            &|| self.location(),
        )
    }

    /// The payload as the JSON of `record`'s type at today's version.
    pub(crate) fn upcast_as(&self, record: &TypeRecord) -> Result<serde_json::Value, Error> {
        record.upcast_stored(
            &self.envelope.name,
            self.envelope.version,
            &self.payload,
            &|| self.location(),
        )
    }

    /// The payload as a JSON value (for tooling: exports, inspection).
    ///
    /// # Errors
    /// [`Error::Decode`] if the stored bytes are not JSON.
    pub fn payload_json(&self) -> Result<serde_json::Value, Error> {
        from_json(&self.payload).map_err(|source| Error::Decode {
            name: self.envelope.name.to_string(),
            at: self.location(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Memo {
        text: String,
        n: i64,
    }

    /// Text reads as serde_json reads the bytes, escapes and non-ASCII included, and bytes
    /// that are not UTF-8 fail with serde_json's own error, not a panic or a lossy read.
    #[test]
    fn stored_json_reads_as_serde_json_reads_the_bytes() {
        for json in [
            r#"{"text":"plain","n":1}"#,
            r#"{"n":-2,"text":"caf\u00e9 \"quoted\" \ud83d\ude00"}"#,
            "{\"text\":\"Grüße, 世界\",\"n\":3}",
        ] {
            let expected: Memo = serde_json::from_slice(json.as_bytes()).unwrap();
            assert_eq!(
                from_json::<Memo>(json.as_bytes()).unwrap(),
                expected,
                "{json}"
            );
        }
        let not_utf8 = b"{\"text\":\"\xff\",\"n\":1}";
        let ours = from_json::<Memo>(not_utf8).unwrap_err();
        let theirs = serde_json::from_slice::<Memo>(not_utf8).unwrap_err();
        assert_eq!(ours.to_string(), theirs.to_string());
        let not_json = br#"{"text":"x","n":}"#;
        assert_eq!(
            from_json::<Memo>(not_json).unwrap_err().to_string(),
            serde_json::from_slice::<Memo>(not_json)
                .unwrap_err()
                .to_string()
        );
    }
}
