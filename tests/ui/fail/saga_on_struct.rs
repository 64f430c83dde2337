use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
struct Account;

#[saga(entity = Account)]
#[derive(Default)]
struct AccountSaga;

fn main() {}
