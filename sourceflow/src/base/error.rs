//! The one error type of the runtime, and the domain error handlers return.

use std::fmt;

use super::message::{EntityId, Position, Sequence, StreamId};
use super::validate::Violations;

/// A handler's refusal: a business rule said no. Nothing is stored when a handler returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainError {
    /// A machine-readable code (`"rejected"` unless given), for callers that branch on it.
    pub code: String,
    /// What happened, for a human.
    pub message: String,
}

impl DomainError {
    /// A refusal with the code `"rejected"`.
    pub fn rejected(message: impl Into<String>) -> Self {
        Self {
            code: "rejected".to_owned(),
            message: message.into(),
        }
    }

    /// A refusal with a caller-chosen code (`"insufficient_funds"`).
    pub fn with_code(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.code == "rejected" {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for DomainError {}

/// Everything that can go wrong in sourceflow, as variants a caller can match.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another writer kept winning the race for this stream, beyond the retry budget.
    #[error(
        "concurrency conflict on {stream}: expected sequence {expected} after {attempts} attempts"
    )]
    Concurrency {
        /// The contended stream.
        stream: StreamId,
        /// The sequence the last attempt expected to extend.
        expected: Sequence,
        /// How many times the handler ran.
        attempts: u32,
    },
    /// The handler refused the command; nothing was stored. (The refusal is the message, not
    /// a cause: it is shown once, not again as a source.)
    #[error("command rejected: {0}")]
    Rejected(DomainError),
    /// No saga handles this command type (and no remote dispatcher took it).
    #[error("no handler for command {message}")]
    NoHandler {
        /// Wire name of the command.
        message: String,
    },
    /// A stored or received payload does not match its type.
    #[error("cannot decode {name} at {at}: {source}")]
    Decode {
        /// Wire name stored with the payload.
        name: String,
        /// Where the payload is.
        at: Location,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A value's own `Serialize` impl failed, so it could not be stored (nothing was).
    #[error("cannot encode {name} at {at}: {source}")]
    Encode {
        /// Wire name (or entity / view model name) of the value.
        name: String,
        /// Where it was going.
        at: Location,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A stored or received message whose wire name no registered type has.
    #[error("unknown message {name:?} at {at}: no type registered with this name")]
    UnknownMessage {
        /// The unknown wire name.
        name: String,
        /// Where the message is.
        at: Location,
    },
    /// A stored or received message was written by a newer version of its type than this
    /// build knows (a rolled-back deployment reading what the newer one wrote). Nothing is
    /// guessed: the row is left as it is for a build that knows its version.
    #[error(
        "{name} at {at} is version {stored}, newer than the version {known} this build knows; \
         run a build that knows version {stored}"
    )]
    NewerVersion {
        /// Wire name stored with the payload.
        name: String,
        /// The version stored with the payload.
        stored: u32,
        /// The newest version this build knows ([`Message::VERSION`](crate::Message::VERSION)).
        known: u32,
        /// Where the payload is.
        at: Location,
    },
    /// An upcaster could not bring a stored payload from one version to the next, or no
    /// upcaster is declared for a stored version.
    #[error("cannot upcast {name} version {from} at {at}: {reason}")]
    Upcast {
        /// Wire name stored with the payload.
        name: String,
        /// The version the failing step starts from.
        from: u32,
        /// Where the payload is.
        at: Location,
        /// What the step said, or which step is missing.
        reason: String,
    },
    /// The store failed (after retrying transient faults).
    #[error("store error: {0}")]
    Store(#[from] StoreError),
    /// The application is wired wrongly; every problem found is listed.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Config(Vec<String>),
    /// Validation before persistence failed; nothing was stored.
    #[error("invalid message: {0}")]
    Invalid(Violations),
    /// The stream was deleted ([`SourceFlow::delete_stream`](crate::SourceFlow::delete_stream)):
    /// it takes no more commands; nothing was stored.
    #[error("stream {stream} was deleted: it takes no more commands")]
    StreamDeleted {
        /// The deleted stream.
        stream: StreamId,
    },
    /// The stream is archived ([`SourceFlow::archive_stream`](crate::SourceFlow::archive_stream)):
    /// nothing was stored. Restore it with
    /// [`SourceFlow::restore_stream`](crate::SourceFlow::restore_stream), then send again.
    #[error("stream {stream} is archived: restore it with `SourceFlow::restore_stream` before sending to it")]
    StreamArchived {
        /// The archived stream.
        stream: StreamId,
    },
}

/// Where a message or state that could not be encoded or decoded is (or was going).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A stored command or event, or an entity state: its stream and sequence.
    Stored {
        /// The stream.
        stream: StreamId,
        /// The command or event sequence (for an entity state, the version).
        sequence: Sequence,
    },
    /// A message on its way to a stream, not stored yet (being sent, received from a
    /// transport, or waiting in the outbox).
    Sending {
        /// The stream it is for.
        stream: StreamId,
    },
    /// A view model.
    ViewModel {
        /// The model's type name.
        model_type: String,
        /// The model's key.
        id: EntityId,
    },
    /// A payload not tied to a stream (checked by tooling).
    Detached,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Stored { stream, sequence } => write!(f, "{stream} sequence {sequence}"),
            Location::Sending { stream } => write!(f, "{stream} (not stored)"),
            Location::ViewModel { model_type, id } => write!(f, "view model {model_type}/{id}"),
            Location::Detached => f.write_str("a detached payload"),
        }
    }
}

