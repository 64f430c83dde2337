//! A Postgres database migrated by an earlier release opens with this release's store: schema
//! v5 (migrations 1 to 5; the files of 2 to 5, which only replaced functions, are kept in
//! `tests/fixtures/postgres-v5` as that release shipped them) is upgraded in place, its
//! commands, events, states, positions and outbox read back as written, new commands commit
//! after them, and the upgraded schema is the one a new database gets.
//!
//! Ignored unless `SOURCEFLOW_PG_URL` is set when the tests are built.

mod support;

use std::borrow::Cow;
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use sourceflow::message::{NewEvent, StoredCommand};
use sourceflow::store::{
    InlineProjection, ModelWrite, Page, Store, StoreAdmin, StoreError, UnitOfWork,
};
use sourceflow::{EntityId, Envelope, Position, Sequence, StreamId};
use sourceflow_sqlx::postgres::{UnknownMigration, MIGRATOR, RETIRED};
use sourceflow_sqlx::PostgresStore;
use sourceflow_tests::backends::pg_url;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor};
use uuid::Uuid;

use support::envelope;

/// A new, empty schema and a pool whose connections use it.
async fn schema_pool(url: &str, prefix: &str) -> (PgPool, String) {
    let schema = format!("{prefix}_{}", Uuid::now_v7().simple());
    let options: PgConnectOptions = url.parse().expect("SOURCEFLOW_PG_URL");
    let mut connection = options.connect().await.expect("connect");
    connection
        .execute(format!("CREATE SCHEMA \"{schema}\"").as_str())
        .await
        .expect("create schema");
    connection.close().await.expect("close");
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.options([("search_path", schema.as_str())]))
        .await
        .expect("pool");
    (pool, schema)
}

