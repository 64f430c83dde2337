//! Where the shop keeps its data: a SQLite file by default, or a Postgres database.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use sourceflow::store::Store;
use sourceflow::{Builder, SourceFlow};
use sourceflow_sqlx::{Backoff, PostgresStore, SqliteStore, Synchronous};

/// The SQLite file used when nothing else is said.
pub const DEFAULT_DB: &str = "shop.db";
/// The environment variable naming the database when no flag does.
pub const DATABASE_URL_ENV: &str = "SHOP_DATABASE_URL";

/// A database to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A Postgres database, optionally in its own schema.
    Postgres {
        /// `postgres://user@host/db`.
        url: String,
        /// Schema for the tables (created if missing); the server's default otherwise.
        schema: Option<String>,
    },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Sqlite(path) => write!(f, "{}", path.display()),
            Target::Postgres { url, schema } => {
                // Never print a password.
                let shown = match (url.find("://"), url.rfind('@')) {
                    (Some(scheme), Some(at)) if at > scheme => {
                        format!("{}://…{}", &url[..scheme], &url[at..])
                    }
                    _ => url.clone(),
                };
                match schema {
                    Some(schema) => write!(f, "{shown} (schema {schema})"),
                    None => f.write_str(&shown),
                }
            }
        }
    }
}

impl Target {
    /// Picks the database: `--database-url`, then `--db`, then `$SHOP_DATABASE_URL`, then
    /// `shop.db`. A flag beats the environment, so a script can always override it.
    ///
    /// # Errors
    /// A URL with a scheme other than `postgres`, `postgresql` or `sqlite`.
    pub fn resolve(
        db: Option<&Path>,
        database_url: Option<&str>,
        schema: Option<&str>,
    ) -> anyhow::Result<Target> {
        let from_env = std::env::var(DATABASE_URL_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty());
        let url = match (database_url, db) {
            (Some(url), _) => url.to_owned(),
            (None, Some(path)) => return Ok(Target::Sqlite(path.to_path_buf())),
            (None, None) => match from_env {
                Some(url) => url,
                None => return Ok(Target::Sqlite(PathBuf::from(DEFAULT_DB))),
            },
        };
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres {
                url: url.to_owned(),
                schema: schema.map(str::to_owned),
            });
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            return Ok(Target::Sqlite(PathBuf::from(path)));
        }
        if url.contains("://") {
            bail!("unsupported database URL {url:?}: use postgres://..., sqlite://PATH or a file path");
        }
        Ok(Target::Sqlite(PathBuf::from(url)))
    }
}

/// How a command uses the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads, or changes existing data: a missing SQLite file is an error (a typo in `--db`
    /// should not silently create an empty shop).
    Existing,
    /// May create the database.
    Create,
    /// Creates it if needed and loads a lot: SQLite trades the last commits before a power
    /// loss (`synchronous=NORMAL`) for throughput. Used by `seed` and `import`, which can be
    /// run again.
    Bulk,
}

/// Opens the store behind `target`. A SQLite file locked by another process is waited for
/// `lock_timeout`, once: a person at a prompt would rather hear "locked" than wait for
/// retries.
///
/// # Errors
/// A missing SQLite file with [`Access::Existing`], or the store's own error, as one line.
pub async fn open_store(
    target: &Target,
    access: Access,
    lock_timeout: Duration,
) -> anyhow::Result<Arc<dyn Store>> {
    match target {
        Target::Sqlite(path) => {
            if access == Access::Existing && !path.exists() {
                bail!(
                    "database {} does not exist (create it with `shop place-order`, `shop seed` \
                     or `shop import`, or point --db at an existing file)",
                    path.display()
                );
            }
            let mut builder = SqliteStore::builder(path)
                .busy_timeout(lock_timeout)
                .backoff(Backoff::none());
            if access == Access::Bulk {
                builder = builder.synchronous(Synchronous::Normal);
            }
            let store = builder
                .open()
                .await
                .with_context(|| format!("cannot open database {}", path.display()))?;
            Ok(Arc::new(store))
        }
        Target::Postgres { url, schema } => {
            let store = match schema {
                Some(schema) => PostgresStore::connect_with_schema(url, schema).await,
                None => PostgresStore::connect(url).await,
            }
            .with_context(|| format!("cannot connect to {target}"))?;
            Ok(Arc::new(store))
        }
    }
}

/// Opens the store and builds the flow: every saga, view and reaction of the shop is
/// discovered; building catches views up and sends follow-ups a crash left behind.
///
/// # Errors
/// As [`open_store`], plus the flow's configuration or catch-up errors.
pub async fn open_flow(
    target: &Target,
    access: Access,
    lock_timeout: Duration,
    builder: Builder,
) -> anyhow::Result<SourceFlow> {
    let store = open_store(target, access, lock_timeout).await?;
    // A database written by an earlier release may hold views built by an older version of
    // their projection: they are rebuilt here, before the shop serves them.
    let flow = builder
        .shared_store(store)
        .rebuild_stale_views()
        .build()
        .await
        .with_context(|| format!("cannot start the shop on {target}"))?;
    Ok(flow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_environment_and_urls_pick_the_backend() {
        let pg = Target::resolve(None, Some("postgres://u:secret@h/db"), Some("s1")).unwrap();
        assert!(matches!(pg, Target::Postgres { .. }));
        assert!(!pg.to_string().contains("secret"));
        assert_eq!(
            Target::resolve(Some(Path::new("a.db")), None, None).unwrap(),
            Target::Sqlite("a.db".into())
        );
        assert_eq!(
            Target::resolve(None, Some("sqlite://b.db"), None).unwrap(),
            Target::Sqlite("b.db".into())
        );
        assert!(Target::resolve(None, Some("mysql://x"), None).is_err());
    }
}
