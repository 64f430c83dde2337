use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(version = 2)]
struct Deposited {
    cents: i64,
}

// Version 2 is today's: there is no version 3 for this step to write.
#[upcast(Deposited, from = 2)]
fn deposited_v2(_payload: &mut serde_json::Value) {}

fn main() {}
