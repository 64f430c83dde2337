//! Plans made without statistics (a young schema, or for good on a server without autovacuum)
//! that a connection keeps as the tables grow still read one stream's few rows, not the
//! stream: the duplicate lookup (`find_receipt`, [`READS`]), explained with the generic plan
//! made while the schema was young and with a custom one, and `sf_commit_inline`'s stream-head
//! check and refused-write lookup (migration 17), by the buffers a commit touches, and the
//! load of an entity with its views' models (`get_entity_with_models`); and neither that load
//! nor a view batch's commit (migration 18) plans a statement once its connection has made its
//! plans, counted from the plans the server reports. Needs `SOURCEFLOW_PG_URL` when the tests are built
//! (ignored otherwise).

use super::queries::READS;

/// Rows the plan's table and index scans of `table` returned or removed (all tables: `None`),
/// and rows its joins removed (counted for every table), from the lines of
/// `EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF)`.
fn rows_touched(plan: &[String], table: Option<&str>) -> u64 {
    let number_after = |line: &str, key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    // The table of the scan the following lines belong to.
    let mut counted = true;
    plan.iter()
        .map(|line| {
            let scan = [
                "Seq Scan",
                "Index Scan",
                "Index Only Scan",
                "Bitmap Heap Scan",
            ]
            .iter()
            .any(|scan| line.contains(scan));
            if scan {
                counted = table.is_none_or(|t| line.contains(&format!(" on {t}")));
            } else if line.contains(" Scan on ") {
                // A subquery's (or a function's) rows: its filter removes rows already read.
                counted = false;
            }
            // Rows a table or an index gave (not a subquery's rows; a bitmap's rows are
            // counted once, from its table).
            let scanned = if scan && counted && !line.contains("Bitmap Index Scan") {
                let rows = number_after(line, "rows=").unwrap_or(0);
                rows * number_after(line, "loops=").unwrap_or(1)
            } else {
                0
            };
            let removed = if counted {
                number_after(line, "Rows Removed by Filter: ").unwrap_or(0)
                    + number_after(line, "Rows Removed by Index Recheck: ").unwrap_or(0)
            } else {
                0
            };
            scanned + removed + number_after(line, "Rows Removed by Join Filter: ").unwrap_or(0)
        })
        .sum()
}

#[test]
fn rows_are_counted_from_a_plan() {
    let plan = [
        "Nested Loop Left Join (actual rows=1 loops=1)",
        "  Join Filter: (e.command_sequence = c.sequence)",
        "  Rows Removed by Join Filter: 9",
        "  ->  Subquery Scan on c (actual rows=1 loops=1)",
        "        Rows Removed by Filter: 5",
        "        ->  Index Scan using sf_commands_pkey on sf_commands c (actual rows=1 loops=1)",
        "              Rows Removed by Filter: 10",
        "  ->  Index Scan using sf_events_by_command on sf_events e (actual rows=10 loops=2)",
        "  ->  Bitmap Heap Scan on sf_events (actual rows=3 loops=1)",
        "        Rows Removed by Index Recheck: 4",
        "        ->  Bitmap Index Scan on sf_events_by_command (actual rows=3 loops=1)",
    ]
    .map(String::from);
    assert_eq!(rows_touched(&plan, None), 9 + 1 + 10 + 20 + 3 + 4);
    assert_eq!(rows_touched(&plan, Some("sf_commands")), 9 + 1 + 10);
    assert_eq!(rows_touched(&plan, Some("sf_events")), 9 + 20 + 3 + 4);
}

/// A fresh schema with the store's tables, never analyzed, and a connection of its pool that
/// keeps generic plans (as a pooled connection does after a few calls).
struct Young {
    url: String,
    schema: String,
    store: super::PostgresStore,
    pool: sqlx::PgPool,
}

impl Young {
    async fn new(name: &str) -> (Self, Connection) {
        let url = std::env::var("SOURCEFLOW_PG_URL").expect("SOURCEFLOW_PG_URL");
        let schema = format!("sf_{name}_{}", std::process::id());
        let store = super::PostgresStore::connect_with_schema(&url, &schema)
            .await
            .expect("connect");
        let pool = store.pool().clone();
        let mut connection = pool.acquire().await.expect("a connection");
        run(&mut connection, "SET plan_cache_mode = force_generic_plan").await;
        let young = Self {
            url,
            schema,
            store,
            pool,
        };
        (young, connection)
    }

