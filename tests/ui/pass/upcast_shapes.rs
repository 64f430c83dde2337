//! Every upcaster shape, and versions and aliases on every derive.
use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "shop.PlaceOrder", version = 3, aliases = ["shop.Order", "shop.NewOrder"])]
struct PlaceOrder {
    lines: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "shop.OrderPlaced", version = 2, aliases = ["shop.Placed"])]
struct OrderPlaced {
    lines: u32,
    currency: String,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, Entity)]
#[entity(name = "shop.Order", version = 4, aliases = ["shop.Basket"])]
struct Order {
    lines: u32,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, ViewModel)]
#[view_model(name = "shop.OrderRow", aliases = ["shop.Row"])]
struct OrderRow {
    lines: u32,
}

#[derive(Deserialize)]
struct OrderPlacedV1 {
    lines: u32,
}

// On the JSON value, infallible.
#[upcast(PlaceOrder, from = 1)]
fn place_order_v1(payload: &mut serde_json::Value) {
    payload["lines"] = 1.into();
}

// On the JSON value, fallible; and renaming the type.
#[upcast(PlaceOrder, from = 2, name = "shop.Order")]
fn place_order_v2(payload: &mut serde_json::Value) -> Result<(), String> {
    payload.get("lines").map(drop).ok_or_else(|| "no lines".to_owned())
}

// Typed, fallible.
#[upcast(OrderPlaced, from = 1)]
fn order_placed_v1(old: OrderPlacedV1) -> Result<OrderPlaced, std::convert::Infallible> {
    Ok(OrderPlaced {
        lines: old.lines,
        currency: "EUR".into(),
    })
}

fn main() {
    assert_eq!(<PlaceOrder as sourceflow::Message>::VERSION, 3);
    assert_eq!(<Order as sourceflow::Entity>::VERSION, 4);
    assert_eq!(<OrderRow as sourceflow::ViewModel>::ALIASES, ["shop.Row"]);
}
