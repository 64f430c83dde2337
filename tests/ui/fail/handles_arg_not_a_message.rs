use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
struct Account;

struct Deposit {
    amount: i64,
}

#[derive(Default)]
struct AccountSaga;

#[saga(entity = Account)]
impl AccountSaga {
    #[handles]
    async fn deposit(&self, account: &mut Account, cmd: &Deposit) {
        let _ = (account, cmd.amount);
    }
}

fn main() {}
