//! How SQLite's columns hold the contract's values: UUIDs as text, timestamps as fixed-width
//! RFC 3339 UTC text, payloads as JSON text; and [`Columns`] over the readers' rows (sqlx), the
//! stream readers' rows and the writer's rows (rusqlite).

use std::borrow::Cow;

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use rusqlite::types::{Value, ValueRef};
use sourceflow::store::StoreError;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

use crate::sql::rows::{message_name, Columns};
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
    parse_time_bytes(text.as_bytes())
}

/// A stored timestamp from a column's bytes: the fixed-width text [`time_text`] writes is read
/// without a UTF-8 check or a general RFC 3339 parser; any other text goes through both.
fn parse_time_bytes(bytes: &[u8]) -> Result<DateTime<Utc>, StoreError> {
    if let Some(time) = parse_time_text(bytes) {
        return Ok(time);
    }
    let text = String::from_utf8_lossy(bytes);
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("bad timestamp {text:?}: {e}")))
}

/// The text [`time_text`] writes (`2026-12-06T10:43:16.123456000Z`), read without a general
/// RFC 3339 parser; `None` for any other shape, which [`parse_time`] then reads in full.
fn parse_time_text(text: &[u8]) -> Option<DateTime<Utc>> {
    let [y0, y1, y2, y3, b'-', mo0, mo1, b'-', d0, d1, b'T', h0, h1, b':', mi0, mi1, b':', s0, s1, b'.', f @ .., b'Z'] =
        text
    else {
        return None;
    };
    let digits = |bytes: &[u8]| -> Option<u32> {
        bytes.iter().try_fold(0u32, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    };
    if f.len() != 9 {
        return None;
    }
    let year = i32::try_from(digits(&[*y0, *y1, *y2, *y3])?).ok()?;
    let date = chrono::NaiveDate::from_ymd_opt(year, digits(&[*mo0, *mo1])?, digits(&[*d0, *d1])?)?;
    let time = date.and_hms_nano_opt(
        digits(&[*h0, *h1])?,
        digits(&[*mi0, *mi1])?,
        digits(&[*s0, *s1])?,
        digits(f)?,
    )?;
    Some(time.and_utc())
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

/// A row of a stream reader's query, read in place: text columns are parsed from the row's
/// own buffer, with no copy for UUIDs and timestamps.
impl Columns for rusqlite::Row<'_> {
    fn text(&self, index: usize) -> Result<String, StoreError> {
        row_text(self, index).map(str::to_owned)
    }

    fn int(&self, index: usize) -> Result<i64, StoreError> {
        match row_value(self, index)? {
            ValueRef::Integer(value) => Ok(value),
            other => Err(corrupt_value(index, "an integer", &Value::from(other))),
        }
    }

    fn optional_int(&self, index: usize) -> Result<Option<i64>, StoreError> {
        match row_value(self, index)? {
            ValueRef::Null => Ok(None),
            _ => self.int(index).map(Some),
        }
    }

    fn uuid(&self, index: usize) -> Result<Uuid, StoreError> {
        match row_value(self, index)? {
            ValueRef::Text(bytes) => Uuid::try_parse_ascii(bytes).map_err(|e| {
                StoreError::Corrupt(format!(
                    "bad uuid {:?}: {e}",
                    String::from_utf8_lossy(bytes)
                ))
            }),
            other => Err(corrupt_value(index, "text", &Value::from(other))),
        }
    }

    fn optional_uuid(&self, index: usize) -> Result<Option<Uuid>, StoreError> {
        match row_value(self, index)? {
            ValueRef::Null => Ok(None),
            _ => self.uuid(index).map(Some),
        }
    }

    /// Read from the row's bytes ([`parse_time_bytes`]).
    fn time(&self, index: usize) -> Result<DateTime<Utc>, StoreError> {
        match row_value(self, index)? {
            ValueRef::Text(bytes) => parse_time_bytes(bytes),
            other => Err(corrupt_value(index, "text", &Value::from(other))),
        }
    }

    fn name(&self, index: usize) -> Result<Cow<'static, str>, StoreError> {
        row_text(self, index).map(message_name)
    }

    /// The payload's bytes as stored: JSON decoding checks them, so they are not checked as
    /// UTF-8 here.
    fn bytes(&self, index: usize) -> Result<Vec<u8>, StoreError> {
        match row_value(self, index)? {
            ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Ok(bytes.to_vec()),
            other => Err(corrupt_value(index, "text", &Value::from(other))),
        }
    }
}

fn row_value<'a>(row: &'a rusqlite::Row<'_>, index: usize) -> Result<ValueRef<'a>, StoreError> {
    row.get_ref(index)
        .map_err(|e| StoreError::Corrupt(format!("column {index}: {e}")))
}

fn row_text<'a>(row: &'a rusqlite::Row<'_>, index: usize) -> Result<&'a str, StoreError> {
    match row_value(row, index)? {
        ValueRef::Text(bytes) => std::str::from_utf8(bytes)
            .map_err(|e| StoreError::Corrupt(format!("column {index}: {e}"))),
        other => Err(corrupt_value(index, "text", &Value::from(other))),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// Stored timestamps read back exactly through the fixed-width fast path, and any other
    /// RFC 3339 text still reads.
    #[test]
    fn stored_times_read_back_exactly() {
        let times = [
            Utc.with_ymd_and_hms(2026, 12, 6, 10, 43, 16).unwrap(),
            Utc.timestamp_micros(1_780_000_000_123_456).unwrap(),
            Utc.timestamp_micros(0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
        ];
        for time in times {
            let text = time_text(&time);
            assert_eq!(parse_time_text(text.as_bytes()), Some(time), "{text}");
            assert_eq!(parse_time(&text).unwrap(), time);
        }
        let other = "2026-12-06T11:43:16.5+01:00";
        assert_eq!(parse_time_text(other.as_bytes()), None);
        assert_eq!(
            parse_time(other).unwrap(),
            Utc.timestamp_micros(1_796_553_796_500_000).unwrap()
        );
        assert!(parse_time_text(b"2026-13-06T10:43:16.123456000Z").is_none());
        assert!(parse_time("2026-13-06T10:43:16.123456000Z").is_err());
    }
}
