use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Default, Clone, Serialize, Deserialize, ViewModel)]
struct Orders;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
struct OrderPlaced {
    customer_id: String,
}

#[derive(Default)]
struct OrdersView;

#[view(model = Orders)]
impl OrdersView {
    #[projects_on(id = customer)]
    async fn placed(&self, _orders: &mut Orders, _e: &OrderPlaced) {}
}

fn main() {}
