//! A minimal bank on sourceflow: the template to copy.
//!
//! - `AccountSaga` owns the `Account` entity and handles its commands.
//! - `BalanceView` keeps an `AccountBalance` read model per account.
//! - `OverdraftPolicy` reacts to `Overdrawn` events by charging a fee: a follow-up command
//!   sent from an aggregate reaction, exactly once per event.

use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

/// Fee charged, in cents, each time an account goes below zero.
pub const OVERDRAFT_FEE: i64 = 25;

// ---- Commands: what callers ask for. Wire names are stable, whatever the Rust type is called.

/// Opens an account with an overdraft limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "bank.OpenAccount", validate = check_open)]
pub struct OpenAccount {
    /// Account holder.
    pub owner: String,
    /// How far below zero the balance may go, in cents.
    pub overdraft_limit: i64,
}

fn check_open(cmd: &OpenAccount, v: &mut Violations) {
    v.check(cmd.owner.trim().is_empty(), "owner", "must not be empty");
    v.check(
        cmd.overdraft_limit < 0,
        "overdraft_limit",
        "must not be negative",
    );
}

/// Puts money in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "bank.Deposit", validate)]
pub struct Deposit {
    /// Amount in cents.
    pub amount: i64,
}

impl Validate for Deposit {
    fn validate(&self, v: &mut Violations) {
        v.check(self.amount <= 0, "amount", "must be positive");
    }
}

/// Takes money out, possibly into the overdraft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "bank.Withdraw", validate)]
pub struct Withdraw {
    /// Amount in cents.
    pub amount: i64,
}

impl Validate for Withdraw {
    fn validate(&self, v: &mut Violations) {
        v.check(self.amount <= 0, "amount", "must be positive");
    }
}

/// Charges the overdraft fee (sent by `OverdraftPolicy`, not by people).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "bank.ChargeOverdraftFee")]
pub struct ChargeOverdraftFee {
    /// Fee in cents.
    pub fee: i64,
}

/// Closes an account; only an account at zero can be closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "bank.CloseAccount")]
pub struct CloseAccount;

// ---- Events: what happened, in the account's stream.

/// An account was opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "bank.AccountOpened")]
pub struct AccountOpened {
    /// Account holder.
    pub owner: String,
    /// Overdraft limit in cents.
    pub overdraft_limit: i64,
}

/// Money came in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "bank.Deposited")]
pub struct Deposited {
    /// Amount in cents.
    pub amount: i64,
    /// Balance afterwards.
    pub balance: i64,
}

/// Money went out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "bank.Withdrawn")]
pub struct Withdrawn {
    /// Amount in cents.
    pub amount: i64,
    /// Balance afterwards.
    pub balance: i64,
}

/// The balance went below zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "bank.Overdrawn")]
pub struct Overdrawn {
    /// Balance afterwards (negative).
    pub balance: i64,
}

/// A fee was charged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "bank.FeeCharged")]
pub struct FeeCharged {
    /// Fee in cents.
    pub fee: i64,
    /// Balance afterwards.
    pub balance: i64,
}

/// The account was closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "bank.AccountClosed")]
pub struct AccountClosed;

// ---- The entity: the state the saga guards. Stored as a cache of the command log.

/// An account's state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Entity)]
#[entity(name = "bank.Account")]
pub struct Account {
    /// Account holder (empty until opened).
    pub owner: String,
    /// Balance in cents.
    pub balance: i64,
    /// How far below zero the balance may go.
    pub overdraft_limit: i64,
    /// Closed accounts refuse everything.
    pub closed: bool,
}

impl Account {
    fn ensure_open(&self) -> Result<(), DomainError> {
        if self.owner.is_empty() {
            return Err(DomainError::with_code(
                "not_open",
                "the account is not open",
            ));
        }
        if self.closed {
            return Err(DomainError::with_code("closed", "the account is closed"));
        }
        Ok(())
    }
}

/// Handles every account command. `Default`, so it is discovered without registration.
#[derive(Default)]
pub struct AccountSaga;

#[saga(entity = Account)]
impl AccountSaga {
    #[handles]
    async fn open(
        &self,
        account: &mut Account,
        cmd: &OpenAccount,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        if !account.owner.is_empty() {
            return Err(DomainError::with_code(
                "already_open",
                "the account is already open",
            ));
        }
        account.owner = cmd.owner.clone();
        account.overdraft_limit = cmd.overdraft_limit;
        cx.publish(AccountOpened {
            owner: cmd.owner.clone(),
            overdraft_limit: cmd.overdraft_limit,
        });
        Ok(())
    }

    #[handles]
    async fn deposit(
        &self,
        account: &mut Account,
        cmd: &Deposit,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        account.ensure_open()?;
        account.balance += cmd.amount;
        cx.publish(Deposited {
            amount: cmd.amount,
            balance: account.balance,
        });
        Ok(())
    }

