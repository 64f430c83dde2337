use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(validate)]
struct Deposit {
    amount: i64,
}

fn main() {}
