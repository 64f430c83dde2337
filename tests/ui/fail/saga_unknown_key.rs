use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
struct Account;

#[derive(Default)]
struct AccountSaga;

#[saga(entity = Account, entyty = Account)]
impl AccountSaga {}

fn main() {}
