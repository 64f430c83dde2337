//! Every `#[handles]` shape of a saga that owns an entity: async or not, with or without the
//! context, returning `()`, `Result<(), DomainError>` or `Result<(), E: Into<DomainError>>`.

use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
pub struct Account {
    pub balance: i64,
}

macro_rules! commands {
    ($($name:ident),*) => {$(
        #[derive(Debug, Clone, Serialize, Deserialize, Command)]
        pub struct $name { pub amount: i64 }
    )*};
}
commands!(AsyncPlain, AsyncWithContext, AsyncResult, SyncPlain, SyncWithContext, SyncResult, CustomError);

mod events {
    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, sourceflow::Event)]
    pub struct Changed {
        pub balance: i64,
    }
}

pub struct Overdrawn;

impl From<Overdrawn> for DomainError {
    fn from(_: Overdrawn) -> Self {
        DomainError::with_code("overdrawn", "not enough money")
    }
}

/// Holds a dependency, so it is not `Default`: registered by value.
pub struct AccountSaga {
    pub limit: i64,
}

#[saga(entity = Account, name = "bank.AccountSaga")]
impl AccountSaga {
    /// A plain method next to the handlers stays untouched.
    pub fn new(limit: i64) -> Self {
        Self { limit }
    }

    #[handles]
    async fn async_plain(&self, account: &mut Account, cmd: &AsyncPlain) {
        account.balance += cmd.amount;
    }

    #[handles]
    async fn async_with_context(
        &self,
        account: &mut Account,
        cmd: &AsyncWithContext,
        cx: &mut SagaContext,
    ) {
        account.balance += cmd.amount;
        cx.publish(events::Changed { balance: account.balance });
    }

    #[handles]
    pub async fn async_result(
        &self,
        account: &mut Account,
        cmd: &crate::AsyncResult,
        cx: &mut sourceflow::SagaContext,
    ) -> Result<(), DomainError> {
        if account.balance + cmd.amount < -self.limit {
            return Err(DomainError::rejected("over the limit"));
        }
        account.balance += cmd.amount;
        cx.publish(events::Changed { balance: account.balance });
        Ok(())
    }

    #[handles]
    fn sync_plain(&self, account: &mut Account, cmd: &SyncPlain) {
        account.balance += cmd.amount;
    }

    #[handles]
    fn sync_with_context(&self, account: &mut Account, cmd: &SyncWithContext, cx: &mut SagaContext) {
        account.balance += cmd.amount;
        if !cx.is_replay() {
            cx.publish(events::Changed { balance: account.balance });
        }
    }

    #[handles]
    fn sync_result(&self, account: &mut Account, cmd: &SyncResult) -> Result<(), DomainError> {
        account.balance += cmd.amount;
        Ok(())
    }

    #[handles]
    async fn custom_error(&self, account: &mut Account, cmd: &CustomError) -> Result<(), Overdrawn> {
        if account.balance < cmd.amount {
            return Err(Overdrawn);
        }
        account.balance -= cmd.amount;
        Ok(())
    }
}

fn main() {
    // The methods stay callable as written.
    let saga = AccountSaga::new(10);
    let mut account = Account::default();
    saga.sync_plain(&mut account, &SyncPlain { amount: 5 });
    assert!(saga.sync_result(&mut account, &SyncResult { amount: 1 }).is_ok());
    assert_eq!(account.balance, 6);
}
