//! The layer both SQL backends share: [`SqlStore`], the store contract implemented once over a
//! [`Backend`]; the read side of the contract ([`read`]) with the query texts both backends run
//! ([`queries`]) and the row mapping ([`rows`]); the writes as values handed to the backend
//! ([`write`](mod@write)); and the conversions between the contract's values and column values
//! ([`values`]).
//!
//! A backend (`sqlite/`, `postgres/`) brings its connections, its text of the few reads that
//! differ, how its columns take arguments, its commit path and its error classification;
//! everything a read does with a query's arguments and rows is written here, once.

pub(crate) mod inspect;
pub(crate) mod keys;
pub(crate) mod lease;
pub(crate) mod queries;
pub(crate) mod read;
pub(crate) mod rows;
pub(crate) mod schedule;
pub(crate) mod values;
pub(crate) mod write;

use std::fmt;
use std::future::Future;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sourceflow::message::{NewEvent, StoredCommand};
use sourceflow::store::{
    EntityWithModels, InlineProjection, ModelWrite, Page, PendingCommand, ProjectionCommit, Store,
    StoreAdmin, StoreError, UnitOfWork,
};
use sourceflow::{CommandReceipt, EntityId, Position, RecordedEvent, Sequence, StreamId};
use uuid::Uuid;

use crate::retry::Backoff;
use read::{Param, Query, ReadQueries, Rows};
use rows::Columns;
use write::{Write, Written};

/// A store over a SQL database: the [`Store`] and [`StoreAdmin`] contract with the read side
/// written once and the write side of the backend `B`. Use it as [`SqliteStore`] or
/// [`PostgresStore`].
///
/// Cheap to clone: clones share the backend's connections.
///
#[cfg_attr(feature = "sqlite", doc = "[`SqliteStore`]: crate::SqliteStore")]
#[cfg_attr(feature = "postgres", doc = "[`PostgresStore`]: crate::PostgresStore")]
#[cfg_attr(not(feature = "sqlite"), doc = "[`SqliteStore`]: crate#features")]
#[cfg_attr(not(feature = "postgres"), doc = "[`PostgresStore`]: crate#features")]
#[derive(Clone)]
pub struct SqlStore<B> {
    backend: B,
}

impl<B> SqlStore<B> {
    pub(crate) fn new(backend: B) -> Self {
        Self { backend }
    }

    pub(crate) fn backend(&self) -> &B {
        &self.backend
    }

    #[cfg(feature = "postgres")]
    pub(crate) fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }
}

impl<B: fmt::Debug> fmt::Debug for SqlStore<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.backend.fmt(f)
    }
}

