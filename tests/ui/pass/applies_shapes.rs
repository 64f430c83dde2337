//! Every applier shape.
use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
struct Opened {
    owner: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
struct Deposited {
    amount: i64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
struct Account {
    owner: String,
    balance: i64,
    last_position: u64,
}

#[applies]
impl Account {
    fn opened(&mut self, e: &Opened) {
        self.owner.clone_from(&e.owner);
    }

    fn deposited(&mut self, e: &Deposited, meta: &EventMeta) -> () {
        self.balance += e.amount;
        self.last_position = meta.position.0;
    }
}

fn main() {}
