use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
struct Overdrawn;

struct OverdraftPolicy;

impl OverdraftPolicy {
    #[subscribes]
    async fn overdrawn(&self, _e: &Overdrawn) {}
}

fn main() {}
