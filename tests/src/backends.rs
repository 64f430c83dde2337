//! Fresh, isolated stores for the suites: in memory, on a temporary SQLite file, and in a
//! schema of its own on the Postgres at `SOURCEFLOW_PG_URL` (dropped when the test ends).

use std::sync::Arc;

use sourceflow::store::Store;
use sourceflow::MemoryStore;

/// A store under test and what to clean up after it.
pub struct Backend {
    /// The store.
    pub store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    schema: Option<(String, String)>,
}

impl Backend {
    /// A backend around a store the test opened itself, with nothing to clean up.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            _dir: None,
            schema: None,
        }
    }

    /// Releases the backend: drops the Postgres schema, deletes the SQLite file.
    pub async fn finish(self) {
        if let Some((url, schema)) = &self.schema {
            drop_schema(url, schema).await;
        }
    }
}

/// A fresh `MemoryStore`.
pub async fn memory() -> Backend {
    Backend {
        store: Arc::new(MemoryStore::new()),
        _dir: None,
        schema: None,
    }
}

/// A `SqliteStore` on a new file in a temporary directory.
pub async fn sqlite_file() -> Backend {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = sourceflow_sqlx::SqliteStore::open(dir.path().join("test.db"))
        .await
        .expect("open a SQLite file");
    Backend {
        store: Arc::new(store),
        _dir: Some(dir),
        schema: None,
    }
}

/// The Postgres server of the Postgres tests, `SOURCEFLOW_PG_URL`.
///
/// Those tests are ignored unless the variable was set when they were built
/// (`cfg(sourceflow_pg)`); one run without it fails here instead of passing untested.
pub fn pg_url() -> String {
    std::env::var("SOURCEFLOW_PG_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .expect("SOURCEFLOW_PG_URL names the Postgres server of the Postgres tests")
}

/// A `PostgresStore` in a new schema of the server at [`pg_url`].
pub async fn postgres() -> Backend {
    let url = pg_url();
    let schema = format!("sf_test_{}", uuid::Uuid::new_v4().simple());
    let store = sourceflow_sqlx::PostgresStore::connect_with_schema(&url, &schema)
        .await
        .expect("connect to SOURCEFLOW_PG_URL");
    Backend {
        store: Arc::new(store),
        _dir: None,
        schema: Some((url, schema)),
    }
}

/// Drops a test schema (names are generated here, so they are plain identifiers).
pub async fn drop_schema(url: &str, schema: &str) {
    if !schema
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return;
    }
    if let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
    {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&pool)
            .await;
        pool.close().await;
    }
}

/// A database several OS processes share (a SQLite file, or a Postgres schema), named by a
/// `spec` the test binaries take (`sqlite:<path>` or `postgres:<url>#<schema>`), with the store
/// of the checking process. The file or schema goes away when it is dropped.
pub struct SharedDb {
    /// How the child processes open it.
    pub spec: String,
    /// This process's store on it.
    pub store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    cleanup: Option<(String, String)>,
}

impl Drop for SharedDb {
    fn drop(&mut self) {
        if let Some((url, schema)) = self.cleanup.take() {
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| rt.block_on(drop_schema(&url, &schema)))
            })
            .join();
        }
    }
}

impl SharedDb {
    /// Every byte the database keeps ([`sqlite_bytes`] or [`postgres_bytes`]).
    pub async fn stored_bytes(&self) -> Vec<u8> {
        if let Some(path) = self.spec.strip_prefix("sqlite:") {
            return sqlite_bytes(std::path::Path::new(path));
        }
        let (url, schema) = self
            .spec
            .strip_prefix("postgres:")
            .and_then(|rest| rest.rsplit_once('#'))
            .expect("a sqlite: or postgres: spec");
        postgres_bytes(url, schema).await
    }
}

/// Every byte of a SQLite database: the file and its write-ahead log.
pub fn sqlite_bytes(path: &std::path::Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).expect("read the database file");
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    bytes.extend(std::fs::read(wal).unwrap_or_default());
    bytes
}

/// Every row of every table of a Postgres schema, as text.
pub async fn postgres_bytes(url: &str, schema: &str) -> Vec<u8> {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(schema)
    .fetch_all(&pool)
    .await
    .expect("list the tables");
    assert!(tables.iter().any(|t| t == "sf_keys"), "{tables:?}");
    let mut bytes = Vec::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT CAST(t AS TEXT) FROM \"{schema}\".\"{table}\" t"
        ))
        .fetch_all(&pool)
        .await
        .expect("read a table");
        for row in rows {
            bytes.extend(row.into_bytes());
        }
    }
    pool.close().await;
    bytes
}

/// A SQLite file `name` in a new temporary directory, shared by processes.
pub async fn shared_sqlite(name: &str) -> SharedDb {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(name);
    let store = sourceflow_sqlx::SqliteStore::open(&path)
        .await
        .expect("open a SQLite file");
    SharedDb {
        spec: format!("sqlite:{}", path.display()),
        store: Arc::new(store),
        _dir: Some(dir),
        cleanup: None,
    }
}

/// A new schema `<prefix>_<uuid>` on the server at [`pg_url`], shared by processes; this
/// process's pool holds at most `pool` connections.
pub async fn shared_postgres(prefix: &str, pool: u32) -> SharedDb {
    let url = pg_url();
    let schema = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let store = sourceflow_sqlx::PostgresStore::builder(&url)
        .schema(&schema)
        .max_connections(pool)
        .connect()
        .await
        .expect("connect to SOURCEFLOW_PG_URL");
    SharedDb {
        spec: format!("postgres:{url}#{schema}"),
        store: Arc::new(store),
        _dir: None,
        cleanup: Some((url, schema)),
    }
}
