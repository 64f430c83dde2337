//! How SQLite's columns hold the contract's values: UUIDs as text, timestamps as fixed-width
//! RFC 3339 UTC text, payloads as JSON text; and [`Columns`] over the readers' rows (sqlx) and
//! the writer's rows (rusqlite).

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::Value;
use sourceflow::store::StoreError;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

use crate::sql::rows::Columns;
use crate::sql::values::corrupt;

/// Timestamps as fixed-width UTC text: readable, and text order is time order.
pub(super) fn time_text(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("bad timestamp {text:?}: {e}")))
}

fn parse_uuid(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|e| StoreError::Corrupt(format!("bad uuid {text:?}: {e}")))
}

impl Columns for SqliteRow {
    fn text(&self, index: usize) -> Result<String, StoreError> {
        self.try_get(index).map_err(corrupt)
    }

    fn int(&self, index: usize) -> Result<i64, StoreError> {
        self.try_get(index).map_err(corrupt)
    }

    fn optional_int(&self, index: usize) -> Result<Option<i64>, StoreError> {
        self.try_get(index).map_err(corrupt)
    }

    fn uuid(&self, index: usize) -> Result<Uuid, StoreError> {
        parse_uuid(&self.text(index)?)
    }

    fn optional_uuid(&self, index: usize) -> Result<Option<Uuid>, StoreError> {
        let value: Option<String> = self.try_get(index).map_err(corrupt)?;
        value.as_deref().map(parse_uuid).transpose()
    }

    fn time(&self, index: usize) -> Result<DateTime<Utc>, StoreError> {
        parse_time(&self.text(index)?)
    }
}

/// A result row of the writer's connection read into owned values, so a query's rows can be
/// kept and mapped together.
pub(super) struct ValueRow(pub Vec<Value>);

impl ValueRow {
    fn value(&self, index: usize) -> Result<&Value, StoreError> {
        self.0
            .get(index)
            .ok_or_else(|| StoreError::Corrupt(format!("no column {index}")))
    }
}

/// A column that does not hold what the row mapping expects.
fn corrupt_value(index: usize, expected: &str, found: &Value) -> StoreError {
    StoreError::Corrupt(format!(
        "column {index}: expected {expected}, found {:?}",
        found.data_type()
    ))
}

impl Columns for ValueRow {
    fn text(&self, index: usize) -> Result<String, StoreError> {
        match self.value(index)? {
            Value::Text(text) => Ok(text.clone()),
            other => Err(corrupt_value(index, "text", other)),
        }
    }

    fn int(&self, index: usize) -> Result<i64, StoreError> {
        match self.value(index)? {
            Value::Integer(value) => Ok(*value),
            other => Err(corrupt_value(index, "an integer", other)),
        }
    }

    fn optional_int(&self, index: usize) -> Result<Option<i64>, StoreError> {
        match self.value(index)? {
            Value::Null => Ok(None),
            _ => self.int(index).map(Some),
        }
    }

    fn uuid(&self, index: usize) -> Result<Uuid, StoreError> {
        parse_uuid(&self.text(index)?)
    }

    fn optional_uuid(&self, index: usize) -> Result<Option<Uuid>, StoreError> {
        match self.value(index)? {
            Value::Null => Ok(None),
            _ => self.uuid(index).map(Some),
        }
    }

    fn time(&self, index: usize) -> Result<DateTime<Utc>, StoreError> {
        parse_time(&self.text(index)?)
    }
}
