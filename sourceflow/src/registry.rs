//! What the macros registered at link time, read-only, for tooling (exports, imports,
//! inspectors): every command, event, entity and view model type with its wire name and
//! version, and a check that a stored payload decodes as its registered type.
//!
//! Every `#[derive(Command)]`, `#[derive(Event)]`, `#[derive(Entity)]` and
//! `#[derive(ViewModel)]` submits a record with `inventory`; every `#[saga]`, `#[view]` and
//! `#[aggregate]` submits its routes. `SourceFlow::builder().build()` checks them all at start.
//!
//! # The linker caveat
//! `inventory` relies on the linker keeping the records of every crate the binary links. A type
//! defined in a crate that nothing in the binary references may not be linked, so its records are
//! missing. If a saga seems unknown at runtime, reference its crate (or register the component
//! explicitly with `SourceFlow::builder().saga(..)`, which also registers its routes).

use crate::base::error::{Error, Location};
use crate::codec::TypeIndex;

pub use crate::codec::TypeKind;

/// One registered type, as tooling sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisteredType {
    /// Command, event, entity or view model.
    pub kind: TypeKind,
    /// The stable wire name stored with every row.
    pub name: &'static str,
    /// The payload version written today.
    pub version: u32,
    /// The Rust type's path, for messages.
    pub rust_name: &'static str,
}

/// Every type linked into this binary, sorted by wire name (then kind).
pub fn registered_types() -> Vec<RegisteredType> {
    let mut types: Vec<RegisteredType> = TypeIndex::global()
        .iter()
        .map(|r| RegisteredType {
            kind: r.kind,
            name: r.name,
            version: r.version,
            rust_name: (r.rust_name)(),
        })
        .collect();
    types.sort_by(|a, b| (a.name, a.rust_name).cmp(&(b.name, b.rust_name)));
    types
}

/// The registered type of `kind` with wire name `name` (or whose alias it is), if any.
pub fn find(kind: TypeKind, name: &str) -> Option<RegisteredType> {
    TypeIndex::global()
        .resolve(kind, name)
        .map(|r| RegisteredType {
            kind: r.kind,
            name: r.name,
            version: r.version,
            rust_name: (r.rust_name)(),
        })
}

/// `name` as a registered wire name (a type's name, an alias, or a name an upcaster step renames
/// from), borrowed for the program's life: a store reading many rows can give each envelope
/// this `Cow::Borrowed` name instead of a copy of the row's text. `None` for a name nothing
/// linked into this binary registers.
pub fn static_name(name: &str) -> Option<&'static str> {
    TypeIndex::global().static_name(name)
}

/// Checks that `payload` decodes as the type of `kind` registered under `name` (or an alias),
/// as today's version of it.
///
/// # Errors
/// As [`check_stored`].
pub fn check_payload(kind: TypeKind, name: &str, payload: &[u8]) -> Result<(), Error> {
    let version = TypeIndex::global()
        .resolve(kind, name)
        .map_or(1, |r| r.version);
    check_stored(kind, name, version, payload)
}

/// Checks that `payload`, stored as `version` of the type of `kind` registered under `name`
/// (or an alias), decodes as that type once upcast to today's version: what an import checks
/// before it writes rows exported by an earlier build.
///
/// # Errors
/// [`Error::UnknownMessage`] if no such type is registered, [`Error::Decode`] if the payload
/// does not match it, [`Error::NewerVersion`] if it was written by a newer version,
/// [`Error::Upcast`] if an upcaster step is missing or fails.
pub fn check_stored(kind: TypeKind, name: &str, version: u32, payload: &[u8]) -> Result<(), Error> {
    let record = TypeIndex::global()
        .resolve(kind, name)
        .ok_or_else(|| Error::UnknownMessage {
            name: name.to_owned(),
            at: Location::Detached,
        })?;
    match kind {
        TypeKind::Command | TypeKind::Event => record
            .decode_stored(name, version, payload, &|| Location::Detached)
            .map(drop),
        TypeKind::Entity | TypeKind::ViewModel => {
            (record.decode)(payload)
                .map(drop)
                .map_err(|source| Error::Decode {
                    name: name.to_owned(),
                    at: Location::Detached,
                    source,
                })
        }
    }
}

/// A stored payload of a command or event, stored as `version` under `name` (or an alias), as
/// the JSON of today's version of its type.
///
/// # Errors
/// As [`check_stored`].
pub fn upcast(
    kind: TypeKind,
    name: &str,
    version: u32,
    payload: &[u8],
) -> Result<serde_json::Value, Error> {
    let record = TypeIndex::global()
        .resolve(kind, name)
        .ok_or_else(|| Error::UnknownMessage {
            name: name.to_owned(),
            at: Location::Detached,
        })?;
    record.upcast_stored(name, version, payload, &|| Location::Detached)
}
