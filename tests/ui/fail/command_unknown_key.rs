use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "bank.Deposit", verison = 2)]
struct Deposit;

fn main() {}
