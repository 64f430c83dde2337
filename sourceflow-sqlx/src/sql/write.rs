//! The write side of the contract as values: the [`SqlStore`](super::SqlStore) turns each
//! writing method into a [`Write`] for its backend, which answers with a [`Written`]. The
//! SQLite backend queues them for its writer thread; the Postgres backend runs each as one
//! round trip. The key and schedule writes ([`KeyWrite`], [`ScheduleWrite`]) are defined here
//! with the rest; the store methods that build them live in `keys` and `schedule`.

use chrono::{DateTime, Utc};
use sourceflow::message::{NewEvent, StoredCommand};
use sourceflow::schedule::{
    CancelOutcome, NewSchedule, ScheduleChanges, ScheduleId, ScheduleRecord,
};
use sourceflow::store::{InlineProjection, ProjectionCommit, StoreError, UnitOfWork};
use sourceflow::{CommandReceipt, EntityId, Position, RecordedEvent, Sequence, StreamId};

/// A write of the contract, as the [`SqlStore`](super::SqlStore) hands it to its backend: one
/// variant per writing method of [`Store`](sourceflow::store::Store) and
/// [`StoreAdmin`](sourceflow::store::StoreAdmin).
pub(crate) enum Write {
    Commit(UnitOfWork),
    CommitInline(UnitOfWork, Vec<InlineProjection>),
    AppendCommand {
        expected: Sequence,
        command: StoredCommand,
    },
    AppendEvents {
        stream: StreamId,
        expected: Sequence,
        events: Vec<NewEvent>,
    },
    PutEntity {
        stream: StreamId,
        expected: Sequence,
        version: Sequence,
        state: Vec<u8>,
    },
    DeleteEntity {
        stream: StreamId,
    },
    PutModel {
        model_type: String,
        id: EntityId,
        state: Vec<u8>,
    },
    DeleteModel {
        model_type: String,
        id: EntityId,
    },
    ClearModels {
        model_type: String,
    },
    SetPosition {
        handler: String,
        position: Position,
    },
    CommitProjection(ProjectionCommit),
    ResetProjection {
        handler: String,
        model_types: Vec<String>,
    },
    RemoveOutbox {
        ids: Vec<u64>,
    },
    /// [`Store::delete_stream`](sourceflow::store::Store::delete_stream): the tombstone unit.
    DeleteStream(UnitOfWork),
    /// [`Store::archive_stream`](sourceflow::store::Store::archive_stream): the marker unit.
    ArchiveStream(UnitOfWork),
    /// [`Store::restore_stream`](sourceflow::store::Store::restore_stream): the marker unit.
    RestoreStream(UnitOfWork),
    /// Everything of [`ScheduleStore`](sourceflow::store::ScheduleStore).
    Schedules(ScheduleWrite),
    /// The writes of [`KeyStore`](sourceflow::personal::KeyStore).
    Keys(KeyWrite),
    /// The writes of [`Leases`](sourceflow::store::Leases).
    Leases(LeaseWrite),
}

/// What a write produced: the answer of the method that asked for it.
#[derive(Debug)]
pub(crate) enum Written {
    Receipt(CommandReceipt),
    Inline(CommandReceipt, Vec<bool>),
    Sequence(Sequence),
    Events(Vec<RecordedEvent>),
    Done,
    Schedules(ScheduleAnswer),
    /// Whether a lease is held by the one who asked for it.
    Held(bool),
}

/// A scheduling write (or a read that both backends run where they write).
#[derive(Debug)]
pub(crate) enum ScheduleWrite {
    Commit(Box<(UnitOfWork, ScheduleChanges)>),
    Add(Vec<NewSchedule>),
    Cancel {
        id: ScheduleId,
        now: DateTime<Utc>,
    },
    Claim {
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    },
    MarkFired {
        ids: Vec<ScheduleId>,
        now: DateTime<Utc>,
    },
    Release {
        ids: Vec<ScheduleId>,
        at: DateTime<Utc>,
    },
    Get(ScheduleId),
    Pending {
        after: Option<(DateTime<Utc>, ScheduleId)>,
        limit: usize,
    },
}

/// The answer to a [`ScheduleWrite`].
#[derive(Debug)]
pub(crate) enum ScheduleAnswer {
    Receipt(CommandReceipt),
    Done,
    Cancel(CancelOutcome),
    Records(Vec<ScheduleRecord>),
}

/// A write to the key table.
#[derive(Debug)]
pub(crate) enum KeyWrite {
    /// Stores `key` as `subject`'s key unless the subject has a row already.
    Insert {
        subject: String,
        key: String,
        now: DateTime<Utc>,
    },
    /// Deletes `subject`'s key and marks it forgotten (a row even if it had none).
    Forget { subject: String, now: DateTime<Utc> },
}

/// A write to the lease table (times in milliseconds since the Unix epoch).
#[derive(Debug)]
pub(crate) enum LeaseWrite {
    /// Takes or renews lease `name` for `holder` until `until` (see
    /// [`HOLD_LEASE`](super::lease::HOLD_LEASE)).
    Hold {
        name: String,
        holder: String,
        now: i64,
        until: i64,
    },
    /// Gives lease `name` up if `holder` holds it.
    Release { name: String, holder: String },
}

/// An answer of the wrong kind for its write: a bug in a backend, reported rather than
/// panicking.
#[derive(Debug, thiserror::Error)]
#[error("the {backend} store answered a write with {answer}")]
struct UnexpectedAnswer {
    backend: &'static str,
    answer: String,
}

/// The error for an answer of the wrong kind.
pub(crate) fn unexpected(backend: &'static str, written: Written) -> StoreError {
    StoreError::Backend(Box::new(UnexpectedAnswer {
        backend,
        answer: format!("{written:?}"),
    }))
}
