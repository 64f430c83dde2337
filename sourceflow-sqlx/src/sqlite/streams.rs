//! Reads of one stream's log (replay's pages of commands, `verify`'s pages of events, a
//! stream's events for a reader) on `rusqlite` connections of their own.
//!
//! These reads return up to a thousand rows at a time. Through the sqlx reader pool each row
//! is copied value by value on sqlx's worker thread and handed over a channel; here a blocking
//! task steps the statement and maps each row where it lies (UUIDs and timestamps parsed from
//! the row's own text), which makes a long replay several times faster. The connections are
//! opened read-only, as the pool's are, and kept idle between reads (at most as many as the
//! pool has readers); a read that meets a busy or locked database is retried like any other.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sourceflow::message::StoredCommand;
use sourceflow::store::StoreError;
use sourceflow::{RecordedEvent, Sequence, StreamId};

use super::database::{open_reader, Database};
use super::error::classify_writer;
use crate::retry::Backoff;
use crate::sql::read::StreamQuery;
use crate::sql::rows::{
    checked_commands, checked_events, command_row_in, event_row_in, page_stream,
};
use crate::sql::values::bound;

/// What a read of one stream returns: how each row maps, and how the rows are checked.
pub(super) trait StreamRow: Sized + Send + 'static {
    /// A row of a query of `stream`.
    fn map(row: &rusqlite::Row<'_>, stream: &StreamId) -> Result<Self, StoreError>;
    /// The rows read from `from` on, checked dense.
    fn check(rows: Vec<Self>, stream: &StreamId, from: Sequence) -> Result<Vec<Self>, StoreError>;
}

impl StreamRow for StoredCommand {
    fn map(row: &rusqlite::Row<'_>, stream: &StreamId) -> Result<Self, StoreError> {
        command_row_in(row, stream)
    }

    fn check(rows: Vec<Self>, stream: &StreamId, from: Sequence) -> Result<Vec<Self>, StoreError> {
        checked_commands(rows, stream, from)
    }
}

impl StreamRow for RecordedEvent {
    fn map(row: &rusqlite::Row<'_>, stream: &StreamId) -> Result<Self, StoreError> {
        event_row_in(row, stream)
    }

    fn check(rows: Vec<Self>, stream: &StreamId, from: Sequence) -> Result<Vec<Self>, StoreError> {
        checked_events(rows, stream, from)
    }
}

/// The stream readers' connections.
pub(super) struct StreamReaders {
    database: Database,
    busy_timeout: Duration,
    idle: Mutex<Vec<rusqlite::Connection>>,
    max_idle: usize,
}

impl StreamReaders {
    pub(super) fn new(database: Database, busy_timeout: Duration, max_idle: usize) -> Self {
        Self {
            database,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
        }
    }

    /// One stream's rows of `query` between two sequences, mapped on a blocking thread and
    /// checked dense, retried on transient faults.
    pub(super) async fn read<T: StreamRow>(
        self: &Arc<Self>,
        backoff: &Backoff,
        query: StreamQuery,
        stream: &StreamId,
        from: Sequence,
        to: Option<Sequence>,
    ) -> Result<Vec<T>, StoreError> {
        let (first, last) = (bound(from.0), to.map_or(i64::MAX, |to| bound(to.0)));
        let run = || {
            let (readers, stream) = (self.clone(), stream.clone());
            async move {
                tokio::task::spawn_blocking(move || readers.rows(query, &stream, first, last))
                    .await
                    .map_err(|e| StoreError::Backend(Box::new(e)))?
            }
        };
        let rows = backoff.run("sqlite", query.what, run).await?;
        T::check(rows, stream, from)
    }

    /// Runs one read on an idle connection (or a new one), and keeps the connection for the
    /// next read unless it failed.
    fn rows<T: StreamRow>(
        &self,
        query: StreamQuery,
        stream: &StreamId,
        from: i64,
        to: i64,
    ) -> Result<Vec<T>, StoreError> {
        let idle = self.lock().pop();
        let connection = match idle {
            Some(connection) => connection,
            None => open_reader(&self.database, self.busy_timeout).map_err(classify_writer)?,
        };
        let rows = run(&connection, query, stream, from, to)?;
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push(connection);
        }
        Ok(rows)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<rusqlite::Connection>> {
        // The list holds no invariant a panicking reader could break.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The largest bounded read whose rows are allocated up front (a replay's page is 1,000).
const PRESIZED_ROWS: usize = 4_096;

/// Runs `query` for one stream on `connection`, mapping each row in place.
fn run<T: StreamRow>(
    connection: &rusqlite::Connection,
    query: StreamQuery,
    stream: &StreamId,
    from: i64,
    to: i64,
) -> Result<Vec<T>, StoreError> {
    let mut statement = connection
        .prepare_cached(query.sql)
        .map_err(classify_writer)?;
    let params = rusqlite::params![stream.entity_type, stream.id.as_str(), from, to];
    let stream = &page_stream(stream);
    let mut rows = statement.query(params).map_err(classify_writer)?;
    // A bounded read (a replay's page) has at most one row per sequence: sized once.
    let bounded = usize::try_from(to.saturating_sub(from).saturating_add(1)).unwrap_or(0);
    let mut mapped = Vec::with_capacity(if bounded <= PRESIZED_ROWS { bounded } else { 0 });
    while let Some(row) = rows.next().map_err(classify_writer)? {
        mapped.push(T::map(row, stream)?);
    }
    Ok(mapped)
}