    /// Drops the schema (its connection given back first).
    async fn remove(self) {
        self.pool.close().await;
        let admin = sqlx::PgPool::connect(&self.url).await.expect("admin");
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&admin)
            .await
            .expect("drop the schema");
    }
}

type Connection = sqlx::pool::PoolConnection<sqlx::Postgres>;

/// Runs a statement of the test's own on `connection`.
async fn run(connection: &mut Connection, sql: &str) {
    sqlx::query(sql)
        .execute(&mut **connection)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The lines of an `EXPLAIN` run on `connection`.
async fn explained(connection: &mut Connection, sql: &str) -> Vec<String> {
    sqlx::query_scalar(sql)
        .fetch_all(&mut **connection)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Writes `per_stream` more commands, one event each, to each of the streams `s0` and `s1`
/// (type `T`), straight into the tables.
async fn write_commands(pool: &sqlx::PgPool, per_stream: i64) {
    sqlx::query(
        "INSERT INTO sf_commands (stream_type, stream_id, sequence, message_id, name, version, \
         correlation_id, created_at, payload) \
         SELECT 'T', 's' || (i % 2), \
                coalesce((SELECT max(sequence) FROM sf_commands WHERE stream_type = 'T' \
                           AND stream_id = 's' || (i % 2)), 0) + i / 2 + 1, \
                gen_random_uuid(), 'C', 1, gen_random_uuid(), now(), '{}' \
           FROM generate_series(0, 2 * $1 - 1) i",
    )
    .bind(per_stream)
    .execute(pool)
    .await
    .expect("commands");
    sqlx::query(
        "INSERT INTO sf_events (stream_type, stream_id, sequence, command_sequence, message_id, \
         name, version, correlation_id, created_at, payload) \
         SELECT c.stream_type, c.stream_id, c.sequence, c.sequence, gen_random_uuid(), 'E', 1, \
                c.correlation_id, c.created_at, '{}' FROM sf_commands c \
          WHERE NOT EXISTS (SELECT FROM sf_events e WHERE e.stream_type = c.stream_type \
                             AND e.stream_id = c.stream_id AND e.sequence = c.sequence) \
          ORDER BY c.sequence, c.stream_id",
    )
    .execute(pool)
    .await
    .expect("events");
}

#[tokio::test]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn a_receipt_is_found_without_reading_its_stream() {
    let (young, mut connection) = Young::new("receipt_lookup").await;
    let pool = young.pool.clone();
    // The plan a pooled connection keeps, made while the schema is young: two commands.
    write_commands(&pool, 1).await;
    run(
        &mut connection,
        &format!(
            "PREPARE receipt(text, text, uuid) AS {}",
            READS.find_receipt
        ),
    )
    .await;
    run(
        &mut connection,
        "EXECUTE receipt('T', 's1', gen_random_uuid())",
    )
    .await;
    // Then the streams grow to 2,000 commands each, still without statistics.
    write_commands(&pool, 1_999).await;
    let analyzed: Option<i64> = sqlx::query_scalar(
        "SELECT analyze_count + autoanalyze_count FROM pg_stat_user_tables \
         WHERE schemaname = $1 AND relname = 'sf_commands'",
    )
    .bind(&young.schema)
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

    for mode in ["force_generic_plan", "force_custom_plan"] {
        run(&mut connection, &format!("SET plan_cache_mode = {mode}")).await;
        for id in [middle, uuid::Uuid::nil(), uuid::Uuid::max()] {
            let plan: Vec<String> = explained(
                &mut connection,
                &format!(
                    "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) EXECUTE receipt('T', 's1', '{id}')"
                ),
            )
            .await;
            let plan_text = || format!("{mode}, message id {id}:\n{}", plan.join("\n"));
            // Every send with its own message id: one command's key, found or not.
            assert!(
                rows_touched(&plan, Some("sf_commands")) <= 1,
                "{}",
                plan_text()
            );
            // A duplicate, with the plan a pooled connection keeps: the command and its one
            // event. (A custom plan made without statistics may read the stream's events:
            // only for a command that was found, and only in a connection's first few
            // lookups, before it keeps the generic plan.)
            if mode == "force_generic_plan" {
                assert!(rows_touched(&plan, None) <= 2, "{}", plan_text());
            }
        }
    }
    drop(connection);
    // And the store answers with the receipt, or with none.
    let stream = sourceflow::StreamId::new("T", "s1");
    let receipt = sourceflow::store::Store::find_receipt(&young.store, &stream, middle)
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(receipt.sequence, sourceflow::Sequence(1000));
    assert_eq!(receipt.events.len(), 1);
    assert_eq!(receipt.events[0].sequence, sourceflow::Sequence(1000));
    for other in [uuid::Uuid::nil(), uuid::Uuid::max()] {
        let none = sourceflow::store::Store::find_receipt(&young.store, &stream, other)
            .await
            .expect("lookup");
        assert!(none.is_none(), "{other}");
    }
    let elsewhere = sourceflow::StreamId::new("T", "s0");
    let none = sourceflow::store::Store::find_receipt(&young.store, &elsewhere, middle)
        .await
        .expect("lookup");
    assert!(
        none.is_none(),
        "a message id is looked up in its own stream"
    );
    young.remove().await;
}

/// Buffers a statement touched (shared hits and reads, its nested statements' included), from
/// the first line of `EXPLAIN (ANALYZE, BUFFERS)` that reports them.
fn buffers(plan: &[String]) -> u64 {
    let Some(line) = plan.iter().find(|l| l.contains("Buffers: shared")) else {
        return 0;
    };
    ["hit=", "read="]
        .iter()
        .filter_map(|key| {
            let rest = &line[line.find(key)? + key.len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// `sf_commit_inline` with one event and nothing else, for stream `s1` at `expected`.
fn commit_inline_call(expected: i64) -> String {
    format!(
        "SELECT * FROM sf_commit_inline(1, 'T', 's1', {expected}, gen_random_uuid(), 'C', 1, \
         gen_random_uuid(), NULL, now(), '{{}}', '{{}}', ARRAY[gen_random_uuid()], ARRAY['E'], \
         ARRAY[1::bigint], ARRAY[gen_random_uuid()], ARRAY[NULL::uuid], ARRAY[now()], \
         ARRAY['{{}}'], '{{}}'::text[], '{{}}'::text[], '{{}}'::uuid[], '{{}}'::text[], \
         '{{}}'::bigint[], '{{}}'::uuid[], '{{}}'::uuid[], '{{}}'::timestamptz[], '{{}}'::text[], \
         '{{}}'::text[], '{{}}'::bigint[], '{{}}'::bigint[], '{{}}'::bigint[], '{{}}'::int[], \
         '{{}}'::text[], '{{}}'::text[], '{{}}'::text[], '{{}}'::int[], '{{}}'::text[], \
         '{{}}'::text[])"
    )
}

/// The commit function's stream-head check and its lookup after a refused write keep plans
/// made on a young schema, and those read a few index pages, not the stream.
#[tokio::test]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn a_commit_checks_its_stream_without_reading_it() {
    let (young, mut connection) = Young::new("commit_plans").await;
    let pool = young.pool.clone();
    write_commands(&pool, 1).await;
    // The plans, made while the schema is young: a commit at the head (1), then one at a
    // sequence the stream has moved past (refused, looked up).
    for (expected, status) in [(1, "ok"), (1, "conflict")] {
        let got: String = sqlx::query_scalar(&format!(
            "SELECT r_status FROM ({}) r",
            commit_inline_call(expected)
        ))
        .fetch_one(&mut *connection)
        .await
        .expect("commit");
        assert_eq!(got, status);
    }
    write_commands(&pool, 1_999).await;
    let head: i64 =
        sqlx::query_scalar("SELECT max(sequence) FROM sf_commands WHERE stream_id = 's1'")
            .fetch_one(&pool)
            .await
            .expect("head");
    for (expected, what) in [
        (head, "a commit at the head"),
        (head - 1, "a refused commit"),
    ] {
        let plan: Vec<String> = explained(
            &mut connection,
            &format!(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) {}",
                commit_inline_call(expected)
            ),
        )
        .await;
        // A stream of 2,000 commands read through the wrong index takes a buffer per row.
        assert!(
            buffers(&plan) < 150,
            "{what} in a stream of {head}: {}",
            plan.join("\n")
        );
    }
    drop(connection);
    young.remove().await;
}

/// A stream's first command reads its entity and the views' models it needs by their keys,
/// with the plan made while the schema was young, not every view model.
#[tokio::test]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn an_entity_is_loaded_with_its_models_without_reading_every_model() {
    let (young, mut connection) = Young::new("model_plans").await;
    let pool = young.pool.clone();
    run(
        &mut connection,
        &format!(
            "PREPARE load(text, text, text, text, text, text, text, text) AS {}",
            super::queries::get_entity_with_models(3)
        ),
    )
    .await;
    run(
        &mut connection,
        "EXECUTE load('T', 's1', 'V', 'm1', 'W', 'm2', 'V', 'm3')",
    )
    .await;
    sqlx::query(
        "INSERT INTO sf_view_models (model_type, model_id, state, updated_at) \
         SELECT 'V', 'm' || i, '{}', now() FROM generate_series(1, 5000) i",
    )
    .execute(&pool)
    .await
    .expect("models");
    let plan: Vec<String> = explained(
        &mut connection,
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) \
         EXECUTE load('T', 's1', 'V', 'm7', 'V', 'm4000', 'W', 'm7')",
    )
    .await;
    // The two models that exist and the one that does not: three lookups.
    assert!(
        rows_touched(&plan, Some("sf_view_models")) <= 3,
        "{}",
        plan.join("\n")
    );
    drop(connection);
    young.remove().await;
}

/// A scheduler's poll and a page of open schedules read what they return, with plans made
/// while the schema was young, not every pending schedule.
#[tokio::test]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn schedules_are_polled_and_paged_without_reading_them_all() {
    let (young, mut connection) = Young::new("schedule_plans").await;
    let pool = young.pool.clone();
    for (statement, sql, first) in [
        (
            "poll(timestamptz)",
            crate::sql::schedule::ANY_CLAIMABLE,
            "poll(now())",
        ),
        (
            "page(timestamptz, uuid, bigint)",
            super::schedule::PENDING_SCHEDULES,
            "page(NULL, NULL, 10)",
        ),
    ] {
        run(&mut connection, &format!("PREPARE {statement} AS {sql}")).await;
        run(&mut connection, &format!("EXECUTE {first}")).await;
    }
    // 2,000 schedules due in an hour or more, every other one ready then.
    sqlx::query(
        "INSERT INTO sf_schedules (id, state, due_at, ready_at, stream_type, stream_id, \
         message_id, name, version, correlation_id, created_at, payload) \
         SELECT gen_random_uuid(), 'pending', now() + interval '1 hour' + i * interval '1 s', \
                CASE WHEN i % 2 = 0 THEN now() + interval '1 hour' END, 'T', 's', \
                gen_random_uuid(), 'C', 1, gen_random_uuid(), now(), '{}' \
           FROM generate_series(1, 2000) i",
    )
    .execute(&pool)
    .await
    .expect("schedules");
    let (due, id): (chrono::DateTime<chrono::Utc>, uuid::Uuid) = sqlx::query_as(
        "SELECT due_at, id FROM sf_schedules ORDER BY due_at, id OFFSET 999 LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("the 1,000th schedule");
    let due = due.to_rfc3339();
    for mode in ["force_generic_plan", "force_custom_plan"] {
        run(&mut connection, &format!("SET plan_cache_mode = {mode}")).await;
        // A page's custom plan, made without statistics, may still read the open schedules
        // with a bitmap and sort them (a connection's first few pages, before it keeps the
        // generic plan); the poll's never scans.
        let pages = [
            ("page(NULL, NULL, 10)".to_owned(), 10),
            (format!("page('{due}', '{id}', 10)"), 10),
        ];
        let checked = std::iter::once(("poll(now())".to_owned(), 1))
            .chain(pages.into_iter().filter(|_| mode == "force_generic_plan"));
        for (execute, most) in checked {
            let plan: Vec<String> = explained(
                &mut connection,
                &format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) EXECUTE {execute}"),
            )
            .await;
            assert!(
                rows_touched(&plan, Some("sf_schedules")) <= most,
                "{mode}, {execute}:\n{}",
                plan.join("\n")
            );
        }
    }
    drop(connection);
    young.remove().await;
}

