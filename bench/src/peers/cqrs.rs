//! The same bank account on `cqrs-es`: an aggregate, one query, and its stores.
//!
//! - [`MemStore`](cqrs_es::mem_store::MemStore) is the crate's own in-memory store, used as
//!   shipped. It prints two lines per command to stdout, so the binary runs it in a child
//!   process with stdout discarded.
//! - [`QuietMemStore`] is the same store line for line without the printing, to show what the
//!   printing costs.
//! - [`postgres`] builds the `postgres-es` framework, as its docs show it.
//! - `sqlite` (with the `sqlite-es` feature) builds the `sqlite-es` framework the same way.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::GenericQuery;
use cqrs_es::{
    Aggregate, AggregateContext, AggregateError, DomainEvent, EventEnvelope, EventStore, Query,
    View,
};
use serde::{Deserialize, Serialize};

use crate::domain::{AccountSummary, Deposit};

/// The account as a `cqrs-es` aggregate.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BankAccount {
    /// Balance in cents.
    pub balance: i64,
    /// Number of deposits.
    pub deposits: u64,
}

/// The account's commands.
#[derive(Debug)]
pub enum BankCommand {
    /// The same payload as sourceflow's [`Deposit`].
    Deposit(Deposit),
}

/// The account's events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BankEvent {
    /// Money came in.
    Deposited {
        /// Amount in cents.
        amount: i64,
        /// Balance afterwards.
        balance: i64,
    },
}

impl DomainEvent for BankEvent {
    fn event_type(&self) -> String {
        "Deposited".to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// A refused command.
#[derive(Debug)]
pub struct BankError(pub String);

impl fmt::Display for BankError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BankError {}

impl Aggregate for BankAccount {
    const TYPE: &'static str = "bank_account";
    type Command = BankCommand;
    type Event = BankEvent;
    type Error = BankError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            BankCommand::Deposit(deposit) => {
                if deposit.amount <= 0 {
                    return Err(BankError("amount must be positive".to_owned()));
                }
                let event = BankEvent::Deposited {
                    amount: deposit.amount,
                    balance: self.balance + deposit.amount,
                };
                sink.write(event, self).await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            BankEvent::Deposited { balance, .. } => {
                self.balance = balance;
                self.deposits += 1;
            }
        }
    }
}

/// The query for in-memory runs: keeps each account's summary as JSON, loading, applying and
/// re-encoding it per event as sourceflow's view does on `MemoryStore`.
#[derive(Default)]
pub struct MemorySummaryQuery {
    views: Mutex<HashMap<String, Vec<u8>>>,
}

impl MemorySummaryQuery {
    /// The summary of account `id`, if any.
    pub fn get(&self, id: &str) -> Option<AccountSummary> {
        let views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        views
            .get(id)
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
    }
}

#[async_trait]
impl Query<BankAccount> for Arc<MemorySummaryQuery> {
    async fn dispatch(&self, aggregate_id: &str, events: &[EventEnvelope<BankAccount>]) {
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        let mut summary: AccountSummary = views
            .get(aggregate_id)
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
            .unwrap_or_default();
        for event in events {
            let BankEvent::Deposited { balance, .. } = &event.payload;
            summary.balance = *balance;
            summary.deposits += 1;
        }
        if let Ok(bytes) = serde_json::to_vec(&summary) {
            views.insert(aggregate_id.to_owned(), bytes);
        }
    }
}

/// The view kept by `postgres-es`'s `GenericQuery` in a `PostgresViewRepository`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SummaryViewCq {
    /// Balance in cents.
    pub balance: i64,
    /// Number of deposits.
    pub deposits: u64,
}

impl View<BankAccount> for SummaryViewCq {
    fn update(&mut self, event: &EventEnvelope<BankAccount>) {
        let BankEvent::Deposited { balance, .. } = &event.payload;
        self.balance = *balance;
        self.deposits += 1;
    }
}

type EventMap = RwLock<HashMap<String, Vec<EventEnvelope<BankAccount>>>>;

/// `cqrs_es::mem_store::MemStore` without its two `println!` per command: same loading
/// (every event of the aggregate, cloned), same commit (the history cloned and re-inserted).
#[derive(Default, Clone)]
pub struct QuietMemStore {
    events: Arc<EventMap>,
}

/// The loaded aggregate of a [`QuietMemStore`].
pub struct QuietContext {
    aggregate_id: String,
    aggregate: BankAccount,
    current_sequence: usize,
}

impl AggregateContext<BankAccount> for QuietContext {
    fn aggregate(&mut self) -> &mut BankAccount {
        &mut self.aggregate
    }
}

