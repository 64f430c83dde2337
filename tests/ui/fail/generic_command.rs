use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
struct Deposit<T> {
    amount: T,
}

fn main() {}
