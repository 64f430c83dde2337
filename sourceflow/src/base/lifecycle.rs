//! Deleting and archiving streams: the system records that mark a stream's lifecycle, and the
//! events views receive when it changes.
//!
//! - [`SourceFlow::delete_stream`](crate::SourceFlow::delete_stream) commits a tombstone (a
//!   command named [`DELETE_STREAM`] with the event [`StreamDeleted`]) at the stream's next
//!   sequence and, in the same transaction, erases every earlier command and event of the
//!   stream in place: name [`ERASED`], payload `null`; rows, sequences, global positions and
//!   message ids are kept, so the global log stays dense and a resent message id is still
//!   answered with its original receipt. The entity state is deleted. Sends to the stream are
//!   refused with [`Error::StreamDeleted`](crate::Error::StreamDeleted) from then on.
//! - [`SourceFlow::archive_stream`](crate::SourceFlow::archive_stream) commits a marker (a
//!   command named [`ARCHIVE_STREAM`] with the event [`StreamArchived`]) and, in the same
//!   transaction, moves the stream's earlier commands and events out of the hot tables into
//!   the archive. `replay` and `state_at` read the archive; sends are refused with
//!   [`Error::StreamArchived`](crate::Error::StreamArchived) until
//!   [`SourceFlow::restore_stream`](crate::SourceFlow::restore_stream) moves the rows back
//!   (recording a command named [`RESTORE_STREAM`]).
//!
//! Views and aggregates receive [`StreamDeleted`] and [`StreamArchived`] in log order like any
//! event: a `#[projects_on]` method taking one of them can drop the models it keeps for the
//! stream. Readers of the global log skip erased events ([`is_erased`]).

use serde::{Deserialize, Serialize};

use super::message::{EntityId, Event, Message, StreamId};

/// The name an erased command or event keeps (its payload is `null`).
pub const ERASED: &str = "sourceflow.Erased";
/// The name of the tombstone command [`SourceFlow::delete_stream`](crate::SourceFlow::delete_stream) records.
pub const DELETE_STREAM: &str = "sourceflow.DeleteStream";
/// The name of the command [`SourceFlow::archive_stream`](crate::SourceFlow::archive_stream) records.
pub const ARCHIVE_STREAM: &str = "sourceflow.ArchiveStream";
/// The name of the command [`SourceFlow::restore_stream`](crate::SourceFlow::restore_stream) records.
pub const RESTORE_STREAM: &str = "sourceflow.RestoreStream";

/// True for a command or event that deletion erased: it has no payload and no type; readers
/// skip it.
pub fn is_erased(name: &str) -> bool {
    name == ERASED
}

/// True for the commands sourceflow records itself ([`DELETE_STREAM`], [`ARCHIVE_STREAM`],
/// [`RESTORE_STREAM`]) and erased ones: replays skip them, no saga handles them.
pub fn is_system_command(name: &str) -> bool {
    matches!(
        name,
        ERASED | DELETE_STREAM | ARCHIVE_STREAM | RESTORE_STREAM
    )
}

/// Where a stream stands, as its last command says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamStatus {
    /// Open to commands (or never written to).
    Live,
    /// Deleted: its history is erased and sends are refused.
    Deleted,
    /// Archived: its history is in the archive; restore it before sending to it.
    Archived,
}

impl StreamStatus {
    /// The status a stream whose last command has this name is in.
    pub fn after(last_command: &str) -> Self {
        match last_command {
            DELETE_STREAM => StreamStatus::Deleted,
            ARCHIVE_STREAM => StreamStatus::Archived,
            _ => StreamStatus::Live,
        }
    }
}

/// Recorded when a stream is deleted: the last event of its stream. A view can project on it
/// to drop its models of the stream.
///
/// ```
/// use sourceflow::prelude::*;
/// use sourceflow::StreamDeleted;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Default, Clone, Serialize, Deserialize, ViewModel)]
/// # pub struct Summary { pub balance: i64 }
/// # #[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
/// # #[entity(name = "bank.Account")]
/// # pub struct Account { pub balance: i64 }
///
/// #[derive(Default)]
/// pub struct SummaryView;
///
/// #[view(model = Summary)]
/// impl SummaryView {
///     #[projects_on]
///     async fn deleted(&self, e: &StreamDeleted, cx: &mut ViewContext) {
///         if e.is::<Account>() {
///             cx.delete::<Summary>(&e.id);
///         }
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamDeleted {
    /// The deleted stream's entity type.
    pub entity_type: String,
    /// The deleted stream's entity id.
    pub id: EntityId,
}

/// Recorded when a stream is archived: its history moved out of the hot tables. Views keep
/// their models unless they project on this event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamArchived {
    /// The archived stream's entity type.
    pub entity_type: String,
    /// The archived stream's entity id.
    pub id: EntityId,
}

macro_rules! stream_event {
    ($type:ident, $name:literal) => {
        impl $type {
            /// The event for `stream`.
            pub fn of(stream: &StreamId) -> Self {
                Self {
                    entity_type: stream.entity_type.to_string(),
                    id: stream.id.clone(),
                }
            }

            /// True if the stream is one of entity `E`.
            pub fn is<E: crate::base::message::Entity>(&self) -> bool {
                self.entity_type == E::NAME
            }

            /// The stream this event is about.
            pub fn stream(&self) -> StreamId {
                StreamId::new(self.entity_type.clone(), self.id.clone())
            }
        }

        // Not offered as examples when a user's type misses the trait: the user's own
        // messages are what an error message should point to.
        #[diagnostic::do_not_recommend]
        impl Message for $type {
            const NAME: &'static str = $name;
        }

        #[diagnostic::do_not_recommend]
        impl Event for $type {}
    };
}

stream_event!(StreamDeleted, "sourceflow.StreamDeleted");
stream_event!(StreamArchived, "sourceflow.StreamArchived");
