//! The same bank account on `esrs` (Prima's event_sourcing.rs) with its Postgres store and one
//! event handler keeping a summary table, built as the crate's docs show.

use async_trait::async_trait;
use esrs::handler::EventHandler;
use esrs::manager::AggregateManager;
use esrs::store::postgres::{PgStore, PgStoreBuilder, PgStoreError};
use esrs::store::StoreEvent;
use esrs::AggregateState;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::cqrs::BankError;
use crate::domain::Deposit;

/// The account as an `esrs` aggregate.
pub struct EsrsAccount;

/// The account's state.
#[derive(Debug, Default, Clone)]
pub struct EsrsState {
    /// Balance in cents.
    pub balance: i64,
    /// Number of deposits.
    pub deposits: u64,
}

/// The account's event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EsrsDeposited {
    /// Amount in cents.
    pub amount: i64,
    /// Balance afterwards.
    pub balance: i64,
}

impl esrs::Aggregate for EsrsAccount {
    const NAME: &'static str = "esrs_bank_account";
    type State = EsrsState;
    type Command = Deposit;
    type Event = EsrsDeposited;
    type Error = BankError;

    fn handle_command(
        state: &Self::State,
        command: Self::Command,
    ) -> Result<Vec<Self::Event>, Self::Error> {
        if command.amount <= 0 {
            return Err(BankError("amount must be positive".to_owned()));
        }
        Ok(vec![EsrsDeposited {
            amount: command.amount,
            balance: state.balance + command.amount,
        }])
    }

    fn apply_event(mut state: Self::State, payload: Self::Event) -> Self::State {
        state.balance = payload.balance;
        state.deposits += 1;
        state
    }
}

/// The summary table's name.
pub const VIEW_TABLE: &str = "esrs_bank_summary";

/// Keeps one summary row per account (an upsert per event), after the commit like
/// sourceflow's view.
pub struct SummaryHandler {
    pool: PgPool,
}

#[async_trait]
impl EventHandler<EsrsAccount> for SummaryHandler {
    async fn handle(&self, event: &StoreEvent<EsrsDeposited>) {
        let done = sqlx::query(
            "INSERT INTO esrs_bank_summary (id, balance, deposits) VALUES ($1, $2, 1) \
             ON CONFLICT (id) DO UPDATE SET balance = excluded.balance, \
             deposits = esrs_bank_summary.deposits + 1",
        )
        .bind(event.aggregate_id)
        .bind(event.payload.balance)
        .execute(&self.pool)
        .await;
        if let Err(e) = done {
            eprintln!("esrs summary handler: {e}");
        }
    }
}

/// The `esrs` side of a run: its store (migrated) and manager.
pub struct Esrs {
    manager: AggregateManager<PgStore<EsrsAccount>>,
}

impl Esrs {
    /// Creates the summary table and the store's tables in the pool's schema.
    ///
    /// # Errors
    /// Database errors.
    pub async fn new(pool: PgPool) -> Result<Self, sqlx::Error> {
        sqlx::query(
            "CREATE TABLE esrs_bank_summary (id uuid PRIMARY KEY, balance bigint NOT NULL, \
             deposits bigint NOT NULL)",
        )
        .execute(&pool)
        .await?;
        let store = PgStoreBuilder::<EsrsAccount>::new(pool.clone())
            .add_event_handler(SummaryHandler { pool })
            .try_build()
            .await?;
        Ok(Self {
            manager: AggregateManager::new(store),
        })
    }

    /// Loads account `id` from its events and handles one deposit (the crate's documented
    /// load-then-handle path).
    ///
    /// # Errors
    /// Store errors, or the refusal as a store-independent message.
    pub async fn deposit(&self, id: Uuid, deposit: Deposit) -> Result<(), EsrsError> {
        let state = self
            .manager
            .load(id)
            .await?
            .unwrap_or_else(|| AggregateState::with_id(id));
        self.manager
            .handle_command(state, deposit)
            .await?
            .map_err(EsrsError::Refused)?;
        Ok(())
    }
}

/// Why an `esrs` command failed.
#[derive(Debug)]
pub enum EsrsError {
    /// The store failed.
    Store(PgStoreError),
    /// The aggregate refused the command.
    Refused(BankError),
}

impl From<PgStoreError> for EsrsError {
    fn from(value: PgStoreError) -> Self {
        EsrsError::Store(value)
    }
}

impl std::fmt::Display for EsrsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EsrsError::Store(e) => write!(f, "esrs store: {e}"),
            EsrsError::Refused(e) => write!(f, "esrs refused: {e}"),
        }
    }
}

impl std::error::Error for EsrsError {}

impl EsrsError {
    /// True when another writer stored the aggregate's next sequence number first: `esrs`
    /// leaves retrying such a lost race (its events table's unique key) to the caller.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            EsrsError::Store(PgStoreError::Sqlx(sqlx::Error::Database(e))) if e.is_unique_violation()
        )
    }
}

/// The events table `esrs` keeps for [`EsrsAccount`].
pub const EVENTS_TABLE: &str = "esrs_bank_account_events";
