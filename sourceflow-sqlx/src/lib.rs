//! SQL stores for [`sourceflow`]: [`SqliteStore`] (embedded, the default) and
//! [`PostgresStore`] (many processes sharing one database), over `sqlx`.
//!
//! Both implement [`sourceflow::store::Store`] with exactly the semantics of
//! [`MemoryStore`](sourceflow::MemoryStore) (the workspace's conformance suite runs the same
//! scenarios against all three): dense per-stream sequences, optimistic appends that fail with
//! [`StoreError::Conflict`](sourceflow::store::StoreError::Conflict) instead of overwriting,
//! gaps reported on read, idempotent message ids, atomic units of work, and a global log whose
//! positions become visible in order. Both are a [`SqlStore`] over their backend: the reads of
//! the contract (their queries, bounds and row mapping) are written once for both, and each
//! backend brings its connections, its commit path and its error classification.
//!
//! ```
//! use sourceflow::store::{Store, UnitOfWork};
//! use sourceflow::message::{NewEvent, StoredCommand};
//! use sourceflow::{Envelope, Position, Sequence, StreamId};
//! use sourceflow_sqlx::SqliteStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("bank.db");
//! // Created if missing, migrated, WAL, synchronous=FULL. `SqliteStore::memory()` for tests.
//! let store = SqliteStore::open(&path).await?;
//!
//! let stream = StreamId::new("bank.Account", "acct-42");
//! let envelope = |name: &'static str| Envelope {
//!     message_id: uuid::Uuid::now_v7(),
//!     name: name.into(),
//!     version: 1,
//!     stream: stream.clone(),
//!     correlation_id: uuid::Uuid::now_v7(),
//!     causation_id: None,
//!     timestamp: chrono::Utc::now(),
//! };
//! let receipt = store
//!     .commit(UnitOfWork {
//!         expected: Sequence::ZERO,
//!         command: StoredCommand {
//!             envelope: envelope("bank.Deposit"),
//!             sequence: Sequence::ZERO,
//!             payload: br#"{"amount":100}"#.to_vec(),
//!         },
//!         entity: Some(br#"{"balance":100}"#.to_vec()),
//!         events: vec![NewEvent {
//!             envelope: envelope("bank.Deposited"),
//!             payload: br#"{"amount":100,"balance":100}"#.to_vec(),
//!         }],
//!         outbox: vec![],
//!         keys: vec![],
//!     })
//!     .await?;
//! assert_eq!(receipt.sequence, Sequence(1));
//! assert_eq!(store.read_all(Position::START, 100).await?.len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! Applications normally hand the store to the runtime and never call it directly:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use sourceflow::SourceFlow;
//! use sourceflow_sqlx::{PostgresStore, SqliteStore};
//!
//! let flow = SourceFlow::builder().store(SqliteStore::open("bank.db").await?).build().await?;
//! // Or, for several processes sharing one database:
//! let flow = SourceFlow::builder()
//!     .store(PostgresStore::connect("postgres://app@db/bank").await?)
//!     .build()
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # SQLite
//! One file in WAL mode, durable by default (`synchronous=FULL`; [`Synchronous::Normal`] is
//! an opt-in trade of the last commits before a power loss for throughput). A single writer
//! thread does **group commit**: concurrent units of work share one transaction and one fsync,
//! and one unit's conflict or failure does not affect the others ([`SqliteStore::stats`] shows
//! it working). A transaction holding nothing but views' and reactions' batches committed after
//! their events (`commit_projection`) does not wait for an fsync of its own: the WAL is one
//! append-only file, so the next command's commit makes it durable too, and a power failure
//! before that loses the batch whole (its position with its effects), to be projected again
//! from the log; commands are never acknowledged before their fsync. Readers use a separate
//! pool. Other processes may
//! open the same file: `busy_timeout` waits for their locks and remaining busy errors are
//! retried with [`Backoff`]. The file is readable with the `sqlite3` tool: UUIDs are text,
//! timestamps RFC 3339 UTC text, payloads JSON text.
//!
//! A commit's cost is mostly its fsync, which grows with the pages the transaction changed, so
//! the schema keeps the indexes a command updates to the ones its reads need (a command row
//! records the stream sequences of its events instead of an index by command). Migrations
//! apply on open; a file from schema v1 has its events table rebuilt once, with the same rows
//! and positions (about 15 s per million events and commands on a 2-core VM).
//!
//! # Postgres
//! Payloads and states in `json` columns (the exact text written, checked to be JSON; see
//! [Data fidelity](#data-fidelity)), optional per-store schema
//! ([`PostgresStore::connect_with_schema`]). A command commits in one round
//! trip (one call of a server-side function). **Positions become visible in order**: every
//! transaction that inserts events takes a transaction-scoped advisory lock right before
//! inserting them and holds it to commit, so a catch-up reader of
//! [`read_all`](sourceflow::store::Store::read_all) never skips an event that commits late
//! with a lower position, and positions stay dense. **Group commit** keeps that lock from
//! making concurrent commands wait one flush each: the units of work that concurrent senders of
//! one process hand over together commit in one transaction, one lock hold and one WAL flush
//! per batch. Processes sharing a schema still take the lock in turn, a batch at a time; see
//! [`postgres`] for the details and the trade-offs.
//!
//! # Data fidelity
//! One rule on every backend, [`MemoryStore`](sourceflow::MemoryStore) included: **what is
//! written reads back identical**, so nothing has to be refused for a backend's sake.
//! - Payloads and states (commands, events, entity states, view models, outbox entries) are
//!   stored as the exact JSON text given and read back byte for byte: SQLite `TEXT`, Postgres
//!   `json` (not `jsonb`, which cannot hold the escape `\u0000`, drops the sign of `-0.0`,
//!   rewrites numbers as decimals and reorders keys). Strings holding U+0000, `-0.0`, `f64::MAX`
//!   and subnormals, integers at the `i64`/`u64` limits and beyond, duplicate keys and any
//!   spacing all survive. With serde_json's `float_roundtrip` (enabled in this workspace),
//!   every finite `f64` decodes to the bits it was encoded from. JSON itself has no NaN or
//!   infinity (serde_json would write `null`): the runtime refuses them before commit.
//! - Timestamps are kept in whole microseconds, truncated towards the past: a finer timestamp
//!   reads back truncated, and `read_between` compares bounds of any precision exactly as
//!   against the stored value.
//! - Any `u64` read bound (`read_all`'s `after`, `read_stream`'s and `read_stream_range`'s
//!   `from`/`to`, `read_between`'s `after`, `load_commands`' bounds) and any `usize` limit is
//!   valid: columns are signed 64-bit, so a bound past `i64::MAX` reads what `i64::MAX` reads
//!   (nothing after it, everything up to it), never an error. Time bounds are any
//!   `DateTime<Utc>` (`DateTime::MIN_UTC` to `DateTime::MAX_UTC` reads all time).
//!
//! What a database cannot hold is refused with a store error when it is written, never
//! accepted and then unreadable. Payloads from the runtime (serde_json's output) never meet
//! these; direct store calls can: a payload that is not UTF-8 (both SQL backends; the memory
//! store keeps any bytes) or not JSON (Postgres), a NUL character in an id, name or key
//! (Postgres `text` cannot hold one), a sequence, position or version above `i64::MAX`, a
//! timestamp before 4714 BC (Postgres). SQLite compares timestamps as text, which orders the
//! years 0000 to 9999.
//!
//! # Errors and retries
//! Transient faults (`SQLITE_BUSY`/`SQLITE_LOCKED`, dropped connections and I/O errors,
//! Postgres serialization failures `40001`, deadlocks `40P01`, server shutdown `57P01`) are
//! retried with bounded exponential backoff and full jitter ([`Backoff`]: the runtime's
//! [`RetryPolicy`](sourceflow::RetryPolicy) schedule with the store's defaults of 10 attempts,
//! 2 ms up to 500 ms; the builders also take a `RetryPolicy`); if they persist the
//! caller gets [`StoreError::Transient`](sourceflow::store::StoreError::Transient), which the
//! runtime may retry again. Everything else is
//! [`StoreError::Backend`](sourceflow::store::StoreError::Backend) with the driver error as
//! its source. A transient fault on a write whose outcome is unknown (the connection dropped
//! during `COMMIT`) is retried safely: a command already committed is then answered as a
//! duplicate, a projection batch as a position conflict.
//!
//! # Features
//! `sqlite` and `postgres`, both on by default. `tls-rustls` (rustls, ring, the webpki roots)
//! or `tls-native-tls` (the platform's TLS) lets Postgres connections use TLS, as the URL's
//! `sslmode` asks; without either they are plain, and a URL that requires TLS is refused (see
//! `PostgresStore::connect`).
//!
#![cfg_attr(
    not(feature = "postgres"),
    doc = "[`PostgresStore`]: #features\n[`PostgresStore::connect_with_schema`]: #features\n\
           [`postgres`]: #features"
)]
#![cfg_attr(
    not(feature = "sqlite"),
    doc = "[`SqliteStore`]: #features\n[`SqliteStore::stats`]: #features\n\
           [`Synchronous::Normal`]: #features"
)]
#![warn(missing_docs)]

mod retry;
mod sql;

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use retry::Backoff;
pub use sql::SqlStore;

#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteStats, SqliteStore, SqliteStoreBuilder, Synchronous};