impl From<DomainError> for Error {
    fn from(value: DomainError) -> Self {
        Error::Rejected(value)
    }
}

/// Shorthand for `Result<T, sourceflow::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error from a backend driver, kept as the source of a [`StoreError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream moved on: the write expected `expected` as the last sequence.
    #[error("concurrency conflict on {stream}: expected last sequence {expected}")]
    Conflict {
        /// The contended stream.
        stream: StreamId,
        /// The sequence the write expected to extend.
        expected: Sequence,
    },
    /// A handler's stored position moved on: another process projected these events first.
    #[error("position conflict for {handler}: expected {expected}")]
    PositionConflict {
        /// The view or aggregate whose position moved.
        handler: String,
        /// The position the write expected.
        expected: Position,
    },
    /// A stream has a hole: records are missing between two stored ones.
    #[error("sequence gap in {stream}: expected {expected}, found {found}")]
    Gap {
        /// The damaged stream.
        stream: StreamId,
        /// The sequence that should have come next.
        expected: Sequence,
        /// The sequence found instead.
        found: Sequence,
    },
    /// A fault that may pass if retried (busy or locked database, dropped connection,
    /// serialization failure). The runtime retries these with backoff before giving up.
    #[error("transient store fault: {0}")]
    Transient(#[source] BoxError),
    /// A fault that will not pass by retrying.
    #[error("store fault: {0}")]
    Backend(#[source] BoxError),
    /// A stored record cannot be read back (bad column value, unknown id format).
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The store does not offer this tooling operation ([`StoreAdmin`](crate::store::StoreAdmin)).
    #[error("this store does not support `{0}`")]
    Unsupported(&'static str),
}

impl StoreError {
    /// True for faults worth retrying with backoff.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }
}

/// Turns problems recorded by a context into one error (all validation failures merged).
pub(crate) fn take_problems(problems: &mut Vec<Error>) -> Result<(), Error> {
    if problems.is_empty() {
        return Ok(());
    }
    let mut merged: Option<Violations> = None;
    let mut other = None;
    for problem in problems.drain(..) {
        match problem {
            Error::Invalid(v) => match &mut merged {
                Some(m) => {
                    if m.message != v.message {
                        m.message = format!("{}, {}", m.message, v.message);
                    }
                    m.items.extend(v.items);
                }
                None => merged = Some(v),
            },
            e => {
                other.get_or_insert(e);
            }
        }
    }
    match (merged, other) {
        (Some(v), _) => Err(Error::Invalid(v)),
        (None, Some(e)) => Err(e),
        (None, None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::validate::Violation;

    #[test]
    fn validation_problems_from_several_messages_are_merged() {
        let invalid = |message: &str, field: &str| {
            Error::Invalid(Violations {
                message: message.into(),
                items: vec![Violation {
                    field: field.into(),
                    message: "bad".into(),
                }],
            })
        };
        let mut problems = vec![
            invalid("a.Placed", "qty"),
            Error::NoHandler {
                message: "x".into(),
            },
            invalid("a.Priced", "price"),
        ];
        match take_problems(&mut problems) {
            Err(Error::Invalid(v)) => {
                assert_eq!(v.message, "a.Placed, a.Priced");
                assert_eq!(v.items.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(take_problems(&mut problems).is_ok());
    }
}
