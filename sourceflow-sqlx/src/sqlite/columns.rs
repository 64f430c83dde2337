//! How SQLite's columns hold the contract's values: UUIDs as text, timestamps as fixed-width
//! RFC 3339 UTC text, payloads as JSON text; and [`Columns`] over the readers' rows (sqlx) and
//! the writer's rows (rusqlite).

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use rusqlite::types::Value;
use sourceflow::store::StoreError;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

use crate::sql::rows::Columns;
use crate::sql::values::{corrupt, micros};

/// Timestamps as fixed-width UTC text, in whole microseconds (as every backend keeps them):
/// readable, and text order is time order. The nine fraction digits keep the width of the text
/// that files written before timestamps were truncated hold.
pub(super) fn time_text(t: &DateTime<Utc>) -> String {
    micros(*t).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// A time-range bound as text that compares with stored timestamps as the instants compare.
/// Text order is time order for the years 0000 to 9999 (a later year is written `+10000-...`,
/// which sorts first): a bound past 9999 (say, `DateTime::MAX_UTC` for "until the end") is the
/// last instant of 9999. A bound before year 0 sorts before every stored text, as it should.
pub(super) fn bound_text(t: &DateTime<Utc>) -> String {
    if t.year() > 9999 {
        "9999-12-31T23:59:59.999999999Z".to_owned()
    } else {
        time_text(t)
    }
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
