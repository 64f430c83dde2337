//! Running the writer's statements: each prepared once per connection and taken from its
//! cache after, with SQLite's errors classified as the store reports them.

use rusqlite::{Connection, Params};
use sourceflow::store::StoreError;

use super::error::classify_writer;

pub(super) fn db_err(e: rusqlite::Error) -> StoreError {
    classify_writer(e)
}

/// Runs `sql` (prepared once, then taken from the connection's cache) with `params`: the
/// number of rows it changed.
pub(super) fn execute(
    connection: &Connection,
    sql: &str,
    params: impl Params,
) -> Result<usize, rusqlite::Error> {
    connection.prepare_cached(sql)?.execute(params)
}

/// The single integer `sql` returns.
pub(super) fn scalar(
    connection: &Connection,
    sql: &str,
    params: impl Params,
) -> Result<i64, StoreError> {
    connection
        .prepare_cached(sql)
        .and_then(|mut statement| statement.query_row(params, |row| row.get(0)))
        .map_err(db_err)
}
