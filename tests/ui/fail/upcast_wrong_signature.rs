use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(version = 2)]
struct Deposited {
    cents: i64,
}

#[upcast(Deposited, from = 1)]
fn deposited_v1(_payload: &mut serde_json::Value, _version: u32) {}

#[upcast(Deposited, from = 1)]
fn deposited_shared(_payload: &serde_json::Value) {}

#[upcast(Deposited, from = 1)]
async fn deposited_async(_payload: &mut serde_json::Value) {}

fn main() {}
