//! Conversions between the contract's values and column values: unsigned integers in signed
//! 64-bit columns, read bounds and `LIMIT`s, timestamps at the microseconds both databases
//! keep, and payloads as JSON text.

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use sourceflow::store::StoreError;

/// Why a value could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// The column is a signed 64-bit integer.
    #[error("{what} {value} does not fit in a 64-bit signed column")]
    OutOfRange { what: &'static str, value: u64 },
    /// Payloads are stored as JSON text.
    #[error("{what} is not UTF-8 JSON text")]
    NotText { what: &'static str },
}

/// A `u64` as the `BIGINT`/`INTEGER` column value.
pub(crate) fn db_int(value: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Backend(Box::new(WriteError::OutOfRange { what, value })))
}

/// A read bound (a sequence or position to read from, after or up to) as a column value: no
/// stored value exceeds `i64::MAX`, so a larger bound reads exactly what `i64::MAX` reads
/// (nothing from or after it, everything up to it).
pub(crate) fn bound(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A timestamp as stored: truncated to whole microseconds (towards the past), the precision
/// SQLite's text and Postgres' `timestamptz` both keep exactly.
pub(crate) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}

/// A time-range bound as a column value: the first whole microsecond at or after `t`. A stored
/// timestamp (whole microseconds) is at or after `t` exactly when it is at or after this, so
/// `from <= timestamp < to` selects the same events as with the exact bounds.
pub(crate) fn time_bound(t: DateTime<Utc>) -> DateTime<Utc> {
    let down = micros(t);
    if down == t {
        return t;
    }
    down.checked_add_signed(TimeDelta::microseconds(1))
        .unwrap_or(down)
}

/// A `LIMIT` value: anything beyond `i64::MAX` means "no limit" anyway.
pub(crate) fn db_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A stored non-negative integer back as `u64`.
pub(crate) fn from_db(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what}: {value}")))
}

/// A JSON payload as the text bound to a payload parameter.
pub(crate) fn payload_text<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str, StoreError> {
    std::str::from_utf8(bytes)
        .map_err(|_| StoreError::Backend(Box::new(WriteError::NotText { what })))
}

/// Maps a column decoding error to [`StoreError::Corrupt`].
pub(crate) fn corrupt(err: sqlx::Error) -> StoreError {
    StoreError::Corrupt(err.to_string())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn bounds_past_any_stored_value_clamp() {
        assert_eq!(bound(7), 7);
        assert_eq!(bound(i64::MAX as u64), i64::MAX);
        assert_eq!(bound(u64::MAX), i64::MAX);
    }

    #[test]
    fn timestamps_keep_whole_microseconds() {
        let second = Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap();
        let at = |nanos: u32| second.with_nanosecond(nanos).unwrap();
        assert_eq!(micros(at(123_456_789)), at(123_456_000));
        assert_eq!(micros(at(123_456_000)), at(123_456_000));
        // Before 1970 as after: towards the past.
        assert!(micros(at(999_999_999)) <= at(999_999_999));
        assert_eq!(time_bound(at(123_456_001)), at(123_457_000));
        assert_eq!(time_bound(at(123_456_000)), at(123_456_000));
        assert_eq!(
            time_bound(at(999_999_500)),
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap()
        );
    }
}
