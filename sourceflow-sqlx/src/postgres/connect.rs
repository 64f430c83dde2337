//! Connecting a Postgres store: the builder, the schema (created if missing, validated as an
//! identifier), the pool, and the migrations.

use std::str::FromStr;
use std::time::Duration;

use sourceflow::store::StoreError;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor};

use super::error::{backend, classify, is_unique_violation};
use super::{migrate, Postgres, PostgresStore};
use crate::retry::Backoff;
use crate::sql::SqlStore;

/// Why a store could not be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Schema names are spliced into `CREATE SCHEMA` and `search_path`, so only plain
    /// identifiers are accepted.
    #[error("invalid schema name {0:?}: use 1 to 63 ASCII letters, digits or underscores, not starting with a digit")]
    InvalidSchema(String),
    /// The connection's `search_path` names no existing schema.
    #[error("the connection has no current schema (check search_path)")]
    NoSchema,
}

/// True for a name usable as an unquoted Postgres identifier (and so safe to splice).
pub fn is_valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Options for connecting a [`PostgresStore`]; start from [`PostgresStore::builder`].
#[derive(Clone, Debug)]
pub struct PostgresStoreBuilder {
    url: String,
    schema: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
    backoff: Backoff,
    group_commit: bool,
}

impl PostgresStoreBuilder {
    pub(super) fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            schema: None,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(30),
            backoff: Backoff::default(),
            group_commit: true,
        }
    }

    /// Keep the tables in `schema`, created if missing: every pooled connection gets
    /// `search_path = schema`. Validated as an identifier.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Pool size (default 10).
    pub fn max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections.max(1);
        self
    }

    /// How long to wait for a pooled connection before a transient error (default 30 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Retry policy for transient faults (serialization failures, deadlocks, dropped
    /// connections, server restarts).
    ///
    /// Takes a [`Backoff`] or a [`sourceflow::RetryPolicy`].
    pub fn backoff(mut self, backoff: impl Into<Backoff>) -> Self {
        self.backoff = backoff.into();
        self
    }

    /// Whether units of work that concurrent senders of this process hand over together are
    /// committed together, in one transaction (default on; see the [module docs](super)).
    /// Off, every unit of work is a transaction of its own.
    pub fn group_commit(mut self, on: bool) -> Self {
        self.group_commit = on;
        self
    }

    /// Connects, creates the schema if one was given, and applies pending migrations.
    ///
    /// # Errors
    /// [`StoreError::Backend`] for a bad URL or schema name, a refused connection or a failed
    /// migration; [`StoreError::Transient`] if the server stays unreachable.
    pub async fn connect(self) -> Result<PostgresStore, StoreError> {
        let mut options = PgConnectOptions::from_str(&self.url).map_err(backend)?;
        if let Some(schema) = &self.schema {
            if !is_valid_schema_name(schema) {
                return Err(backend(ConfigError::InvalidSchema(schema.clone())));
            }
            create_schema(&options, schema, &self.backoff).await?;
            // A startup parameter: set once per connection, no extra round trip.
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            // A ping per checkout would double the round trips; broken connections surface as
            // I/O errors, which are retried.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(classify)?;
        let mut store = Postgres::open(pool, self.backoff).await?;
        if !self.group_commit {
            store.backend_mut().group = None;
        }
        Ok(store)
    }
}

async fn create_schema(
    options: &PgConnectOptions,
    schema: &str,
    backoff: &Backoff,
) -> Result<(), StoreError> {
    backoff
        .run("postgres", "create_schema", || async move {
            let mut connection = options.connect().await.map_err(classify)?;
            // The name is a validated identifier; DDL cannot take it as a parameter.
            let created = connection
                .execute(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"").as_str())
                .await;
            let _ = connection.close().await;
            match created {
                Ok(_) => Ok(()),
                // Two connections creating the same schema at once: the loser sees a unique
                // violation on pg_namespace, and the schema exists.
                Err(e) if is_unique_violation(&e) => Ok(()),
                Err(e) => Err(classify(e)),
            }
        })
        .await
}

impl Postgres {
    /// A store over `pool`, its migrations applied, in the pool's current schema.
    pub(super) async fn open(pool: PgPool, backoff: Backoff) -> Result<PostgresStore, StoreError> {
        migrate::migrate(&pool).await?;
        let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&pool)
            .await
            .map_err(classify)?;
        let schema = schema.ok_or_else(|| backend(ConfigError::NoSchema))?;
        Ok(SqlStore::new(Postgres {
            lock_key: append_lock_key(&schema),
            pool,
            schema,
            backoff,
            group: Some(Default::default()),
        }))
    }
}

/// The advisory lock key of a schema: FNV-1a of `sourceflow.events/<schema>`, so that every
/// process sharing a schema uses the same key and different schemas do not contend.
fn append_lock_key(schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "sourceflow.events/".bytes().chain(schema.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_identifiers() {
        for ok in ["t_abc", "_x", "Schema1"] {
            assert!(is_valid_schema_name(ok), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "a\"; DROP TABLE x; --",
            &"x".repeat(64),
        ] {
            assert!(!is_valid_schema_name(bad), "{bad}");
        }
    }

    #[test]
    fn lock_keys_differ_per_schema() {
        assert_eq!(append_lock_key("public"), append_lock_key("public"));
        assert_ne!(append_lock_key("public"), append_lock_key("t_abc"));
    }

    /// `url` with `sslmode` set to `mode`.
    fn with_sslmode(url: &str, mode: &str) -> String {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}sslmode={mode}")
    }

    /// Built without a TLS feature, a URL that requires TLS is refused rather than connected
    /// in the clear.
    #[cfg(not(any(feature = "tls-rustls", feature = "tls-native-tls")))]
    #[tokio::test]
    #[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
    async fn a_url_that_requires_tls_is_refused_without_a_tls_feature() {
        let url = std::env::var("SOURCEFLOW_PG_URL").expect("SOURCEFLOW_PG_URL");
        let refused = PostgresStore::builder(&with_sslmode(&url, "require"))
            .schema(format!("sf_tls_{}", std::process::id()))
            .connect()
            .await;
        let error = refused.expect_err("connected without TLS").to_string();
        assert!(error.contains("TLS"), "{error}");
    }

    /// With a TLS feature, `sslmode` decides: `require` connects encrypted (the server must
    /// offer TLS, as Debian's Postgres does with its snakeoil certificate), `disable` plain.
    #[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
    #[tokio::test]
    #[cfg_attr(not(sourceflow_pg), ignore = "set SOURCEFLOW_PG_URL to run")]
    async fn sslmode_decides_whether_connections_are_encrypted() {
        let url = std::env::var("SOURCEFLOW_PG_URL").expect("SOURCEFLOW_PG_URL");
        let schema = format!("sf_tls_{}", std::process::id());
        for (mode, encrypted) in [("require", true), ("disable", false)] {
            let store = PostgresStore::builder(&with_sslmode(&url, mode))
                .schema(&schema)
                .max_connections(1)
                .connect()
                .await
                .unwrap_or_else(|e| panic!("sslmode={mode}: {e}"));
            let ssl: bool =
                sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                    .fetch_one(store.pool())
                    .await
                    .expect("pg_stat_ssl");
            assert_eq!(ssl, encrypted, "sslmode={mode}");
            if !encrypted {
                sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                    .execute(store.pool())
                    .await
                    .expect("drop the schema");
            }
            store.pool().close().await;
        }
    }
}
