use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Default, Clone, Serialize, Deserialize, ViewModel)]
struct Orders;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
struct OrderPlaced;

#[derive(Default)]
struct OrdersView;

#[view(model = Orders)]
impl OrdersView {
    #[projects_on]
    async fn placed(&self, _orders: &mut Orders, _e: &OrderPlaced, _cx: &mut ViewContext) {}
}

fn main() {}