impl QuietMemStore {
    fn committed(&self, aggregate_id: &str) -> Vec<EventEnvelope<BankAccount>> {
        self.events
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(aggregate_id)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

impl EventStore<BankAccount> for QuietMemStore {
    type AC = QuietContext;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<BankAccount>>, AggregateError<BankError>> {
        Ok(self.committed(aggregate_id))
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<QuietContext, AggregateError<BankError>> {
        let mut aggregate = BankAccount::default();
        let mut current_sequence = 0;
        for envelope in self.committed(aggregate_id) {
            current_sequence = envelope.sequence;
            aggregate.apply(envelope.payload);
        }
        Ok(QuietContext {
            aggregate_id: aggregate_id.to_owned(),
            aggregate,
            current_sequence,
        })
    }

    async fn commit(
        &self,
        events: Vec<BankEvent>,
        context: QuietContext,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<BankAccount>>, AggregateError<BankError>> {
        let mut sequence = context.current_sequence;
        let wrapped: Vec<EventEnvelope<BankAccount>> = events
            .into_iter()
            .map(|payload| {
                sequence += 1;
                EventEnvelope {
                    aggregate_id: context.aggregate_id.clone(),
                    sequence,
                    payload,
                    metadata: metadata.clone(),
                }
            })
            .collect();
        if wrapped.is_empty() {
            return Ok(Vec::new());
        }
        let mut history = self.committed(&context.aggregate_id);
        history.extend(wrapped.iter().cloned());
        self.events
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(context.aggregate_id, history);
        Ok(wrapped)
    }
}

/// A `cqrs-es` framework over any of its stores, with the in-memory query.
pub type MemFramework<S> = cqrs_es::CqrsFramework<BankAccount, S>;

/// A framework over `store` with one [`MemorySummaryQuery`]; returns the query too.
pub fn memory_framework<S: EventStore<BankAccount>>(
    store: S,
) -> (MemFramework<S>, Arc<MemorySummaryQuery>) {
    let query = Arc::new(MemorySummaryQuery::default());
    let framework = cqrs_es::CqrsFramework::new(store, vec![Box::new(query.clone())], ());
    (framework, query)
}

/// `postgres-es`: the framework on Postgres with a `GenericQuery` over a
/// `PostgresViewRepository`, built as the crate's docs show.
pub mod postgres {
    use super::*;
    use postgres_es::{PostgresCqrs, PostgresViewRepository};
    use sqlx::PgPool;

    /// The view table's name.
    pub const VIEW_TABLE: &str = "bank_summary_view";

    /// Creates `postgres-es`'s tables (from its `db/init.sql`) in the pool's schema.
    ///
    /// # Errors
    /// Database errors.
    pub async fn create_tables(pool: &PgPool) -> Result<(), sqlx::Error> {
        for ddl in [
            "CREATE TABLE events (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
             sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL, \
             event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL, \
             PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
            "CREATE TABLE snapshots (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
             last_sequence bigint CHECK (last_sequence >= 0) NOT NULL, \
             current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL, \
             payload json NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id, last_sequence))",
            "CREATE TABLE bank_summary_view (view_id text NOT NULL, \
             version bigint CHECK (version >= 0) NOT NULL, payload json NOT NULL, \
             PRIMARY KEY (view_id))",
        ] {
            sqlx::query(ddl).execute(pool).await?;
        }
        Ok(())
    }

    /// The framework: `postgres_cqrs` (a pure event store: every command loads the whole
    /// stream) with one view.
    pub fn framework(pool: PgPool) -> PostgresCqrs<BankAccount> {
        let repository = Arc::new(PostgresViewRepository::<SummaryViewCq, BankAccount>::new(
            VIEW_TABLE,
            pool.clone(),
        ));
        let query = GenericQuery::new(repository);
        postgres_es::postgres_cqrs(pool, vec![Box::new(query)], ())
    }
}

/// `sqlite-es`: the framework on SQLite with a `GenericQuery` over a `SqliteViewRepository`,
/// built as the crate's docs show, on a pool with the store's pragmas.
#[cfg(feature = "sqlite-es")]
pub mod sqlite {
    use super::*;
    use sqlite_es::{SqliteCqrs, SqliteViewRepository};
    use sqlx::SqlitePool;

    /// The view table's name.
    pub const VIEW_TABLE: &str = "bank_summary_view";

    /// A pool of 10 connections (as `sqlite_es::default_pool`) on `path`, with the store's
    /// pragmas: WAL, `synchronous=FULL`, a 5 s busy timeout.
    ///
    /// # Errors
    /// If the file cannot be opened.
    pub async fn pool(path: &std::path::Path) -> Result<SqlitePool, sqlx::Error> {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5))
            .foreign_keys(true);
        sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(10)
            .connect_with(options)
            .await
    }

    /// Creates `sqlite-es`'s tables (from its migration) in the pool's file.
    ///
    /// # Errors
    /// Database errors.
    pub async fn create_tables(pool: &SqlitePool) -> Result<(), sqlx::Error> {
        for ddl in [
            "CREATE TABLE events (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
             sequence integer CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL, \
             event_version text NOT NULL, payload text NOT NULL, metadata text NOT NULL, \
             PRIMARY KEY (aggregate_type, aggregate_id, sequence)) STRICT",
            "CREATE TABLE snapshots (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
             last_sequence integer CHECK (last_sequence >= 0) NOT NULL, \
             current_snapshot integer CHECK (current_snapshot >= 0) NOT NULL, \
             payload text NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)) \
             STRICT",
            "CREATE TABLE bank_summary_view (view_id text NOT NULL, \
             version integer CHECK (version >= 0) NOT NULL, payload text NOT NULL, \
             PRIMARY KEY (view_id)) STRICT",
        ] {
            sqlx::query(ddl).execute(pool).await?;
        }
        Ok(())
    }

    /// The framework: `sqlite_cqrs` (a pure event store: every command loads the whole stream)
    /// with one view.
    pub fn framework(pool: SqlitePool) -> SqliteCqrs<BankAccount> {
        let repository = Arc::new(SqliteViewRepository::<SummaryViewCq, BankAccount>::new(
            VIEW_TABLE,
            pool.clone(),
        ));
        let query = GenericQuery::new(repository);
        sqlite_es::sqlite_cqrs(pool, vec![Box::new(query)], ())
    }
}