    #[handles]
    async fn withdraw(
        &self,
        account: &mut Account,
        cmd: &Withdraw,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        account.ensure_open()?;
        if account.balance - cmd.amount < -account.overdraft_limit {
            return Err(DomainError::with_code(
                "insufficient_funds",
                format!(
                    "withdrawing {} would exceed the overdraft limit of {}",
                    cmd.amount, account.overdraft_limit
                ),
            ));
        }
        let was_positive = account.balance >= 0;
        account.balance -= cmd.amount;
        cx.publish(Withdrawn {
            amount: cmd.amount,
            balance: account.balance,
        });
        if was_positive && account.balance < 0 {
            cx.publish(Overdrawn {
                balance: account.balance,
            });
        }
        Ok(())
    }

    #[handles]
    async fn charge_fee(
        &self,
        account: &mut Account,
        cmd: &ChargeOverdraftFee,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        account.ensure_open()?;
        account.balance -= cmd.fee;
        cx.publish(FeeCharged {
            fee: cmd.fee,
            balance: account.balance,
        });
        Ok(())
    }

    #[handles]
    async fn close(
        &self,
        account: &mut Account,
        _cmd: &CloseAccount,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        account.ensure_open()?;
        if account.balance != 0 {
            return Err(DomainError::with_code(
                "balance_not_zero",
                format!("the balance is {}, it must be 0 to close", account.balance),
            ));
        }
        account.closed = true;
        cx.publish(AccountClosed);
        Ok(())
    }
}

// ---- The read side: one model per account, kept up to date by a view.

/// What a customer sees of an account.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, ViewModel)]
#[view_model(name = "bank.AccountBalance")]
pub struct AccountBalance {
    /// Account holder.
    pub owner: String,
    /// Balance in cents.
    pub balance: i64,
    /// Number of movements (deposits, withdrawals, fees).
    pub movements: u32,
    /// Fees paid so far.
    pub fees_paid: i64,
    /// Whether the account is closed.
    pub closed: bool,
}

/// Projects account events onto `AccountBalance`.
#[derive(Default)]
pub struct BalanceView;

#[view(model = AccountBalance)]
impl BalanceView {
    #[projects_on]
    async fn opened(&self, balance: &mut AccountBalance, e: &AccountOpened) {
        balance.owner = e.owner.clone();
    }

    #[projects_on]
    async fn deposited(&self, balance: &mut AccountBalance, e: &Deposited) {
        balance.balance = e.balance;
        balance.movements += 1;
    }

    #[projects_on]
    async fn withdrawn(&self, balance: &mut AccountBalance, e: &Withdrawn) {
        balance.balance = e.balance;
        balance.movements += 1;
    }

    #[projects_on]
    async fn fee_charged(&self, balance: &mut AccountBalance, e: &FeeCharged) {
        balance.balance = e.balance;
        balance.movements += 1;
        balance.fees_paid += e.fee;
    }

    #[projects_on]
    async fn closed(&self, balance: &mut AccountBalance, _e: &AccountClosed) {
        balance.closed = true;
    }

    /// A deleted account (`flow.delete_stream::<Account>(id)`) takes its balance with it.
    #[projects_on]
    async fn deleted(&self, e: &sourceflow::StreamDeleted, cx: &mut ViewContext) {
        if e.is::<Account>() {
            cx.delete::<AccountBalance>(&e.id);
        }
    }
}

// ---- A reaction: the domain-facing side of the account, sending follow-up commands.

/// Charges a fee whenever an account goes into overdraft.
#[derive(Default)]
pub struct OverdraftPolicy;

#[aggregate(entity = Account)]
impl OverdraftPolicy {
    #[subscribes]
    async fn on_overdrawn(&self, _e: &Overdrawn, cx: &mut ReactionContext) {
        // The follow-up's message id is derived from this event, so running this reaction
        // twice (after a crash, or in two processes) still charges the fee once.
        cx.send(ChargeOverdraftFee { fee: OVERDRAFT_FEE });
    }
}

#[cfg(test)]
mod tests {
    use sourceflow::testing::SagaTest;

    use super::*;

    #[tokio::test]
    async fn overdrawing_records_the_overdraft() {
        let test = SagaTest::new(AccountSaga).await;
        let id = EntityId::from("acct-1");
        test.given(
            &id,
            OpenAccount {
                owner: "Ada".into(),
                overdraft_limit: 100,
            },
        )
        .await
        .given(&id, Deposit { amount: 30 })
        .await;
        test.when(&id, Withdraw { amount: 50 })
            .await
            .expect_event(Withdrawn {
                amount: 50,
                balance: -20,
            })
            .expect_event(Overdrawn { balance: -20 })
            .expect_no_commands();
        assert_eq!(test.state::<Account>(&id).await.balance, -20);
    }

    #[tokio::test]
    async fn the_overdraft_limit_is_enforced() {
        let test = SagaTest::new(AccountSaga).await;
        let id = EntityId::from("acct-2");
        test.given_state(
            &id,
            Account {
                owner: "Bob".into(),
                balance: 10,
                overdraft_limit: 5,
                closed: false,
            },
        )
        .await;
        test.when(&id, Withdraw { amount: 16 })
            .await
            .expect_rejected("insufficient_funds");
        test.when(&id, Withdraw { amount: 0 })
            .await
            .expect_invalid("amount");
        test.when(&id, Withdraw { amount: 15 })
            .await
            .expect_event(Withdrawn {
                amount: 15,
                balance: -5,
            });
    }
}
