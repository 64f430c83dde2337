use sourceflow::prelude::*;

#[derive(Debug, Clone, Command)]
struct Deposit {
    amount: i64,
}

fn main() {}
