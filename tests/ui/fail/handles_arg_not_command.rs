use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
struct Account;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
struct Deposited {
    amount: i64,
}

#[derive(Default)]
struct AccountSaga;

#[saga(entity = Account)]
impl AccountSaga {
    #[handles]
    async fn deposited(&self, _account: &mut Account, _e: &Deposited) {}
}

fn main() {}