/// What a SQL backend brings to [`SqlStore`]: the pool and the backend's own text of a few read
/// queries (the shared reads do the rest), how its columns take arguments, which of its errors
/// are transient, and its writes.
pub(crate) trait Backend: Sized + Send + Sync + fmt::Debug + 'static {
    /// The backend's name in logs: `sqlite`, `postgres`.
    const NAME: &'static str;

    /// The backend's text of the read queries that differ per backend.
    const READS: ReadQueries;

    /// The backend's text of the inspector queries that differ per backend.
    const INSPECT: inspect::InspectQueries;

    /// The database the read queries run on.
    type Db: Rows<Row: Columns>;

    /// The pool the read queries run on.
    fn readers(&self) -> &sqlx::Pool<Self::Db>;

    /// How the backend retries transient faults.
    fn backoff(&self) -> &Backoff;

    /// Binds a query argument as the backend's columns hold it.
    fn bind<'q>(query: Query<'q, Self::Db>, param: &Param<'q>) -> Query<'q, Self::Db>;

    /// Maps a driver error to the store's error: transient or not, as the backend judges.
    fn classify(err: sqlx::Error) -> StoreError;

    /// Runs one write of the contract and answers it.
    fn write(&self, write: Write) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// One stream's commands between two sequences, read with `query` (the hot log or the
    /// archive) and checked dense: by default on the reader pool.
    fn stream_commands(
        &self,
        query: read::StreamQuery,
        stream: &StreamId,
        from: Sequence,
        to: Option<Sequence>,
    ) -> impl Future<Output = Result<Vec<StoredCommand>, StoreError>> + Send {
        read::pooled_stream_commands(self, query, stream, from, to)
    }

    /// One stream's events between two sequences, read with `query` (the hot log or the
    /// archive) and checked dense: by default on the reader pool.
    fn stream_events(
        &self,
        query: read::StreamQuery,
        stream: &StreamId,
        from: Sequence,
        to: Option<Sequence>,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        read::pooled_stream_events(self, query, stream, from, to)
    }

    /// [`Store::groups`]: the backend's group commit with views, if it has one.
    fn groups(&self) -> Option<&dyn sourceflow::store::GroupCommit> {
        None
    }

    /// [`Store::get_entity_with_models`]: by default the entity and the models one by one.
    fn get_entity_with_models(
        &self,
        stream: &StreamId,
        models: &[(&'static str, EntityId)],
    ) -> impl Future<Output = Result<EntityWithModels, StoreError>> + Send {
        read::get_entity_with_models(self, stream, models)
    }
}

/// Runs `write` on `backend` and takes its answer apart with `answer`, which gives an answer of
/// the wrong kind back.
async fn write_answer<B: Backend, T>(
    backend: &B,
    write: Write,
    answer: impl FnOnce(Written) -> Result<T, Written>,
) -> Result<T, StoreError> {
    let written = backend.write(write).await?;
    answer(written).map_err(|other| write::unexpected(B::NAME, other))
}

/// Runs `write` on `backend`, whose answer is a receipt.
async fn write_receipt<B: Backend>(
    backend: &B,
    write: Write,
) -> Result<CommandReceipt, StoreError> {
    write_answer(backend, write, |written| match written {
        Written::Receipt(receipt) => Ok(receipt),
        other => Err(other),
    })
    .await
}

/// Runs `write` on `backend`, whose answer is only done or failed.
async fn write_done<B: Backend>(backend: &B, write: Write) -> Result<(), StoreError> {
    write_answer(backend, write, |written| match written {
        Written::Done => Ok(()),
        other => Err(other),
    })
    .await
}

#[async_trait]
impl<B: Backend> Store for SqlStore<B> {
    #[tracing::instrument(name = "sourceflow.sql.commit", skip_all, fields(backend = B::NAME, stream = %unit.command.envelope.stream, expected = %unit.expected))]
    async fn commit(&self, unit: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        write_answer(
            &self.backend,
            Write::Commit(unit),
            |written| match written {
                Written::Receipt(receipt) => Ok(receipt),
                other => Err(other),
            },
        )
        .await
    }

    async fn commit_inline(
        &self,
        unit: UnitOfWork,
        projections: Vec<InlineProjection>,
    ) -> Result<(CommandReceipt, Vec<bool>), StoreError> {
        let write = Write::CommitInline(unit, projections);
        write_answer(&self.backend, write, |written| match written {
            Written::Inline(receipt, applied) => Ok((receipt, applied)),
            other => Err(other),
        })
        .await
    }

    async fn load_commands(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Option<Sequence>,
    ) -> Result<Vec<StoredCommand>, StoreError> {
        self.backend
            .stream_commands(read::COMMANDS, stream, from, to)
            .await
    }

    async fn last_sequence(&self, stream: &StreamId) -> Result<Sequence, StoreError> {
        read::last_sequence(&self.backend, stream).await
    }

    async fn find_receipt(
        &self,
        stream: &StreamId,
        message_id: Uuid,
    ) -> Result<Option<CommandReceipt>, StoreError> {
        read::find_receipt(&self.backend, stream, message_id).await
    }

    async fn get_entity(
        &self,
        stream: &StreamId,
    ) -> Result<Option<(Sequence, Vec<u8>)>, StoreError> {
        read::get_entity(&self.backend, stream).await
    }

    async fn put_entity(
        &self,
        stream: &StreamId,
        expected: Sequence,
        version: Sequence,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        let stream = stream.clone();
        write_done(
            &self.backend,
            Write::PutEntity {
                stream,
                expected,
                version,
                state,
            },
        )
        .await
    }

    async fn get_entity_with_models(
        &self,
        stream: &StreamId,
        models: &[(&'static str, EntityId)],
    ) -> Result<EntityWithModels, StoreError> {
        self.backend.get_entity_with_models(stream, models).await
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<PendingCommand>, StoreError> {
        read::outbox_pending(&self.backend, limit).await
    }

    async fn outbox_remove(&self, ids: &[u64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.to_vec();
        write_done(&self.backend, Write::RemoveOutbox { ids }).await
    }

    async fn read_stream_range(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.backend
            .stream_events(read::EVENTS, stream, from, Some(to))
            .await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read::read_all(&self.backend, after, limit).await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        read::head(&self.backend).await
    }

    async fn get_model(
        &self,
        model_type: &str,
        id: &EntityId,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        read::get_model(&self.backend, model_type, id).await
    }

    async fn list_models(
        &self,
        model_type: &str,
        page: Page,
    ) -> Result<Vec<(EntityId, Vec<u8>)>, StoreError> {
        read::list_models(&self.backend, model_type, page).await
    }

    async fn get_position(&self, handler: &str) -> Result<Position, StoreError> {
        read::get_position(&self.backend, handler).await
    }

    async fn set_position(&self, handler: &str, position: Position) -> Result<(), StoreError> {
        let handler = handler.to_owned();
        write_done(&self.backend, Write::SetPosition { handler, position }).await
    }

    #[tracing::instrument(name = "sourceflow.sql.commit_projection", skip_all, fields(backend = B::NAME, handler = %commit.handler, position = %commit.position))]
    async fn commit_projection(&self, commit: ProjectionCommit) -> Result<(), StoreError> {
        write_done(&self.backend, Write::CommitProjection(commit)).await
    }

    async fn reset_projection(
        &self,
        handler: &str,
        model_types: &[&str],
    ) -> Result<(), StoreError> {
        let handler = handler.to_owned();
        let model_types = model_types.iter().map(|t| (*t).to_owned()).collect();
        write_done(
            &self.backend,
            Write::ResetProjection {
                handler,
                model_types,
            },
        )
        .await
    }

    async fn delete_stream(&self, tombstone: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        write_receipt(&self.backend, Write::DeleteStream(tombstone)).await
    }

    async fn archive_stream(&self, marker: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        write_receipt(&self.backend, Write::ArchiveStream(marker)).await
    }

    async fn restore_stream(&self, marker: UnitOfWork) -> Result<CommandReceipt, StoreError> {
        write_receipt(&self.backend, Write::RestoreStream(marker)).await
    }

    async fn load_archived_commands(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Option<Sequence>,
    ) -> Result<Vec<StoredCommand>, StoreError> {
        self.backend
            .stream_commands(read::ARCHIVED_COMMANDS, stream, from, to)
            .await
    }

    async fn read_archived_events(
        &self,
        stream: &StreamId,
        from: Sequence,
        to: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.backend
            .stream_events(read::ARCHIVED_EVENTS, stream, from, Some(to))
            .await
    }

    fn admin(&self) -> Option<&dyn StoreAdmin> {
        Some(self)
    }

    fn schedules(&self) -> Option<&dyn sourceflow::store::ScheduleStore> {
        Some(self)
    }

    fn keys(&self) -> Option<&dyn sourceflow::personal::KeyStore> {
        Some(self)
    }

    fn leases(&self) -> Option<&dyn sourceflow::store::Leases> {
        Some(self)
    }

    fn groups(&self) -> Option<&dyn sourceflow::store::GroupCommit> {
        self.backend.groups()
    }
}

#[async_trait]
impl<B: Backend> StoreAdmin for SqlStore<B> {
    async fn append_command(
        &self,
        expected: Sequence,
        command: StoredCommand,
    ) -> Result<Sequence, StoreError> {
        write_answer(
            &self.backend,
            Write::AppendCommand { expected, command },
            |written| match written {
                Written::Sequence(sequence) => Ok(sequence),
                other => Err(other),
            },
        )
        .await
    }

    async fn append_events(
        &self,
        stream: &StreamId,
        expected: Sequence,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let stream = stream.clone();
        let write = Write::AppendEvents {
            stream,
            expected,
            events,
        };
        write_answer(&self.backend, write, |written| match written {
            Written::Events(events) => Ok(events),
            other => Err(other),
        })
        .await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Sequence,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.backend
            .stream_events(read::EVENTS, stream, from, None)
            .await
    }

    async fn read_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read::read_between(&self.backend, from, to, after, limit).await
    }

    async fn delete_entity(&self, stream: &StreamId) -> Result<(), StoreError> {
        let stream = stream.clone();
        write_done(&self.backend, Write::DeleteEntity { stream }).await
    }

    async fn put_model(
        &self,
        model_type: &str,
        id: &EntityId,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        let (model_type, id) = (model_type.to_owned(), id.clone());
        write_done(
            &self.backend,
            Write::PutModel {
                model_type,
                id,
                state,
            },
        )
        .await
    }

    async fn delete_model(&self, model_type: &str, id: &EntityId) -> Result<(), StoreError> {
        let (model_type, id) = (model_type.to_owned(), id.clone());
        write_done(&self.backend, Write::DeleteModel { model_type, id }).await
    }

    async fn clear_models(&self, model_type: &str) -> Result<(), StoreError> {
        let model_type = model_type.to_owned();
        write_done(&self.backend, Write::ClearModels { model_type }).await
    }

    async fn entity_types(&self) -> Result<Vec<String>, StoreError> {
        read::entity_types(&self.backend).await
    }

    async fn stream_ids(&self, entity_type: &str, page: Page) -> Result<Vec<EntityId>, StoreError> {
        read::stream_ids(&self.backend, entity_type, page).await
    }

    fn inspect(&self) -> Option<&dyn sourceflow::store::StoreInspect> {
        Some(self)
    }
}

/// The model writes of one projection commit with only the last write to each model kept: the
/// outcome of applying them in order, as set-based statements can apply them.
pub(crate) fn last_writes(models: &[ModelWrite]) -> Vec<&ModelWrite> {
    let mut kept: Vec<&ModelWrite> = Vec::with_capacity(models.len());
    for write in models.iter().rev() {
        if !kept
            .iter()
            .any(|k| k.model_type == write.model_type && k.id == write.id)
        {
            kept.push(write);
        }
    }
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_write_wins() {
        let write = |id: &str, state: Option<&str>| ModelWrite {
            model_type: "m".into(),
            id: EntityId::from(id),
            state: state.map(|s| s.as_bytes().to_vec()),
        };
        let writes = [
            write("a", Some("1")),
            write("b", Some("2")),
            write("a", None),
        ];
        let kept = last_writes(&writes);
        assert_eq!(kept, vec![&writes[1], &writes[2]]);
    }
}
