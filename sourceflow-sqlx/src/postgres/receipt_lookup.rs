//! The duplicate lookup reads the command and its events, however long the stream and
//! whatever statistics the server has: `find_receipt` ([`READS`]) explained on a young schema
//! (its tables never analyzed) with the generic plan a pooled connection keeps, and with a
//! custom one. Needs `SOURCEFLOW_PG_URL` when the tests are built (ignored otherwise).

use super::queries::READS;

/// Rows the plan's scans returned or removed, and rows its joins removed, from the lines of
/// `EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF)`.
fn rows_touched(plan: &[String]) -> u64 {
    let number_after = |line: &str, key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    plan.iter()
        .map(|line| {
            let scanned = if line.contains(" Scan ") {
                let rows = number_after(line, "rows=").unwrap_or(0);
                rows * number_after(line, "loops=").unwrap_or(1)
            } else {
                0
            };
            scanned
                + number_after(line, "Rows Removed by Filter: ").unwrap_or(0)
                + number_after(line, "Rows Removed by Join Filter: ").unwrap_or(0)
        })
        .sum()
}

#[test]
fn rows_are_counted_from_a_plan() {
    let plan = [
        "Nested Loop Left Join (actual rows=1 loops=1)",
        "  Join Filter: (e.command_sequence = c.sequence)",
        "  Rows Removed by Join Filter: 9",
        "  ->  Index Scan using sf_commands_pkey on sf_commands c (actual rows=1 loops=1)",
        "        Rows Removed by Filter: 10",
        "  ->  Index Scan using sf_events_by_command on sf_events e (actual rows=10 loops=2)",
    ]
    .map(String::from);
    assert_eq!(rows_touched(&plan), 9 + 1 + 10 + 20);
}

#[tokio::test]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn a_receipt_is_found_without_reading_its_stream() {
    let url = std::env::var("SOURCEFLOW_PG_URL").expect("SOURCEFLOW_PG_URL");
    let schema = format!("sf_receipt_lookup_{}", std::process::id());
    let store = super::PostgresStore::connect_with_schema(&url, &schema)
        .await
        .expect("connect");
    let pool = store.pool().clone();
    // Two streams of 2,000 commands, one event each, written straight into the tables.
    sqlx::query(
        "INSERT INTO sf_commands (stream_type, stream_id, sequence, message_id, name, version, \
         correlation_id, created_at, payload) \
         SELECT 'T', 's' || (i % 2), i / 2 + 1, gen_random_uuid(), 'C', 1, gen_random_uuid(), \
                now(), '{}' FROM generate_series(0, 3999) i",
    )
    .execute(&pool)
    .await
    .expect("commands");
    sqlx::query(
        "INSERT INTO sf_events (stream_type, stream_id, sequence, command_sequence, message_id, \
         name, version, correlation_id, created_at, payload) \
         SELECT stream_type, stream_id, sequence, sequence, gen_random_uuid(), 'E', 1, \
                correlation_id, created_at, '{}' FROM sf_commands ORDER BY sequence, stream_id",
    )
    .execute(&pool)
    .await
    .expect("events");
    let analyzed: Option<i64> = sqlx::query_scalar(
        "SELECT analyze_count + autoanalyze_count FROM pg_stat_user_tables \
         WHERE schemaname = $1 AND relname = 'sf_commands'",
    )
    .bind(&schema)
    .fetch_optional(&pool)
    .await
    .expect("table statistics");
    assert_eq!(analyzed, Some(0), "the tables are young: never analyzed");
    let middle: uuid::Uuid = sqlx::query_scalar(
        "SELECT message_id FROM sf_commands WHERE stream_id = 's1' AND sequence = 1000",
    )
    .fetch_one(&pool)
    .await
    .expect("a message id");

    let mut connection = pool.acquire().await.expect("a connection");
    sqlx::query(&format!(
        "PREPARE receipt(text, text, uuid) AS {}",
        READS.find_receipt
    ))
    .execute(&mut *connection)
    .await
    .expect("prepare");
    for mode in ["force_generic_plan", "force_custom_plan"] {
        sqlx::query(&format!("SET plan_cache_mode = {mode}"))
            .execute(&mut *connection)
            .await
            .expect("plan cache mode");
        for (id, found) in [(middle, 1), (uuid::Uuid::nil(), 0)] {
            let plan: Vec<String> = sqlx::query_scalar(&format!(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) EXECUTE receipt('T', 's1', '{id}')"
            ))
            .fetch_all(&mut *connection)
            .await
            .expect("explain");
            // The command and its one event, or nothing.
            assert!(
                rows_touched(&plan) <= 2 * found,
                "{mode}, {found} command(s) to find: {}",
                plan.join("\n")
            );
        }
    }
    sqlx::query("DEALLOCATE receipt")
        .execute(&mut *connection)
        .await
        .expect("deallocate");
    drop(connection);
    // And the store answers with the receipt.
    let stream = sourceflow::StreamId::new("T", "s1");
    let receipt = sourceflow::store::Store::find_receipt(&store, &stream, middle)
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(receipt.sequence, sourceflow::Sequence(1000));
    assert_eq!(receipt.events.len(), 1);
    pool.close().await;
    let admin = sqlx::PgPool::connect(&url).await.expect("admin");
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .expect("drop the schema");
}
