use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deposited {
    cents: i64,
}

#[upcast(Deposited, from = 1)]
fn deposited_v1(_payload: &mut serde_json::Value) {}

fn main() {}
