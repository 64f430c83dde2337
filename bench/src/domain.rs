//! The benchmark domain on sourceflow: one bank account, one deposit command, one event, one
//! view and one aggregate reaction. Every workload and every peer uses the same shapes.

use serde::{Deserialize, Serialize};
use sourceflow::personal::Personal;
use sourceflow::prelude::*;

/// Puts money in. Its JSON is about 100 bytes, the payload size of every workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "bench.Deposit")]
pub struct Deposit {
    /// Amount in cents.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
    /// The caller's reference (an invoice number).
    pub reference: String,
    /// Free text shown on the statement.
    pub memo: String,
}

impl Deposit {
    /// The `i`-th deposit of a run: amounts 1..=100, a distinct reference.
    pub fn nth(i: u64) -> Self {
        Self {
            amount: (i % 100) as i64 + 1,
            currency: "EUR".to_owned(),
            reference: format!("INV-{i:010}"),
            memo: "monthly savings transfer".to_owned(),
        }
    }

    /// A SQLite expression giving the JSON of `Deposit::nth(X)` for the integer expression `x`
    /// (used to seed large logs inside the database; checked by a unit test).
    pub fn sqlite_json(x: &str) -> String {
        format!(
            "printf('{{\"amount\":%d,\"currency\":\"EUR\",\"reference\":\"INV-%010d\",\
             \"memo\":\"monthly savings transfer\"}}', ({x}) % 100 + 1, {x})"
        )
    }
}

/// A deposit as a later release of the domain writes it: version 2 renamed `amount` to
/// `cents`. Its version 1 rows (the payload of [`Deposit`]) are brought up to version 2 by
/// [`credit_v1`] on every read: W6 replays a log of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "bench.Credit", version = 2)]
pub struct Credit {
    /// Amount in cents.
    pub cents: i64,
    /// ISO currency code.
    pub currency: String,
    /// The caller's reference (an invoice number).
    pub reference: String,
    /// Free text shown on the statement.
    pub memo: String,
}

/// Version 1 of [`Credit`] called the amount `amount`.
#[upcast(Credit, from = 1)]
pub fn credit_v1(payload: &mut serde_json::Value) -> Result<(), String> {
    let object = payload.as_object_mut().ok_or("a credit is an object")?;
    let amount = object.remove("amount").ok_or("version 1 has `amount`")?;
    object.insert("cents".to_owned(), amount);
    Ok(())
}

/// [`Deposit`] with its memo kept as personal data of the payer (W12): the same shape and
/// size, with one field sealed at rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "bench.PrivateDeposit")]
pub struct PrivateDeposit {
    /// Amount in cents.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
    /// The caller's reference (an invoice number).
    pub reference: String,
    /// Free text shown on the statement: personal data of the payer.
    pub memo: Personal<String>,
}

impl PrivateDeposit {
    /// The `i`-th deposit of a run from `payer`, as [`Deposit::nth`].
    pub fn nth(i: u64, payer: &str) -> Self {
        let plain = Deposit::nth(i);
        Self {
            amount: plain.amount,
            currency: plain.currency,
            reference: plain.reference,
            memo: Personal::new(payer, plain.memo),
        }
    }
}

/// Money came in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "bench.Deposited")]
pub struct Deposited {
    /// Amount in cents.
    pub amount: i64,
    /// Balance afterwards.
    pub balance: i64,
}

/// The account's state, owned by [`AccountSaga`].
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Entity)]
#[entity(name = "bench.Account")]
pub struct Account {
    /// Balance in cents.
    pub balance: i64,
    /// Number of deposits.
    pub deposits: u64,
}

/// Handles [`Deposit`]: loads the account, adds the amount, emits [`Deposited`].
#[derive(Default)]
pub struct AccountSaga;

#[saga(entity = Account)]
impl AccountSaga {
    #[handles]
    async fn deposit(
        &self,
        account: &mut Account,
        cmd: &Deposit,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        if cmd.amount <= 0 {
            return Err(DomainError::rejected("amount must be positive"));
        }
        account.balance += cmd.amount;
        account.deposits += 1;
        cx.publish(Deposited {
            amount: cmd.amount,
            balance: account.balance,
        });
        Ok(())
    }

    #[handles]
    async fn private_deposit(
        &self,
        account: &mut Account,
        cmd: &PrivateDeposit,
        cx: &mut SagaContext,
    ) {
        account.balance += cmd.amount;
        account.deposits += 1;
        cx.publish(Deposited {
            amount: cmd.amount,
            balance: account.balance,
        });
    }

