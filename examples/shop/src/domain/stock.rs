//! Stock: one `Stock` entity per product (its id is the SKU), reserving units for orders.
//!
//! Orders never touch stock directly. `StockReservations` reacts to order events and sends
//! stock commands; when a reservation fails, the `Stock` saga records why and sends
//! `RejectLine` back to the order (a compensating command), so both sides stay consistent
//! without a transaction spanning two entities.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

use super::catalogue;
use super::orders::{ItemAdded, ItemRemoved, Order, OrderCancelled, OrderPaid, RejectLine};

/// Most units one delivery may bring.
pub const MAX_RESTOCK: u32 = 100_000;

// ---- Commands

/// Holds units for an order (sent when an item is added).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "shop.ReserveStock", validate)]
pub struct ReserveStock {
    /// The order the units are for.
    pub order_id: String,
    /// Units to hold.
    pub quantity: u32,
}

impl Validate for ReserveStock {
    fn validate(&self, v: &mut Violations) {
        v.check(self.order_id.is_empty(), "order_id", "must not be empty");
        v.check(self.quantity == 0, "quantity", "must be at least 1");
    }
}

/// Gives units held for an order back (item removed, order cancelled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "shop.ReleaseStock")]
pub struct ReleaseStock {
    /// The order the units were held for.
    pub order_id: String,
    /// Units to give back (at most what is held).
    pub quantity: u32,
}

/// Ships units held for a paid order: they leave the warehouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "shop.ShipStock")]
pub struct ShipStock {
    /// The paid order.
    pub order_id: String,
    /// Units to ship (at most what is held).
    pub quantity: u32,
}

/// A delivery arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "shop.Restock", validate)]
pub struct Restock {
    /// Units delivered.
    pub quantity: u32,
}

impl Validate for Restock {
    fn validate(&self, v: &mut Violations) {
        v.check(
            self.quantity == 0 || self.quantity > MAX_RESTOCK,
            "quantity",
            format!("must be between 1 and {MAX_RESTOCK}"),
        );
    }
}

// ---- Events

/// Units arrived in the warehouse (the opening stock, or a delivery).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "shop.StockReceived")]
pub struct StockReceived {
    /// Units received.
    pub quantity: u32,
    /// Units in the warehouse afterwards.
    pub on_hand: u32,
    /// Opening stock or delivery.
    pub reason: String,
}

/// Units were held for an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "shop.StockReserved")]
pub struct StockReserved {
    /// The order.
    pub order_id: String,
    /// Units held.
    pub quantity: u32,
    /// Units still free afterwards.
    pub available: u32,
}

/// Not enough free units for an order: nothing was held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "shop.StockReservationFailed")]
pub struct StockReservationFailed {
    /// The order.
    pub order_id: String,
    /// Units asked for.
    pub quantity: u32,
    /// Units that were free.
    pub available: u32,
}

/// Units held for an order were given back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "shop.StockReleased")]
pub struct StockReleased {
    /// The order.
    pub order_id: String,
    /// Units given back.
    pub quantity: u32,
    /// Units free afterwards.
    pub available: u32,
}

/// Units held for a paid order left the warehouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "shop.StockShipped")]
pub struct StockShipped {
    /// The order.
    pub order_id: String,
    /// Units shipped.
    pub quantity: u32,
    /// Units in the warehouse afterwards.
    pub on_hand: u32,
}

// ---- The entity

/// One product's stock.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Entity)]
#[entity(name = "shop.Stock")]
pub struct Stock {
    /// Whether the opening stock was booked (done by the first command).
    pub opened: bool,
    /// Units in the warehouse, reserved or not.
    pub on_hand: u32,
    /// Units held per order id.
    pub reserved: BTreeMap<String, u32>,
}

impl Stock {
    /// Units held for orders.
    pub fn reserved_total(&self) -> u32 {
        self.reserved.values().sum()
    }

    /// Units free to reserve.
    pub fn available(&self) -> u32 {
        self.on_hand.saturating_sub(self.reserved_total())
    }

    /// Books the catalogue's opening stock on first use, so a product needs no set-up command.
    fn open(&mut self, cx: &mut SagaContext) -> Result<(), DomainError> {
        if self.opened {
            return Ok(());
        }
        let sku = cx.entity_id().as_str();
        let product = catalogue::product(sku).ok_or_else(|| {
            DomainError::with_code("unknown_product", format!("{sku} is not in the catalogue"))
        })?;
        self.opened = true;
        self.on_hand = product.opening_stock;
        cx.publish(StockReceived {
            quantity: product.opening_stock,
            on_hand: self.on_hand,
            reason: "opening stock".to_owned(),
        });
        Ok(())
    }

