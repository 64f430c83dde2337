use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
struct Account;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
struct Deposit;

#[derive(Default)]
struct AccountSaga;

#[saga]
impl AccountSaga {
    #[handles]
    async fn deposit(&self, _account: &mut Account, _cmd: &Deposit) {}
}

fn main() {}