    #[handles]
    async fn credit(&self, account: &mut Account, cmd: &Credit, cx: &mut SagaContext) {
        account.balance += cmd.cents;
        account.deposits += 1;
        cx.publish(Deposited {
            amount: cmd.cents,
            balance: account.balance,
        });
    }
}

/// The read model: what a customer sees of an account.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, ViewModel)]
#[view_model(name = "bench.AccountSummary")]
pub struct AccountSummary {
    /// Balance in cents.
    pub balance: i64,
    /// Number of deposits.
    pub deposits: u64,
}

/// The name [`SummaryView`] keeps its position under (its `#[view(name = ..)]`).
pub const SUMMARY_VIEW: &str = "bench.SummaryView";

/// Projects [`Deposited`] onto [`AccountSummary`].
#[derive(Default)]
pub struct SummaryView;

#[view(model = AccountSummary, name = "bench.SummaryView")]
impl SummaryView {
    #[projects_on]
    async fn deposited(&self, summary: &mut AccountSummary, e: &Deposited) {
        summary.balance = e.balance;
        summary.deposits += 1;
    }
}

/// The domain-facing side of the account: subscribes to [`Deposited`] and sends nothing, so
/// the pipeline pays for delivering the event to an aggregate without a follow-up command.
#[derive(Default)]
pub struct AccountAggregate;

#[aggregate(entity = Account, name = "bench.AccountAggregate")]
impl AccountAggregate {
    #[subscribes]
    async fn on_deposited(&self, e: &Deposited, _cx: &mut ReactionContext) {
        std::hint::black_box(e.balance);
    }
}

/// Which components a benchmark flow registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Components {
    /// Saga, view and aggregate: the full pipeline of W1 to W5.
    Full,
    /// The saga alone (diagnostics: what the view's own commit costs).
    SagaOnly,
    /// The view alone (W7's rebuild).
    ViewOnly,
    /// The view and the aggregate: a read side fed from another process's events (W9).
    ReadSide,
}

/// Builds a flow on `store` with exactly the chosen components (no discovery).
///
/// # Errors
/// As [`sourceflow::Builder::build`].
pub async fn flow(
    store: impl sourceflow::store::Store + 'static,
    components: Components,
) -> Result<SourceFlow, Error> {
    // Nothing in these workloads schedules a command; W10 measures the scheduler on its own.
    let builder = SourceFlow::builder()
        .store(store)
        .without_discovery()
        .without_scheduler();
    let builder = match components {
        Components::Full => builder
            .saga(AccountSaga)
            .view(SummaryView)
            .aggregate(AccountAggregate),
        Components::SagaOnly => builder.saga(AccountSaga),
        Components::ViewOnly => builder.view(SummaryView),
        Components::ReadSide => builder.view(SummaryView).aggregate(AccountAggregate),
    };
    builder.build().await
}

/// The stream id of account `i` (shared by every framework in a workload).
pub fn account_id(i: u64) -> String {
    format!("acct-{i:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deposit_is_about_100_bytes_of_json() {
        let json = serde_json::to_vec(&Deposit::nth(123_456)).expect("encode");
        assert!((90..=110).contains(&json.len()), "{} bytes", json.len());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_pipeline_runs_and_the_view_sees_it() {
        let flow = flow(MemoryStore::new(), Components::Full)
            .await
            .expect("build");
        let id = account_id(1);
        for i in 0..3 {
            flow.send(&*id, Deposit::nth(i)).await.expect("send");
        }
        let summary: AccountSummary = flow
            .view_model(&*id)
            .await
            .expect("read")
            .expect("projected");
        assert_eq!(summary.deposits, 3);
        assert_eq!(summary.balance, 1 + 2 + 3);
        assert_eq!(
            flow.replay::<Account>(&*id).await.expect("replay").balance,
            6
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_sqlite_seed_expression_matches_the_rust_payload() {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("open");
        let json: String = sqlx::query_scalar(&format!("SELECT {}", Deposit::sqlite_json("?1")))
            .bind(4242_i64)
            .fetch_one(&mut db)
            .await
            .expect("query");
        let decoded: Deposit = serde_json::from_str(&json).expect("decode");
        assert_eq!(decoded, Deposit::nth(4242));
    }
}
