use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
struct Account;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
struct Deposit;

#[derive(Default)]
struct AccountSaga<T>(T);

#[saga(entity = Account)]
impl<T: Send + Sync + 'static> AccountSaga<T> {
    #[handles]
    async fn deposit(&self, _account: &mut Account, _cmd: &Deposit) {}
}

fn main() {}
