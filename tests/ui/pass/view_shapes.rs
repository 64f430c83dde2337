//! Every `#[projects_on]` shape: the model keyed by the event's entity, with or without
//! metadata, keyed by a field of the event (`id = ..`), and the multi-model `ViewContext`
//! shape; async or not, `()` or `Result`; `name` and `background` on the view.

use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
pub struct Deposited {
    pub amount: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
pub struct Withdrawn {
    pub amount: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
pub struct OrderPlaced {
    pub customer_id: String,
    pub total: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
pub struct Tagged(pub u64, pub String);

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
pub struct Closed;

#[derive(Debug, Default, Clone, Serialize, Deserialize, ViewModel)]
pub struct Summary {
    pub balance: i64,
    pub events: u32,
    pub last_position: u64,
}

#[derive(Default)]
pub struct SummaryView;

#[view(model = Summary, name = "bank.SummaryView")]
impl SummaryView {
    #[projects_on]
    async fn deposited(&self, summary: &mut Summary, e: &Deposited) {
        summary.balance += e.amount;
    }

    #[projects_on]
    fn withdrawn(&self, summary: &mut Summary, e: &Withdrawn, meta: &EventMeta) {
        summary.balance -= e.amount;
        summary.last_position = meta.position.0;
    }

    #[projects_on(id = customer_id)]
    async fn order_placed(
        &self,
        summary: &mut Summary,
        e: &OrderPlaced,
        meta: &EventMeta,
    ) -> Result<(), DomainError> {
        summary.balance += e.total;
        summary.last_position = meta.position.0;
        Ok(())
    }

    #[projects_on(id = 0)]
    fn tagged(&self, summary: &mut Summary, _e: &Tagged) -> Result<(), DomainError> {
        summary.events += 1;
        Ok(())
    }

    #[projects_on]
    async fn closed(&self, _e: &Closed, cx: &mut ViewContext) -> Result<(), Error> {
        let id = cx.meta().entity_id().clone();
        let totals: Summary = cx.load_or_default(&EntityId::from("totals")).await?;
        cx.save(&EntityId::from("totals"), Summary { events: totals.events + 1, ..totals });
        cx.delete::<Summary>(&id);
        Ok(())
    }
}

#[derive(Default)]
pub struct SlowView;

#[view(model = Summary, background)]
impl SlowView {
    #[projects_on]
    fn deposited(&self, summary: &mut Summary, _e: &Deposited) {
        summary.events += 1;
    }

    #[projects_on]
    fn closed(&self, _e: &Closed, _cx: &mut ViewContext) {}
}

fn main() {}
