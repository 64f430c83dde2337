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

/// The registered type of `kind` with wire name `name`, if any.
pub fn find(kind: TypeKind, name: &str) -> Option<RegisteredType> {
    TypeIndex::global()
        .named(name)
        .iter()
        .find(|r| r.kind == kind)
        .map(|r| RegisteredType {
            kind: r.kind,
            name: r.name,
            version: r.version,
            rust_name: (r.rust_name)(),
        })
}

/// Checks that `payload` decodes as the type of `kind` registered under `name`.
///
/// # Errors
/// [`Error::UnknownMessage`] if no such type is registered, [`Error::Decode`] if the payload
/// does not match it.
pub fn check_payload(kind: TypeKind, name: &str, payload: &[u8]) -> Result<(), Error> {
    let record = TypeIndex::global()
        .named(name)
        .iter()
        .find(|r| r.kind == kind)
        .ok_or_else(|| Error::UnknownMessage {
            name: name.to_owned(),
            at: Location::Detached,
        })?;
    (record.decode)(payload)
        .map(drop)
        .map_err(|source| Error::Decode {
            name: name.to_owned(),
            at: Location::Detached,
            source,
        })
}
