//! Upcasters: the steps that bring a stored payload from one version of its type to the next.
//!
//! A step is declared with `#[upcast(Type, from = n)]` on a function and submitted with
//! `inventory` as an [`UpcastRecord`]; [`TypeIndex`] indexes the steps by
//! (type, version). Reading a row of version `v` of a type at version `n` runs the steps
//! `v -> v+1 -> .. -> n` on the JSON value, then decodes the value as today's type. A row of the
//! current version is decoded directly from its bytes, without going through a JSON value.

use std::any::TypeId;

use crate::base::error::{Error, Location};

use super::{TypeIndex, TypeRecord};

/// One step from version `from` to `from + 1` of one message type, as `#[upcast]` submits it.
#[derive(Clone, Copy, Debug)]
pub struct UpcastRecord {
    /// The `TypeId` of the type the step belongs to (today's type).
    pub target: fn() -> TypeId,
    /// The Rust name of that type, for wiring errors.
    pub target_name: fn() -> &'static str,
    /// The version the step reads; it writes `from + 1`.
    pub from: u32,
    /// The wire name rows of version `from` were stored under, when the step also renames the
    /// type (`#[upcast(Type, from = 1, name = "old.Name")]`); such rows resolve to the type.
    pub stored_name: Option<&'static str>,
    /// The step itself, on the JSON value.
    pub step: fn(serde_json::Value) -> Result<serde_json::Value, String>,
    /// The function's name, for wiring errors.
    pub function: &'static str,
}

inventory::collect!(UpcastRecord);

/// Brings `value`, stored as `version` of `record`'s type, up to the type's current version.
///
/// # Errors
/// [`Error::NewerVersion`] if `version` is newer than the type's; [`Error::Upcast`] if a step
/// is missing or fails.
pub(crate) fn to_current(
    record: &TypeRecord,
    stored_name: &str,
    version: u32,
    mut value: serde_json::Value,
    at: &dyn Fn() -> Location,
) -> Result<serde_json::Value, Error> {
    if version > record.version {
        return Err(newer(record, stored_name, version, at()));
    }
    let index = TypeIndex::global();
    let type_id = (record.type_id)();
    for from in version..record.version {
        let Some(step) = index.step(type_id, from) else {
            return Err(Error::Upcast {
                name: stored_name.to_owned(),
                from,
                at: at(),
                reason: format!(
                    "{} is version {} and no upcaster reads version {from}: declare \
                     `#[upcast({}, from = {from})]` on a function",
                    (record.rust_name)(),
                    record.version,
                    short_name((record.rust_name)()),
                ),
            });
        };
        value = (step.step)(value).map_err(|reason| Error::Upcast {
            name: stored_name.to_owned(),
            from,
            at: at(),
            reason: format!("{} failed: {reason}", step.function),
        })?;
    }
    Ok(value)
}

/// The typed error for a row written by a newer version of its type.
pub(crate) fn newer(record: &TypeRecord, stored_name: &str, version: u32, at: Location) -> Error {
    Error::NewerVersion {
        name: stored_name.to_owned(),
        stored: version,
        known: record.version,
        at,
    }
}

fn short_name(path: &str) -> &str {
    path.rsplit("::").next().unwrap_or(path)
}
