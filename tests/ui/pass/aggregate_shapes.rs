//! Every `#[subscribes]` shape: with or without the reaction context, async or not, `()` or
//! `Result`.

use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
pub struct Account {
    pub balance: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
pub struct Overdrawn {
    pub balance: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
pub struct Deposited;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
pub struct Withdrawn;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
pub struct Closed;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
pub struct ChargeFee {
    pub fee: i64,
}

#[derive(Default)]
pub struct OverdraftPolicy;

#[aggregate(entity = Account, name = "bank.OverdraftPolicy")]
impl OverdraftPolicy {
    #[subscribes]
    async fn overdrawn(&self, e: &Overdrawn, cx: &mut ReactionContext) -> Result<(), DomainError> {
        if e.balance < -1000 {
            return Err(DomainError::rejected("too deep"));
        }
        cx.send(ChargeFee { fee: 25 });
        Ok(())
    }

    #[subscribes]
    async fn deposited(&self, _e: &Deposited) {}

    #[subscribes]
    fn withdrawn(&self, _e: &Withdrawn, cx: &mut ReactionContext) {
        let _ = cx.meta().position;
    }

    #[subscribes]
    fn closed(&self, _e: &Closed) -> Result<(), DomainError> {
        Ok(())
    }
}

fn main() {}