async fn drop_schema(url: &str, schema: &str) {
    if let Ok(mut connection) = sqlx::PgConnection::connect(url).await {
        // Generated above: a plain identifier.
        let _ = connection
            .execute(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE").as_str())
            .await;
        let _ = connection.close().await;
    }
}

/// The migrations of the release before the squash: this release's migration 1 (its file is
/// unchanged) and the retired 2 to 5 as that release shipped them.
async fn version_5_migrator() -> Migrator {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/postgres-v5");
    let retired = Migrator::new(fixtures).await.expect("the v5 fixtures");
    let first = MIGRATOR
        .iter()
        .find(|m| m.version == 1)
        .expect("migration 1")
        .clone();
    let migrations: Vec<_> = std::iter::once(first)
        .chain(retired.iter().cloned())
        .collect();
    assert_eq!(
        migrations.iter().map(|m| m.version).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

fn at(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, second)
        .single()
        .expect("a time")
}

/// The rows a v5 store wrote: stream `up.Account/a` with two commands (two events, then one)
/// and its entity state; stream `up.Account/b` with one command and one event between them in
/// the global log; a view's model and position; a follow-up command in the outbox.
const V5_ROWS: &str = r#"
INSERT INTO sf_commands (stream_type, stream_id, sequence, message_id, name, version,
                         correlation_id, causation_id, created_at, payload) VALUES
 ('up.Account', 'a', 1, '00000000-0000-7000-8000-00000000000a', 'up.Open', 1,
  '00000000-0000-7000-8000-0000000000c1', NULL, '2024-05-01 12:00:01+00',
  '{"owner": "Zoë", "limit": 1.5}'),
 ('up.Account', 'b', 1, '00000000-0000-7000-8000-00000000000b', 'up.Open', 1,
  '00000000-0000-7000-8000-0000000000c2', NULL, '2024-05-01 12:00:02+00',
  '{"owner": "Bo", "limit": 2}'),
 ('up.Account', 'a', 2, '00000000-0000-7000-8000-00000000000c', 'up.Deposit', 1,
  '00000000-0000-7000-8000-0000000000c1', '00000000-0000-7000-8000-00000000000a',
  '2024-05-01 12:00:03+00', '{"amount": 100}');
INSERT INTO sf_events (stream_type, stream_id, sequence, command_sequence, message_id, name,
                       version, correlation_id, causation_id, created_at, payload) VALUES
 ('up.Account', 'a', 1, 1, '00000000-0000-7000-8000-0000000000e1', 'up.Opened', 1,
  '00000000-0000-7000-8000-0000000000c1', '00000000-0000-7000-8000-00000000000a',
  '2024-05-01 12:00:01+00', '{"owner": "Zoë"}'),
 ('up.Account', 'a', 2, 1, '00000000-0000-7000-8000-0000000000e2', 'up.LimitSet', 1,
  '00000000-0000-7000-8000-0000000000c1', '00000000-0000-7000-8000-00000000000a',
  '2024-05-01 12:00:01+00', '{"limit": 1.5}'),
 ('up.Account', 'b', 1, 1, '00000000-0000-7000-8000-0000000000e3', 'up.Opened', 1,
  '00000000-0000-7000-8000-0000000000c2', '00000000-0000-7000-8000-00000000000b',
  '2024-05-01 12:00:02+00', '{"owner": "Bo"}'),
 ('up.Account', 'a', 3, 2, '00000000-0000-7000-8000-0000000000e4', 'up.Deposited', 1,
  '00000000-0000-7000-8000-0000000000c1', '00000000-0000-7000-8000-00000000000c',
  '2024-05-01 12:00:03+00', '{"amount": 100, "balance": 100}');
INSERT INTO sf_entities (entity_type, entity_id, version, state)
 VALUES ('up.Account', 'a', 2, '{"owner": "Zoë", "balance": 100}');
INSERT INTO sf_view_models (model_type, model_id, state)
 VALUES ('up.Summary', 'a', '{"deposits": 1}');
INSERT INTO sf_positions (handler, position) VALUES ('up.SummaryView', 4);
INSERT INTO sf_outbox (stream_type, stream_id, message_id, name, version, correlation_id,
                       causation_id, created_at, payload)
 VALUES ('up.Account', 'b', '00000000-0000-7000-8000-0000000000f1', 'up.Notify', 1,
         '00000000-0000-7000-8000-0000000000c1', '00000000-0000-7000-8000-00000000000c',
         '2024-05-01 12:00:03+00', '{"text": "hi"}');
"#;

fn id(n: u32) -> Uuid {
    Uuid::parse_str(&format!("00000000-0000-7000-8000-{n:012x}")).expect("a uuid")
}

fn json_of(payload: &[u8]) -> Value {
    serde_json::from_slice(payload).expect("a JSON payload")
}

/// The functions and the columns of the tables in `schema`, with the schema's name taken out.
async fn schema_shape(pool: &PgPool, schema: &str) -> (Vec<String>, Vec<String>) {
    let functions: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_functiondef(p.oid) FROM pg_proc p \
         WHERE p.pronamespace = $1::regnamespace ORDER BY p.proname",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .expect("functions");
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' ', table_name, ordinal_position, column_name, data_type, \
                is_nullable, collation_name, column_default, is_identity) \
         FROM information_schema.columns WHERE table_schema = $1 \
         ORDER BY table_name, ordinal_position",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .expect("columns");
    let unnamed = |text: String| text.replace(schema, "<schema>");
    (
        functions.into_iter().map(unnamed).collect(),
        columns.into_iter().map(unnamed).collect(),
    )
}

/// The functions of `schema` by name.
async fn function_names(pool: &PgPool, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT proname::text FROM pg_proc WHERE pronamespace = $1::regnamespace ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .expect("function names")
}

async fn applied_versions(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(pool)
        .await
        .expect("applied migrations")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn a_version_5_database_is_upgraded_and_keeps_its_data() {
    let url = pg_url();
    let (old, schema) = schema_pool(&url, "sf_up5").await;
    let (fresh_pool, fresh_schema) = schema_pool(&url, "sf_upnew").await;
    let result = tokio::spawn(upgrade(url.clone(), old, schema.clone(), fresh_pool)).await;
    drop_schema(&url, &schema).await;
    drop_schema(&url, &fresh_schema).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic.into_panic());
    }
}