/// Saving an entity's state checks that its stream has no later command by the stream's last
/// command, not by reading the stream, with the plan made while the schema was young.
#[tokio::test]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn an_entity_state_is_saved_without_reading_its_stream() {
    let (young, mut connection) = Young::new("entity_plans").await;
    let pool = young.pool.clone();
    write_commands(&pool, 1).await;
    sqlx::query(
        "INSERT INTO sf_entities (entity_type, entity_id, version, state, updated_at) \
         VALUES ('T', 's1', 1, '{}', now())",
    )
    .execute(&pool)
    .await
    .expect("an entity");
    run(
        &mut connection,
        &format!(
            "PREPARE put(text, text, bigint, text, bigint) AS {}",
            super::queries::PUT_ENTITY_CAS
        ),
    )
    .await;
    run(&mut connection, "EXECUTE put('T', 's1', 1, '{}', 1)").await;
    write_commands(&pool, 1_999).await;
    // The generic plan a connection keeps (a custom one, made without statistics, may still
    // sort the stream's commands found through the message-id key: a connection's first few
    // saves). At the head, 2,000, over the stored 1,999.
    sqlx::query("UPDATE sf_entities SET version = 1999 WHERE entity_id = 's1'")
        .execute(&pool)
        .await
        .expect("the stored version");
    let plan: Vec<String> = explained(
        &mut connection,
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) EXECUTE put('T', 's1', 2000, '{}', 1999)",
    )
    .await;
    assert!(
        rows_touched(&plan, Some("sf_commands")) <= 1,
        "{}",
        plan.join("\n")
    );
    let saved: i64 = sqlx::query_scalar("SELECT version FROM sf_entities WHERE entity_id = 's1'")
        .fetch_one(&pool)
        .await
        .expect("the saved version");
    assert_eq!(saved, 2000);
    drop(connection);
    young.remove().await;
}

