use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
struct Account;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
struct Overdrawn;

#[derive(Default)]
struct OverdraftPolicy;

#[aggregate(entity = Account)]
impl OverdraftPolicy {
    #[subscribes]
    async fn overdrawn(&self, _account: &mut Account, _e: &Overdrawn) {}
}

fn main() {}
