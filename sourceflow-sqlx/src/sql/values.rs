//! Conversions between the contract's values and column values: unsigned integers in signed
//! 64-bit columns, `LIMIT`s, and payloads as JSON text.

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