async fn upgrade(url: String, old: PgPool, schema: String, fresh_pool: PgPool) {
    // The database as the v5 store left it.
    version_5_migrator()
        .await
        .run(&old)
        .await
        .expect("schema v5");
    old.execute(V5_ROWS).await.expect("v5 rows");
    assert!(function_names(&old, &schema)
        .await
        .contains(&"sf_commit".to_owned()));

    let store = PostgresStore::connect_with_schema(&url, &schema)
        .await
        .expect("the store opens a v5 database");

    // Migrations: the retired versions stay recorded, every current one is applied, and the
    // function nothing calls is gone.
    let applied = applied_versions(&old).await;
    for version in MIGRATOR.iter().map(|m| m.version).chain(RETIRED) {
        assert!(applied.contains(&version), "{version} in {applied:?}");
    }
    assert!(!function_names(&old, &schema)
        .await
        .contains(&"sf_commit".to_owned()));

    // Everything written before reads back.
    let a = StreamId::new("up.Account", "a");
    let b = StreamId::new("up.Account", "b");
    let commands = store.load_commands(&a, Sequence(1), None).await.unwrap();
    assert_eq!(commands.len(), 2);
    assert_eq!(commands[0].envelope.message_id, id(0xa));
    assert_eq!(commands[0].envelope.timestamp, at(1));
    assert_eq!(
        json_of(&commands[0].payload),
        json!({"owner": "Zoë", "limit": 1.5})
    );
    assert_eq!(commands[1].envelope.causation_id, Some(id(0xa)));
    assert_eq!(json_of(&commands[1].payload), json!({"amount": 100}));
    assert_eq!(store.last_sequence(&a).await.unwrap(), Sequence(2));

    let log = store.read_all(Position::START, 10).await.unwrap();
    let shape: Vec<_> = log
        .iter()
        .map(|e| {
            (
                e.position.0,
                e.envelope.stream.id.to_string(),
                e.sequence.0,
                e.command_sequence.0,
                json_of(&e.payload),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (1, "a".to_owned(), 1, 1, json!({"owner": "Zoë"})),
            (2, "a".to_owned(), 2, 1, json!({"limit": 1.5})),
            (3, "b".to_owned(), 1, 1, json!({"owner": "Bo"})),
            (
                4,
                "a".to_owned(),
                3,
                2,
                json!({"amount": 100, "balance": 100})
            ),
        ]
    );
    let receipt = store.find_receipt(&a, id(0xa)).await.unwrap().unwrap();
    assert_eq!(receipt.sequence, Sequence(1));
    assert_eq!(
        receipt
            .events
            .iter()
            .map(|e| e.position.0)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    let (version, state) = store.get_entity(&a).await.unwrap().unwrap();
    assert_eq!(version, Sequence(2));
    assert_eq!(json_of(&state), json!({"owner": "Zoë", "balance": 100}));
    let model = store
        .get_model("up.Summary", &EntityId::from("a"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(json_of(&model), json!({"deposits": 1}));
    assert_eq!(
        store.get_position("up.SummaryView").await.unwrap(),
        Position(4)
    );
    let pending = store.outbox_pending(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(json_of(&pending[0].message.payload), json!({"text": "hi"}));
    assert_eq!(
        store
            .stream_ids("up.Account", Page::first(10))
            .await
            .unwrap(),
        [EntityId::from("a"), EntityId::from("b")]
    );

    // New writes continue the old streams and the old log.
    let unit = UnitOfWork {
        expected: Sequence(2),
        command: StoredCommand {
            envelope: envelope(&a, "up.Deposit", at(4)),
            sequence: Sequence::ZERO,
            payload: br#"{"amount":5}"#.to_vec(),
        },
        entity: Some(r#"{"owner":"Zoë","balance":105}"#.as_bytes().to_vec()),
        events: vec![NewEvent {
            envelope: envelope(&a, "up.Deposited", at(4)),
            payload: br#"{"amount":5,"balance":105}"#.to_vec(),
        }],
        outbox: vec![],
        keys: Vec::new(),
    };
    let projection = InlineProjection {
        handler: "up.SummaryView".into(),
        expected: Position(4),
        after: Position(4),
        first_sequence: Sequence(4),
        models: vec![ModelWrite {
            model_type: "up.Summary".into(),
            id: EntityId::from("a"),
            state: Some(br#"{"deposits":2}"#.to_vec()),
        }],
    };
    let (receipt, projected) = store
        .commit_inline(unit.clone(), vec![projection])
        .await
        .unwrap();
    assert_eq!(receipt.sequence, Sequence(3));
    assert_eq!(
        (receipt.events[0].sequence, receipt.events[0].position),
        (Sequence(4), Position(5))
    );
    assert_eq!(projected, [true]);
    assert_eq!(
        store.get_position("up.SummaryView").await.unwrap(),
        Position(5)
    );
    let again = store.commit(unit).await.unwrap();
    assert!(again.duplicate);
    let resent_old = StoredCommand {
        envelope: Envelope {
            message_id: id(0xa),
            ..envelope(&a, "up.Open", at(1))
        },
        sequence: Sequence::ZERO,
        payload: r#"{"owner":"Zoë","limit":1.5}"#.as_bytes().to_vec(),
    };
    let old_duplicate = store
        .commit(UnitOfWork {
            expected: Sequence(3),
            command: resent_old,
            entity: None,
            events: vec![],
            outbox: vec![],
            keys: Vec::new(),
        })
        .await
        .unwrap();
    assert!(old_duplicate.duplicate);
    assert_eq!(old_duplicate.sequence, Sequence(1));
    let appended = store
        .append_events(
            &b,
            Sequence(1),
            vec![NewEvent {
                envelope: envelope(&b, "up.Flagged", at(5)),
                payload: br#"{"flag":true}"#.to_vec(),
            }],
        )
        .await
        .unwrap();
    assert_eq!(appended[0].position, Position(6));
    assert_eq!(store.head().await.unwrap(), Position(6));

    // Opening it again applies nothing twice.
    let before = applied_versions(&old).await;
    let again = PostgresStore::connect_with_schema(&url, &schema)
        .await
        .expect("reopen");
    assert_eq!(applied_versions(&old).await, before);
    assert_eq!(again.last_sequence(&a).await.unwrap(), Sequence(3));

    // The upgraded schema is the one a new database gets.
    let fresh = PostgresStore::from_pool(fresh_pool.clone())
        .await
        .expect("a new database");
    let fresh_schema = fresh.schema().to_owned();
    assert_eq!(
        schema_shape(&old, &schema).await,
        schema_shape(&fresh_pool, &fresh_schema).await
    );
    store.pool().close().await;
    again.pool().close().await;
    old.close().await;
    fresh_pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
async fn a_database_of_a_newer_release_is_refused() {
    let url = pg_url();
    let (pool, schema) = schema_pool(&url, "sf_upnext").await;
    let result = tokio::spawn(newer(pool)).await;
    drop_schema(&url, &schema).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic.into_panic());
    }
}

async fn newer(pool: PgPool) {
    PostgresStore::from_pool(pool.clone()).await.expect("open");
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', true, '\\x00', 0)",
    )
    .execute(&pool)
    .await
    .expect("a version from a newer release");
    match PostgresStore::from_pool(pool.clone()).await {
        Err(StoreError::Backend(source)) => {
            let unknown = source
                .downcast_ref::<UnknownMigration>()
                .unwrap_or_else(|| panic!("expected UnknownMigration, got {source}"));
            assert_eq!(unknown.0, 9999);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    pool.close().await;
}
