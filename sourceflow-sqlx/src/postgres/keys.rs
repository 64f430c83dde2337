//! A unit of work's new subject keys ([`UnitOfWork::keys`](sourceflow::store::UnitOfWork::keys)),
//! inserted in the unit's transaction. Units that carry keys (a subject's first use, rare)
//! commit through an explicit transaction of their own rather than the one-statement and group
//! paths.

use chrono::Utc;
use sourceflow::store::{NewKey, StoreError};
use sqlx::{PgConnection, Row};

use super::error::classify;
use super::queries::INSERT_KEY;
use crate::sql::keys::KEY_OF;
use crate::sql::values::micros;

/// Inserts `keys` in the transaction `tx`: `false` if a subject has another key already (a
/// concurrent first use committed first; the caller rolls back and the unit is retried with
/// that key). A concurrent insert of the same subject waits for the other transaction to end.
/// A forgotten subject keeps no key.
pub(super) async fn insert(tx: &mut PgConnection, keys: &[NewKey]) -> Result<bool, StoreError> {
    let now = micros(Utc::now());
    for new in keys {
        let key = new.key.to_text();
        sqlx::query(INSERT_KEY)
            .bind(&new.subject)
            .bind(&key)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        let stored: String = sqlx::query(KEY_OF)
            .bind(&new.subject)
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(classify)?;
        if !stored.is_empty() && stored != key {
            return Ok(false);
        }
    }
    Ok(true)
}
