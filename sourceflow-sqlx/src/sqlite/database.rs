//! The database a SQLite store's connections open, and how a stream reader opens one.

use std::path::PathBuf;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;

/// The database a store's connections open.
#[derive(Clone, Debug)]
pub(super) enum Database {
    /// A file, created if missing.
    File(PathBuf),
    /// A named in-memory database in SQLite's shared cache, alive while a connection to it is
    /// open.
    Memory(String),
}

impl Database {
    /// The sqlx options of the migration and reader connections.
    pub(super) fn connect_options(&self) -> SqliteConnectOptions {
        match self {
            Database::File(path) => SqliteConnectOptions::new().filename(path),
            Database::Memory(name) => SqliteConnectOptions::new()
                .filename(format!("file:{name}"))
                .in_memory(true)
                .shared_cache(true),
        }
    }
}

/// Opens a stream reader's connection ([`streams`](super::streams)): read-only on a file, as
/// the reader pool's are, with the same busy timeout.
pub(super) fn open_reader(
    database: &Database,
    busy_timeout: Duration,
) -> Result<rusqlite::Connection, rusqlite::Error> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = match database {
        Database::File(path) => rusqlite::Connection::open_with_flags(
            path,
            flags | OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_PRIVATE_CACHE,
        )?,
        Database::Memory(name) => rusqlite::Connection::open_with_flags(
            format!("file:{name}?mode=memory&cache=shared"),
            flags
                | OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_MEMORY
                | OpenFlags::SQLITE_OPEN_SHARED_CACHE,
        )?,
    };
    connection.busy_timeout(busy_timeout)?;
    Ok(connection)
}