    /// Removes up to `quantity` units from `order_id`'s reservation; returns how many.
    fn unreserve(&mut self, order_id: &str, quantity: u32) -> u32 {
        let Some(held) = self.reserved.get_mut(order_id) else {
            return 0;
        };
        let taken = quantity.min(*held);
        *held -= taken;
        if *held == 0 {
            self.reserved.remove(order_id);
        }
        taken
    }
}

/// Handles every stock command.
#[derive(Default)]
pub struct StockSaga;

#[saga(entity = Stock)]
impl StockSaga {
    #[handles]
    async fn reserve(
        &self,
        stock: &mut Stock,
        cmd: &ReserveStock,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        stock.open(cx)?;
        let available = stock.available();
        if cmd.quantity > available {
            // Recorded, not refused: the failure is a fact the order must hear about, and a
            // refused follow-up would only be logged.
            cx.publish(StockReservationFailed {
                order_id: cmd.order_id.clone(),
                quantity: cmd.quantity,
                available,
            });
            cx.send(
                cmd.order_id.as_str(),
                RejectLine {
                    sku: cx.entity_id().to_string(),
                    quantity: cmd.quantity,
                    reason: match available {
                        0 => "out of stock".to_owned(),
                        n => format!("only {n} left"),
                    },
                },
            );
            return Ok(());
        }
        *stock.reserved.entry(cmd.order_id.clone()).or_default() += cmd.quantity;
        cx.publish(StockReserved {
            order_id: cmd.order_id.clone(),
            quantity: cmd.quantity,
            available: stock.available(),
        });
        Ok(())
    }

    #[handles]
    async fn release(
        &self,
        stock: &mut Stock,
        cmd: &ReleaseStock,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        stock.open(cx)?;
        // Releasing more than is held is normal: units that were rejected were never held.
        let released = stock.unreserve(&cmd.order_id, cmd.quantity);
        if released > 0 {
            cx.publish(StockReleased {
                order_id: cmd.order_id.clone(),
                quantity: released,
                available: stock.available(),
            });
        }
        Ok(())
    }

    #[handles]
    async fn ship(
        &self,
        stock: &mut Stock,
        cmd: &ShipStock,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        stock.open(cx)?;
        let shipped = stock.unreserve(&cmd.order_id, cmd.quantity);
        if shipped > 0 {
            stock.on_hand -= shipped;
            cx.publish(StockShipped {
                order_id: cmd.order_id.clone(),
                quantity: shipped,
                on_hand: stock.on_hand,
            });
        }
        Ok(())
    }

    #[handles]
    async fn restock(
        &self,
        stock: &mut Stock,
        cmd: &Restock,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        stock.open(cx)?;
        stock.on_hand = stock.on_hand.checked_add(cmd.quantity).ok_or_else(|| {
            DomainError::with_code("too_much", "the warehouse cannot count that many units")
        })?;
        cx.publish(StockReceived {
            quantity: cmd.quantity,
            on_hand: stock.on_hand,
            reason: "delivery".to_owned(),
        });
        Ok(())
    }
}

/// Keeps stock in step with orders: reserve on add, release on remove or cancel, ship on payment.
#[derive(Default)]
pub struct StockReservations;

#[aggregate(entity = Order, name = "shop.StockReservations")]
impl StockReservations {
    #[subscribes]
    async fn on_item_added(&self, e: &ItemAdded, cx: &mut ReactionContext) {
        let order_id = cx.entity_id().to_string();
        cx.send_to(
            e.sku.as_str(),
            ReserveStock {
                order_id,
                quantity: e.quantity,
            },
        );
    }

    #[subscribes]
    async fn on_item_removed(&self, e: &ItemRemoved, cx: &mut ReactionContext) {
        let order_id = cx.entity_id().to_string();
        cx.send_to(
            e.sku.as_str(),
            ReleaseStock {
                order_id,
                quantity: e.quantity,
            },
        );
    }

    #[subscribes]
    async fn on_cancelled(&self, e: &OrderCancelled, cx: &mut ReactionContext) {
        let order_id = cx.entity_id().to_string();
        for line in &e.lines {
            cx.send_to(
                line.sku.as_str(),
                ReleaseStock {
                    order_id: order_id.clone(),
                    quantity: line.quantity,
                },
            );
        }
    }

    #[subscribes]
    async fn on_paid(&self, e: &OrderPaid, cx: &mut ReactionContext) {
        let order_id = cx.entity_id().to_string();
        for line in &e.lines {
            cx.send_to(
                line.sku.as_str(),
                ShipStock {
                    order_id: order_id.clone(),
                    quantity: line.quantity,
                },
            );
        }
    }
}
