use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
struct Deposited;

#[projects_on]
async fn deposited(_e: &Deposited) {}

fn main() {}
