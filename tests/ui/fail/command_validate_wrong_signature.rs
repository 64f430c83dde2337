use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(validate = check)]
struct Deposit {
    amount: i64,
}

fn check(cmd: &Deposit) -> bool {
    cmd.amount > 0
}

fn main() {}
