//! The read side of the contract, written once: each read binds its arguments, runs the
//! backend's text of the query ([`ReadQueries`]) on the backend's reader pool, retried on
//! transient faults, and maps the rows with [`rows`](super::rows).

use std::future::Future;

use chrono::{DateTime, Utc};
use sourceflow::message::StoredCommand;
use sourceflow::store::{EntityWithModels, Page, PendingCommand, StoreError};
use sourceflow::{CommandReceipt, EntityId, Position, RecordedEvent, Sequence, StreamId};
use sqlx::{Database, Executor, IntoArguments, Pool};
use uuid::Uuid;

use super::queries::*;
use super::rows::{
    entity_row, log_events, model_row, outbox_row, receipt, stream_commands, stream_events, Columns,
};
use super::values::{bound, db_limit, from_db, time_bound};
use super::Backend;

/// A query on database `DB` with its arguments.
pub(crate) type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// A database whose pool runs queries: what the shared reads need of sqlx, as one bound.
pub(crate) trait Rows: Database {
    /// The rows `query` returns.
    fn fetch_all<'a>(
        pool: &'a Pool<Self>,
        query: Query<'a, Self>,
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send + 'a;
}

impl<DB> Rows for DB
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    fn fetch_all<'a>(
        pool: &'a Pool<Self>,
        query: Query<'a, Self>,
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send + 'a {
        query.fetch_all(pool)
    }
}

