//! Scheduled commands on the writer thread: every statement runs in the writer's `BEGIN
//! IMMEDIATE` transaction, so a claim and a cancel of one schedule, from this process or
//! another one on the file, are serialised by the file's write lock.

use rusqlite::types::Value;
use rusqlite::{params, Connection, Params};
use sourceflow::schedule::{
    CancelOutcome, NewSchedule, ScheduleChanges, ScheduleId, ScheduleState,
};
use sourceflow::store::{StoreError, UnitOfWork};

use super::columns::{bound_text, time_text, ValueRow};
use super::commit::{commit, Metadata};
use super::statement::{db_err, execute};
use crate::sql::schedule::{schedule_columns, schedule_row};
use crate::sql::values::{db_limit, payload_text};
use crate::sql::write::Written;
use crate::sql::write::{ScheduleAnswer, ScheduleWrite};

const INSERT_SCHEDULE: &str = "INSERT INTO sf_schedules (id, state, due_at, ready_at, \
     stream_type, stream_id, message_id, name, version, correlation_id, causation_id, \
     created_at, payload) VALUES (?1, 'pending', ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
     ON CONFLICT (id) DO NOTHING";

const CANCEL_SCHEDULE: &str = "UPDATE sf_schedules SET state = 'cancelled', ready_at = NULL, \
     settled_at = ?2 WHERE id = ?1 AND state = 'pending'";

const SCHEDULE_STATE: &str = "SELECT state FROM sf_schedules WHERE id = ?1";

const CLAIM_SCHEDULES: &str = concat!(
    "UPDATE sf_schedules SET state = 'firing', ready_at = ?2, attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM sf_schedules WHERE ready_at IS NOT NULL AND ready_at <= ?1 \
     ORDER BY ready_at LIMIT ?3) RETURNING ",
    schedule_columns!("payload")
);

const MARK_FIRED: &str = "UPDATE sf_schedules SET state = 'fired', ready_at = NULL, \
     settled_at = ?2 WHERE id = ?1 AND state = 'firing'";

const RELEASE_CLAIM: &str =
    "UPDATE sf_schedules SET ready_at = ?2 WHERE id = ?1 AND state = 'firing'";

const GET_SCHEDULE: &str = concat!(
    "SELECT ",
    schedule_columns!("payload"),
    " FROM sf_schedules WHERE id = ?1"
);

const PENDING_SCHEDULES: &str = concat!(
    "SELECT ",
    schedule_columns!("payload"),
    " FROM sf_schedules WHERE state IN ('pending', 'firing') AND (due_at, id) > (?1, ?2) \
     ORDER BY due_at, id LIMIT ?3"
);

/// Runs one scheduling write inside the writer's transaction.
pub(super) fn apply(connection: &Connection, write: &ScheduleWrite) -> Result<Written, StoreError> {
    let answer = match write {
        ScheduleWrite::Commit(commit) => {
            ScheduleAnswer::Receipt(commit_scheduled(connection, &commit.0, &commit.1)?)
        }
        ScheduleWrite::Add(schedules) => {
            insert(connection, schedules)?;
            ScheduleAnswer::Done
        }
        ScheduleWrite::Cancel { id, now } => {
            let changed = execute(
                connection,
                CANCEL_SCHEDULE,
                params![id.to_string(), time_text(now)],
            )
            .map_err(db_err)?;
            if changed == 1 {
                ScheduleAnswer::Cancel(CancelOutcome::Cancelled)
            } else {
                ScheduleAnswer::Cancel(CancelOutcome::of_state(state(connection, *id)?))
            }
        }
        ScheduleWrite::Claim {
            now,
            lease_until,
            limit,
        } => ScheduleAnswer::Records(query(
            connection,
            CLAIM_SCHEDULES,
            params![bound_text(now), bound_text(lease_until), db_limit(*limit)],
        )?),
        ScheduleWrite::MarkFired { ids, now } => {
            let now = time_text(now);
            for id in ids {
                execute(connection, MARK_FIRED, params![id.to_string(), now]).map_err(db_err)?;
            }
            ScheduleAnswer::Done
        }
        ScheduleWrite::Release { ids, at } => {
            let at = bound_text(at);
            for id in ids {
                execute(connection, RELEASE_CLAIM, params![id.to_string(), at]).map_err(db_err)?;
            }
            ScheduleAnswer::Done
        }
        ScheduleWrite::Get(id) => {
            ScheduleAnswer::Records(query(connection, GET_SCHEDULE, params![id.to_string()])?)
        }
        ScheduleWrite::Pending { after, limit } => {
            let (due, id) = match after {
                Some((due, id)) => (time_text(due), id.to_string()),
                None => (String::new(), String::new()),
            };
            ScheduleAnswer::Records(query(
                connection,
                PENDING_SCHEDULES,
                params![due, id, db_limit(*limit)],
            )?)
        }
    };
    Ok(Written::Schedules(answer))
}

/// A unit of work and its schedule changes; a duplicate or conflict writes none of them.
fn commit_scheduled(
    connection: &Connection,
    unit: &UnitOfWork,
    changes: &ScheduleChanges,
) -> Result<sourceflow::CommandReceipt, StoreError> {
    let receipt = commit(connection, unit)?;
    if receipt.duplicate {
        return Ok(receipt);
    }
    insert(connection, &changes.add)?;
    let now = time_text(&chrono::Utc::now());
    for id in &changes.cancel {
        execute(connection, CANCEL_SCHEDULE, params![id.to_string(), now]).map_err(db_err)?;
    }
    Ok(receipt)
}

fn insert(connection: &Connection, schedules: &[NewSchedule]) -> Result<(), StoreError> {
    for schedule in schedules {
        let envelope = &schedule.command.envelope;
        let meta = Metadata::of(envelope);
        execute(
            connection,
            INSERT_SCHEDULE,
            params![
                schedule.id.to_string(),
                bound_text(&schedule.due),
                &*envelope.stream.entity_type,
                envelope.stream.id.as_str(),
                meta.message_id,
                meta.name,
                meta.version,
                meta.correlation_id,
                meta.causation_id,
                meta.created_at,
                payload_text(&schedule.command.payload, "scheduled command payload")?,
            ],
        )
        .map_err(db_err)?;
    }
    Ok(())
}

fn state(connection: &Connection, id: ScheduleId) -> Result<Option<ScheduleState>, StoreError> {
    let rows = query_values(connection, SCHEDULE_STATE, params![id.to_string()])?;
    match rows.first().and_then(|row| row.0.first()) {
        None => Ok(None),
        Some(Value::Text(text)) => ScheduleState::parse(text)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown schedule state {text:?}"))),
        Some(other) => Err(StoreError::Corrupt(format!(
            "schedule state: {:?}",
            other.data_type()
        ))),
    }
}

fn query(
    connection: &Connection,
    sql: &str,
    params: impl Params,
) -> Result<Vec<sourceflow::schedule::ScheduleRecord>, StoreError> {
    query_values(connection, sql, params)?
        .iter()
        .map(schedule_row)
        .collect()
}

fn query_values(
    connection: &Connection,
    sql: &str,
    params: impl Params,
) -> Result<Vec<ValueRow>, StoreError> {
    connection
        .prepare_cached(sql)
        .and_then(|mut statement| {
            let columns = statement.column_count();
            statement
                .query_map(params, |row| {
                    (0..columns)
                        .map(|index| row.get::<_, Value>(index))
                        .collect::<Result<Vec<_>, _>>()
                        .map(ValueRow)
                })?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(db_err)
}
