use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
struct Deposited {
    amount: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
struct Deposit {
    amount: i64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
struct Account {
    balance: i64,
}

#[applies]
impl Account {
    fn by_value(&mut self, e: Deposited) {
        self.balance += e.amount;
    }

    fn shared_self(&self, _e: &Deposited) {}

    fn fallible(&mut self, _e: &Deposited) -> Result<(), String> {
        Ok(())
    }

    async fn later(&mut self, _e: &Deposited) {}
}

/// A command is not an event.
#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
struct Ledger {
    total: i64,
}

#[applies]
impl Ledger {
    fn deposit(&mut self, cmd: &Deposit) {
        self.total += cmd.amount;
    }
}

/// Only entities have appliers.
struct NotAnEntity;

#[applies]
impl NotAnEntity {
    fn deposited(&mut self, _e: &Deposited) {}
}

fn main() {}
