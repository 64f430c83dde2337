use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
struct Deposit;

struct AccountSaga;

impl AccountSaga {
    #[handles]
    async fn deposit(&self, _cmd: &Deposit) {}
}

fn main() {}
