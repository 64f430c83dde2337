use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(version = 2)]
struct Deposited {
    cents: i64,
}

#[upcast(Deposited)]
fn deposited_v1(_payload: &mut serde_json::Value) {}

fn main() {}
