use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
struct Ping;

#[derive(Default)]
struct Pinger;

#[saga]
impl Clone for Pinger {
    fn clone(&self) -> Self {
        Pinger
    }
}

fn main() {}