/// Counts the plans the server reports while `debug_print_plan` is on (a `plan:` notice each,
/// which sqlx hands to `tracing`) on the thread that installed it.
#[derive(Clone, Default)]
struct PlanNotices(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl PlanNotices {
    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PlanNotices {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "message" {
                    value.clone_into(&mut self.0);
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        if event.metadata().target() != "sqlx::postgres::notice" {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        if message.0.trim_matches('"').starts_with("plan:") {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Executions of a statement after which a connection has made the plans it keeps: custom
/// plans for the first five, then the generic one if it costs no more.
const KEEPS_ITS_PLANS: usize = 8;

/// Plans the server makes for one connection's statements, counted while it lasts.
struct PlanCount {
    notices: PlanNotices,
    _counting: tracing::subscriber::DefaultGuard,
}

impl PlanCount {
    /// Starts counting (on this thread, which must run the connection's statements).
    async fn start(connection: &mut Connection) -> Self {
        use tracing_subscriber::layer::SubscriberExt as _;

        run(connection, "SET client_min_messages = log").await;
        run(connection, "SET debug_print_plan = on").await;
        let notices = PlanNotices::default();
        let counting =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(notices.clone()));
        Self {
            notices,
            _counting: counting,
        }
    }

    /// The plans made since the start; checks first that a statement the connection has not
    /// run is counted.
    async fn stop(self, connection: &mut Connection) -> usize {
        let planned = self.notices.count();
        run(
            connection,
            &format!("SELECT '{}'::text", uuid::Uuid::new_v4()),
        )
        .await;
        assert!(
            self.notices.count() > planned,
            "the server's plan notices were not counted"
        );
        drop(self);
        run(connection, "RESET debug_print_plan").await;
        run(connection, "RESET client_min_messages").await;
        planned
    }
}

/// Commits a view batch as the store does (`COMMIT_PROJECTION`): handler `v` from `expected`
/// to `position`, putting `puts` (model ids of type `M`) and deleting `deletes`.
async fn commit_projection(
    connection: &mut Connection,
    expected: i64,
    position: i64,
    puts: &[&str],
    deletes: &[&str],
) -> bool {
    let texts = |n: usize, value: &str| vec![value.to_owned(); n];
    let none_text: Vec<String> = Vec::new();
    let (_, applied): (String, bool) = sqlx::query_as(super::queries::COMMIT_PROJECTION)
        .bind("v")
        .bind(expected)
        .bind(position)
        .bind(texts(puts.len(), "M"))
        .bind(puts)
        .bind(texts(puts.len(), "{}"))
        .bind(texts(deletes.len(), "M"))
        .bind(deletes)
        .bind(&none_text)
        .bind(&none_text)
        .bind(Vec::<uuid::Uuid>::new())
        .bind(&none_text)
        .bind(Vec::<i64>::new())
        .bind(Vec::<uuid::Uuid>::new())
        .bind(Vec::<uuid::Uuid>::new())
        .bind(Vec::<chrono::DateTime<chrono::Utc>>::new())
        .bind(&none_text)
        .fetch_one(&mut **connection)
        .await
        .expect("a projection commit");
    applied
}

/// A view batch (every follower's and catch-up's, and the views' part of every group commit)
/// is committed without planning a statement once its connection has its plans: before
/// migration 18, the delete of models was planned again on every call, even with nothing to
/// delete. Its writes still apply: models put and deleted, the position moved.
#[tokio::test]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn a_view_batch_is_committed_without_planning_a_statement() {
    let (young, mut connection) = Young::new("projection_plans").await;
    // As the store's own connections: each statement's plan left to the server.
    run(&mut connection, "RESET plan_cache_mode").await;
    let mut position = 0;
    for n in 0..KEEPS_ITS_PLANS {
        let id = format!("m{n}");
        assert!(commit_projection(&mut connection, position, position + 1, &[&id], &[]).await);
        position += 1;
    }
    let counting = PlanCount::start(&mut connection).await;
    for id in ["m8", "m9"] {
        assert!(commit_projection(&mut connection, position, position + 1, &[id], &[]).await);
        position += 1;
    }
    let planned = counting.stop(&mut connection).await;
    assert_eq!(planned, 0, "statements planned by two view batches");
    // A batch that deletes still deletes, and a stale position still refuses.
    assert!(commit_projection(&mut connection, position, position + 1, &[], &["m0", "m1"]).await);
    assert!(!commit_projection(&mut connection, position, position + 1, &["m0"], &[]).await);
    let models: Vec<String> =
        sqlx::query_scalar("SELECT model_id FROM sf_view_models ORDER BY model_id")
            .fetch_all(&mut *connection)
            .await
            .expect("the models");
    assert_eq!(models, ["m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"]);
    let stored: i64 = sqlx::query_scalar("SELECT position FROM sf_positions WHERE handler = 'v'")
        .fetch_one(&mut *connection)
        .await
        .expect("the position");
    assert_eq!(stored, position + 1);
    drop(connection);
    young.remove().await;
}

/// A stream's first command loads its entity and the views' models without planning a
/// statement once the connection has its plans: given the keys as arrays, the load was
/// planned on every call (longer than it ran).
#[tokio::test]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn an_entity_is_loaded_with_its_models_without_planning_a_statement() {
    let (young, mut connection) = Young::new("load_plans").await;
    // As the store's own connections: each statement's plan left to the server.
    run(&mut connection, "RESET plan_cache_mode").await;
    run(
        &mut connection,
        "INSERT INTO sf_view_models (model_type, model_id, state, updated_at) \
         SELECT 'V', 'm' || i, '{}', now() FROM generate_series(1, 10) i",
    )
    .await;
    let sql = super::queries::get_entity_with_models(2);
    let load = |n: usize| {
        sqlx::query(&sql)
            .bind("T")
            .bind(format!("s{n}"))
            .bind("V")
            .bind(format!("m{n}"))
            .bind("W")
            .bind(format!("m{n}"))
    };
    for n in 0..KEEPS_ITS_PLANS {
        load(n).fetch_all(&mut *connection).await.expect("a load");
    }
    let counting = PlanCount::start(&mut connection).await;
    let mut found = 0;
    for n in 8..10 {
        found += load(n)
            .fetch_all(&mut *connection)
            .await
            .expect("a load")
            .len();
    }
    let planned = counting.stop(&mut connection).await;
    assert_eq!(planned, 0, "statements planned by two loads");
    // Models m8 and m9 of type V exist; no entity, no model of type W.
    assert_eq!(found, 2);
    drop(connection);
    young.remove().await;
}
