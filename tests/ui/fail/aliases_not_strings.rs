use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "bank.Open", aliases = [OpenAccount, "bank.Open"])]
struct Open {
    owner: String,
}

fn main() {}