/// The rows `sql` returns with `params` bound in order, retried on transient faults.
pub(crate) async fn fetch<B: Backend>(
    backend: &B,
    what: &'static str,
    sql: &'static str,
    params: &[Param<'_>],
) -> Result<Vec<<B::Db as Database>::Row>, StoreError> {
    let pool = backend.readers();
    let run = || async move {
        let query = params.iter().fold(sqlx::query(sql), B::bind);
        B::Db::fetch_all(pool, query).await.map_err(B::classify)
    };
    backend.backoff().run(B::NAME, what, run).await
}

/// A query argument; each backend binds it as its columns store the value (SQLite keeps UUIDs
/// and timestamps as text).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Param<'a> {
    /// A text column value.
    Text(&'a str),
    /// A nullable text value.
    OptionalText(Option<&'a str>),
    /// An integer column value.
    Int(i64),
    /// A UUID column value.
    Uuid(Uuid),
    /// A time-range bound, in whole microseconds.
    Time(DateTime<Utc>),
}

/// The read queries whose best text differs per backend (the rest are in
/// [`queries`](super::queries)). The arguments, in order, and the columns each returns:
/// - `find_receipt`: stream type, stream id, message id; the command's sequence, then
///   [`event_columns!`](super::rows::event_columns) of each of its events (null without any),
///   in stream order.
/// - `stream_ids_first` and `stream_ids_after`: stream type, id after (null for the first
///   page), limit; the stream ids of the type that have a command, in order.
#[derive(Debug)]
pub(crate) struct ReadQueries {
    pub find_receipt: &'static str,
    pub stream_ids_first: &'static str,
    pub stream_ids_after: &'static str,
}

/// The stream's key as the first two arguments of a query.
fn stream_key(stream: &StreamId) -> [Param<'_>; 2] {
    [
        Param::Text(&stream.entity_type),
        Param::Text(stream.id.as_str()),
    ]
}

/// The rows of a query that reads one stream between two sequences.
async fn stream_range<B: Backend>(
    backend: &B,
    what: &'static str,
    sql: &'static str,
    stream: &StreamId,
    from: Sequence,
    to: Option<Sequence>,
) -> Result<Vec<<B::Db as Database>::Row>, StoreError> {
    let [entity_type, id] = stream_key(stream);
    let to = to.map_or(i64::MAX, |to| bound(to.0));
    let params = [entity_type, id, Param::Int(bound(from.0)), Param::Int(to)];
    fetch(backend, what, sql, &params).await
}

/// The single integer of a query's first row, 0 without rows.
fn first_int<R: Columns>(rows: &[R], what: &str) -> Result<u64, StoreError> {
    match rows.first() {
        Some(row) => from_db(row.int(0)?, what),
        None => Ok(0),
    }
}

/// A read of one stream's rows between two sequences (arguments: stream type, stream id, first
/// and last sequence): its name in logs and its text.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamQuery {
    pub what: &'static str,
    pub sql: &'static str,
}

/// A stream's commands between two sequences ([`command_columns!`](super::rows::command_columns)).
pub(crate) const COMMANDS: StreamQuery = StreamQuery {
    what: "load_commands",
    sql: LOAD_COMMANDS,
};

/// A stream's archived commands between two sequences.
pub(crate) const ARCHIVED_COMMANDS: StreamQuery = StreamQuery {
    what: "load_archived_commands",
    sql: LOAD_ARCHIVED_COMMANDS,
};

/// A stream's events between two sequences ([`event_columns!`](super::rows::event_columns)).
pub(crate) const EVENTS: StreamQuery = StreamQuery {
    what: "read_stream_range",
    sql: READ_STREAM_RANGE,
};

/// A stream's archived events between two sequences.
pub(crate) const ARCHIVED_EVENTS: StreamQuery = StreamQuery {
    what: "read_archived_events",
    sql: READ_ARCHIVED_EVENTS,
};

/// [`Backend::stream_commands`] on the reader pool.
pub(crate) async fn pooled_stream_commands<B: Backend>(
    backend: &B,
    query: StreamQuery,
    stream: &StreamId,
    from: Sequence,
    to: Option<Sequence>,
) -> Result<Vec<StoredCommand>, StoreError> {
    let rows = stream_range(backend, query.what, query.sql, stream, from, to).await?;
    stream_commands(&rows, stream, from)
}

/// [`Backend::stream_events`] on the reader pool.
pub(crate) async fn pooled_stream_events<B: Backend>(
    backend: &B,
    query: StreamQuery,
    stream: &StreamId,
    from: Sequence,
    to: Option<Sequence>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = stream_range(backend, query.what, query.sql, stream, from, to).await?;
    stream_events(&rows, stream, from)
}

pub(crate) async fn last_sequence<B: Backend>(
    backend: &B,
    stream: &StreamId,
) -> Result<Sequence, StoreError> {
    let sql = LAST_SEQUENCE;
    let rows = fetch(backend, "last_sequence", sql, &stream_key(stream)).await?;
    first_int(&rows, "sequence").map(Sequence)
}

pub(crate) async fn find_receipt<B: Backend>(
    backend: &B,
    stream: &StreamId,
    message_id: Uuid,
) -> Result<Option<CommandReceipt>, StoreError> {
    let [entity_type, id] = stream_key(stream);
    let params = [entity_type, id, Param::Uuid(message_id)];
    let rows = fetch(backend, "find_receipt", B::READS.find_receipt, &params).await?;
    receipt(&rows, stream, message_id)
}

pub(crate) async fn read_all<B: Backend>(
    backend: &B,
    after: Position,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let params = [Param::Int(bound(after.0)), Param::Int(db_limit(limit))];
    let rows = fetch(backend, "read_all", READ_ALL, &params).await?;
    log_events(&rows)
}

pub(crate) async fn read_between<B: Backend>(
    backend: &B,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    after: Position,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let params = [
        Param::Time(time_bound(from)),
        Param::Time(time_bound(to)),
        Param::Int(bound(after.0)),
        Param::Int(db_limit(limit)),
    ];
    let rows = fetch(backend, "read_between", READ_BETWEEN, &params).await?;
    log_events(&rows)
}

pub(crate) async fn head<B: Backend>(backend: &B) -> Result<Position, StoreError> {
    let rows = fetch(backend, "head", HEAD, &[]).await?;
    first_int(&rows, "position").map(Position)
}

pub(crate) async fn get_entity<B: Backend>(
    backend: &B,
    stream: &StreamId,
) -> Result<Option<(Sequence, Vec<u8>)>, StoreError> {
    let sql = GET_ENTITY;
    let rows = fetch(backend, "get_entity", sql, &stream_key(stream)).await?;
    rows.first().map(entity_row).transpose()
}

pub(crate) async fn get_model<B: Backend>(
    backend: &B,
    model_type: &str,
    id: &EntityId,
) -> Result<Option<Vec<u8>>, StoreError> {
    let params = [Param::Text(model_type), Param::Text(id.as_str())];
    let rows = fetch(backend, "get_model", GET_MODEL, &params).await?;
    rows.first()
        .map(|row| row.text(0).map(String::into_bytes))
        .transpose()
}

/// The entity and the models read one by one, for backends without a query for them at once.
pub(crate) async fn get_entity_with_models<B: Backend>(
    backend: &B,
    stream: &StreamId,
    models: &[(&'static str, EntityId)],
) -> Result<EntityWithModels, StoreError> {
    let entity = get_entity(backend, stream).await?;
    let mut found = Vec::with_capacity(models.len());
    for (model_type, id) in models {
        found.push(get_model(backend, model_type, id).await?);
    }
    Ok((entity, found))
}

pub(crate) async fn list_models<B: Backend>(
    backend: &B,
    model_type: &str,
    page: Page,
) -> Result<Vec<(EntityId, Vec<u8>)>, StoreError> {
    let limit = Param::Int(db_limit(page.limit));
    let rows = match &page.after {
        Some(after) => {
            let params = [Param::Text(model_type), Param::Text(after.as_str()), limit];
            let sql = LIST_MODELS_AFTER;
            fetch(backend, "list_models", sql, &params).await?
        }
        None => {
            let params = [Param::Text(model_type), limit];
            let sql = LIST_MODELS_FIRST;
            fetch(backend, "list_models", sql, &params).await?
        }
    };
    rows.iter().map(model_row).collect()
}

pub(crate) async fn get_position<B: Backend>(
    backend: &B,
    handler: &str,
) -> Result<Position, StoreError> {
    let rows = fetch(
        backend,
        "get_position",
        GET_POSITION,
        &[Param::Text(handler)],
    )
    .await?;
    first_int(&rows, "position").map(Position)
}

pub(crate) async fn outbox_pending<B: Backend>(
    backend: &B,
    limit: usize,
) -> Result<Vec<PendingCommand>, StoreError> {
    let params = [Param::Int(db_limit(limit))];
    let rows = fetch(backend, "outbox_pending", OUTBOX_PENDING, &params).await?;
    rows.iter().map(outbox_row).collect()
}

pub(crate) async fn entity_types<B: Backend>(backend: &B) -> Result<Vec<String>, StoreError> {
    let rows = fetch(backend, "entity_types", ENTITY_TYPES, &[]).await?;
    rows.iter().map(|row| row.text(0)).collect()
}

pub(crate) async fn stream_ids<B: Backend>(
    backend: &B,
    entity_type: &str,
    page: Page,
) -> Result<Vec<EntityId>, StoreError> {
    if page.limit == 0 {
        return Ok(Vec::new());
    }
    let after = page.after.as_ref().map(EntityId::as_str);
    let params = [
        Param::Text(entity_type),
        Param::OptionalText(after),
        Param::Int(db_limit(page.limit)),
    ];
    let sql = match after {
        Some(_) => B::READS.stream_ids_after,
        None => B::READS.stream_ids_first,
    };
    let rows = fetch(backend, "stream_ids", sql, &params).await?;
    rows.iter()
        .map(|row| row.text(0).map(EntityId::from))
        .collect()
}
