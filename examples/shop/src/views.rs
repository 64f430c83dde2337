//! The read side: view models shaped for the questions the shop answers, kept up to date by
//! views from the event log.
//!
//! | view | model | keyed by | shows |
//! |---|---|---|---|
//! | [`OrderSummaryView`] | [`OrderSummary`] | order id | listings: status, units, total |
//! | [`OrderDetailsView`] | [`OrderDetails`] | order id (also from payment and stock events) | lines and a history |
//! | [`CustomerOrdersView`] | [`CustomerOrders`] | customer id (`#[projects_on(id = customer_id)]`) | a customer's orders |
//! | [`StockLevelView`] | [`StockLevel`] | SKU | units on hand, reserved, free |
//! | [`ProductSalesView`] | [`ProductSales`] | SKU (several per event, through `&mut ViewContext`) | units sold, revenue |
//! | [`PaymentDeadlinesView`] | [`PaymentDeadline`] | order id (deleted when paid or cancelled) | unpaid orders and when they expire |
//!
//! Every view can be dropped and rebuilt from the log (`shop rebuild`), which is also how a new
//! view is added to a shop that already has history.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sourceflow::personal::Personal;
use sourceflow::prelude::*;

use crate::domain::catalogue::format_money;
use crate::domain::{
    Contact, ItemAdded, ItemRejected, ItemRemoved, OrderCancelled, OrderConfirmed, OrderLine,
    OrderPaid, OrderPlaced, OrderStatus, PaymentAuthorized, PaymentDeclined, StockReceived,
    StockReleased, StockReservationFailed, StockReserved, StockShipped,
};

/// The stable names of the views (their positions are stored under these names).
pub const VIEW_NAMES: [&str; 6] = [
    "shop.OrderSummaryView",
    "shop.OrderDetailsView",
    "shop.CustomerOrdersView",
    "shop.StockLevelView",
    "shop.ProductSalesView",
    "shop.PaymentDeadlinesView",
];

/// The stable names of the reactions (aggregates) of the shop.
pub const REACTION_NAMES: [&str; 2] = ["shop.PaymentProcess", "shop.StockReservations"];

// ---- Order summary: one row per order, for listings.

/// An order as listings show it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, ViewModel)]
#[view_model(name = "shop.OrderSummary")]
pub struct OrderSummary {
    /// Who ordered.
    pub customer_id: String,
    /// Where the order is.
    pub status: OrderStatus,
    /// Units in the order.
    pub units: u32,
    /// Amount in cents.
    pub total: i64,
    /// When it was placed.
    pub placed_at: Option<DateTime<Utc>>,
    /// When it last changed.
    pub updated_at: Option<DateTime<Utc>>,
    /// The last thing worth telling (a rejected item, why it was cancelled).
    pub note: String,
}

/// Projects order events onto [`OrderSummary`].
#[derive(Default)]
pub struct OrderSummaryView;

#[view(model = OrderSummary, name = "shop.OrderSummaryView")]
impl OrderSummaryView {
    #[projects_on]
    async fn placed(&self, s: &mut OrderSummary, e: &OrderPlaced, meta: &EventMeta) {
        s.customer_id = e.customer_id.clone();
        s.status = OrderStatus::Draft;
        s.placed_at = Some(meta.timestamp);
        s.updated_at = Some(meta.timestamp);
    }

    #[projects_on]
    async fn added(&self, s: &mut OrderSummary, e: &ItemAdded, meta: &EventMeta) {
        s.units += e.quantity;
        s.total += i64::from(e.quantity) * e.unit_price;
        s.updated_at = Some(meta.timestamp);
    }

    #[projects_on]
    async fn removed(&self, s: &mut OrderSummary, e: &ItemRemoved, meta: &EventMeta) {
        s.units = s.units.saturating_sub(e.quantity);
        s.total -= i64::from(e.quantity) * e.unit_price;
        s.updated_at = Some(meta.timestamp);
    }

    #[projects_on]
    async fn rejected(&self, s: &mut OrderSummary, e: &ItemRejected, meta: &EventMeta) {
        s.units = s.units.saturating_sub(e.quantity);
        s.total -= i64::from(e.quantity) * e.unit_price;
        s.note = format!("{} x {} rejected: {}", e.quantity, e.sku, e.reason);
        s.updated_at = Some(meta.timestamp);
    }

    #[projects_on]
    async fn confirmed(&self, s: &mut OrderSummary, e: &OrderConfirmed, meta: &EventMeta) {
        s.status = OrderStatus::Confirmed;
        s.total = e.total;
        s.updated_at = Some(meta.timestamp);
    }

    #[projects_on]
    async fn paid(&self, s: &mut OrderSummary, _e: &OrderPaid, meta: &EventMeta) {
        s.status = OrderStatus::Paid;
        s.updated_at = Some(meta.timestamp);
    }

    #[projects_on]
    async fn cancelled(&self, s: &mut OrderSummary, e: &OrderCancelled, meta: &EventMeta) {
        s.status = OrderStatus::Cancelled;
        s.note = e.reason.clone();
        s.updated_at = Some(meta.timestamp);
    }
}

// ---- Order details: lines plus a history that follows the order into stock and payment.

/// One thing that happened to an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// Global position of the event, to find it with `shop events`.
    pub position: u64,
    /// What, for a human.
    pub what: String,
}

/// An order with its lines and history.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, ViewModel)]
#[view_model(name = "shop.OrderDetails")]
pub struct OrderDetails {
    /// Who ordered.
    pub customer_id: String,
    /// ISO code of the currency the order is priced in.
    #[serde(default)]
    pub currency: String,
    /// Where the order is.
    pub status: OrderStatus,
    /// What is in it.
    pub lines: Vec<OrderLine>,
    /// What happened, oldest first.
    pub history: Vec<HistoryEntry>,
    /// Who to deliver to (personal data of the customer: redacted once they are forgotten).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Personal<Contact>>,
}

impl OrderDetails {
    fn log(&mut self, meta: &EventMeta, what: String) {
        self.history.push(HistoryEntry {
            at: meta.timestamp,
            position: meta.position.0,
            what,
        });
    }

    fn take_out(&mut self, sku: &str, quantity: u32) {
        if let Some(line) = self.lines.iter_mut().find(|l| l.sku == sku) {
            line.quantity = line.quantity.saturating_sub(quantity);
        }
        self.lines.retain(|l| l.quantity > 0);
    }
}

/// Projects order, payment and stock events onto [`OrderDetails`].
///
/// Payment events are keyed by their stream id, which is the order's id; stock events live in
/// the product's stream and name the order in a field, hence `id = order_id`.
#[derive(Default)]
pub struct OrderDetailsView;

// Version 2 added the currency: details built by version 1 are rebuilt at start.
#[view(model = OrderDetails, name = "shop.OrderDetailsView", version = 2)]
impl OrderDetailsView {
    #[projects_on]
    async fn placed(&self, d: &mut OrderDetails, e: &OrderPlaced, meta: &EventMeta) {
        d.customer_id = e.customer_id.clone();
        d.currency = e.currency.clone();
        d.contact = e.contact.clone();
        d.log(
            meta,
            format!("placed by {} in {}", e.customer_id, e.currency),
        );
    }

    #[projects_on]
    async fn added(&self, d: &mut OrderDetails, e: &ItemAdded, meta: &EventMeta) {
        match d.lines.iter_mut().find(|l| l.sku == e.sku) {
            Some(line) => line.quantity += e.quantity,
            None => d.lines.push(OrderLine {
                sku: e.sku.clone(),
                name: e.name.clone(),
                quantity: e.quantity,
                unit_price: e.unit_price,
            }),
        }
        d.log(
            meta,
            format!(
                "added {} x {} at {}",
                e.quantity,
                e.sku,
                format_money(e.unit_price)
            ),
        );
    }

    #[projects_on]
    async fn removed(&self, d: &mut OrderDetails, e: &ItemRemoved, meta: &EventMeta) {
        d.take_out(&e.sku, e.quantity);
        d.log(meta, format!("removed {} x {}", e.quantity, e.sku));
    }

    #[projects_on]
    async fn rejected(&self, d: &mut OrderDetails, e: &ItemRejected, meta: &EventMeta) {
        d.take_out(&e.sku, e.quantity);
        d.log(
            meta,
            format!("{} x {} taken out: {}", e.quantity, e.sku, e.reason),
        );
    }

    #[projects_on]
    async fn confirmed(&self, d: &mut OrderDetails, e: &OrderConfirmed, meta: &EventMeta) {
        d.status = OrderStatus::Confirmed;
        d.log(meta, format!("confirmed, {} due", format_money(e.total)));
    }

    #[projects_on]
    async fn paid(&self, d: &mut OrderDetails, e: &OrderPaid, meta: &EventMeta) {
        d.status = OrderStatus::Paid;
        d.log(meta, format!("paid {}", format_money(e.amount)));
    }

    #[projects_on]
    async fn cancelled(&self, d: &mut OrderDetails, e: &OrderCancelled, meta: &EventMeta) {
        d.status = OrderStatus::Cancelled;
        d.log(meta, format!("cancelled: {}", e.reason));
    }

    #[projects_on]
    async fn payment_authorized(
        &self,
        d: &mut OrderDetails,
        e: &PaymentAuthorized,
        meta: &EventMeta,
    ) {
        d.log(
            meta,
            format!("payment of {} authorised", format_money(e.amount)),
        );
    }

    #[projects_on]
    async fn payment_declined(&self, d: &mut OrderDetails, e: &PaymentDeclined, meta: &EventMeta) {
        d.log(meta, e.reason.clone());
    }

    #[projects_on(id = order_id)]
    async fn stock_reserved(&self, d: &mut OrderDetails, e: &StockReserved, meta: &EventMeta) {
        d.log(
            meta,
            format!("stock: {} x {} reserved", e.quantity, meta.entity_id()),
        );
    }

    #[projects_on(id = order_id)]
    async fn stock_failed(
        &self,
        d: &mut OrderDetails,
        e: &StockReservationFailed,
        meta: &EventMeta,
    ) {
        d.log(
            meta,
            format!(
                "stock: {} x {} not available ({} free)",
                e.quantity,
                meta.entity_id(),
                e.available
            ),
        );
    }

    #[projects_on(id = order_id)]
    async fn stock_released(&self, d: &mut OrderDetails, e: &StockReleased, meta: &EventMeta) {
        d.log(
            meta,
            format!("stock: {} x {} released", e.quantity, meta.entity_id()),
        );
    }

    #[projects_on(id = order_id)]
    async fn stock_shipped(&self, d: &mut OrderDetails, e: &StockShipped, meta: &EventMeta) {
        d.log(
            meta,
            format!("stock: {} x {} shipped", e.quantity, meta.entity_id()),
        );
    }
}

// ---- Orders by customer: keyed by a field of the events, not by their stream.

/// One order in a customer's list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerOrder {
    /// The order's id.
    pub order_id: String,
    /// Where it is.
    pub status: OrderStatus,
    /// Amount in cents once confirmed (drafts are still changing).
    pub total: Option<i64>,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
}

/// A customer's orders.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, ViewModel)]
#[view_model(name = "shop.CustomerOrders")]
pub struct CustomerOrders {
    /// The customer.
    pub customer_id: String,
    /// Their orders, oldest first.
    pub orders: Vec<CustomerOrder>,
    /// Paid so far, in cents.
    pub total_paid: i64,
}

impl CustomerOrders {
    fn order_mut(&mut self, meta: &EventMeta) -> Option<&mut CustomerOrder> {
        let id = meta.entity_id().as_str();
        self.orders.iter_mut().find(|o| o.order_id == id)
    }
}

/// Projects order events onto [`CustomerOrders`], keyed by the events' `customer_id`.
#[derive(Default)]
pub struct CustomerOrdersView;

#[view(model = CustomerOrders, name = "shop.CustomerOrdersView")]
impl CustomerOrdersView {
    #[projects_on(id = customer_id)]
    async fn placed(&self, c: &mut CustomerOrders, e: &OrderPlaced, meta: &EventMeta) {
        c.customer_id = e.customer_id.clone();
        c.orders.push(CustomerOrder {
            order_id: meta.entity_id().to_string(),
            status: OrderStatus::Draft,
            total: None,
            placed_at: meta.timestamp,
        });
    }

    #[projects_on(id = customer_id)]
    async fn confirmed(&self, c: &mut CustomerOrders, e: &OrderConfirmed, meta: &EventMeta) {
        if let Some(order) = c.order_mut(meta) {
            order.status = OrderStatus::Confirmed;
            order.total = Some(e.total);
        }
    }

    #[projects_on(id = customer_id)]
    async fn paid(&self, c: &mut CustomerOrders, e: &OrderPaid, meta: &EventMeta) {
        if let Some(order) = c.order_mut(meta) {
            order.status = OrderStatus::Paid;
        }
        c.total_paid += e.amount;
    }

    #[projects_on(id = customer_id)]
    async fn cancelled(&self, c: &mut CustomerOrders, _e: &OrderCancelled, meta: &EventMeta) {
        if let Some(order) = c.order_mut(meta) {
            order.status = OrderStatus::Cancelled;
        }
    }
}

// ---- Stock levels: one row per product, from the stock streams.

/// A product's stock as the warehouse sees it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, ViewModel)]
#[view_model(name = "shop.StockLevel")]
pub struct StockLevel {
    /// Units in the warehouse.
    pub on_hand: u32,
    /// Units free to reserve.
    pub available: u32,
    /// Units shipped so far.
    pub shipped: u32,
    /// Reservations refused for lack of stock.
    pub shortages: u32,
}

/// Projects stock events onto [`StockLevel`].
#[derive(Default)]
pub struct StockLevelView;

#[view(model = StockLevel, name = "shop.StockLevelView")]
impl StockLevelView {
    #[projects_on]
    async fn received(&self, s: &mut StockLevel, e: &StockReceived) {
        s.on_hand = e.on_hand;
        s.available += e.quantity;
    }

    #[projects_on]
    async fn reserved(&self, s: &mut StockLevel, e: &StockReserved) {
        s.available = e.available;
    }

    #[projects_on]
    async fn failed(&self, s: &mut StockLevel, e: &StockReservationFailed) {
        s.available = e.available;
        s.shortages += 1;
    }

    #[projects_on]
    async fn released(&self, s: &mut StockLevel, e: &StockReleased) {
        s.available = e.available;
    }

    #[projects_on]
    async fn shipped(&self, s: &mut StockLevel, e: &StockShipped) {
        s.on_hand = e.on_hand;
        s.shipped += e.quantity;
    }
}

// ---- Product sales: one paid order touches several products.

/// What a product sold.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, ViewModel)]
#[view_model(name = "shop.ProductSales")]
pub struct ProductSales {
    /// Units sold.
    pub units: u32,
    /// Paid orders that included it.
    pub orders: u32,
    /// Revenue in cents.
    pub revenue: i64,
}

/// Projects paid orders onto one [`ProductSales`] per product in them.
#[derive(Default)]
pub struct ProductSalesView;

#[view(model = ProductSales, name = "shop.ProductSalesView")]
impl ProductSalesView {
    /// One event, several models: a `&mut ViewContext` projection loads and saves them by id;
    /// the writes commit together with the view's position.
    #[projects_on]
    async fn paid(&self, e: &OrderPaid, cx: &mut ViewContext) -> Result<(), DomainError> {
        for line in &e.lines {
            let id = EntityId::from(line.sku.as_str());
            // Projections may only fail with a `DomainError` for now, so the store's error is
            // carried in one; either way the batch fails and the next catch-up retries it.
            let mut sales: ProductSales = cx
                .load_or_default(&id)
                .await
                .map_err(|e| DomainError::with_code("view_store", e.to_string()))?;
            sales.units += line.quantity;
            sales.orders += 1;
            sales.revenue += line.total();
            cx.save(&id, sales);
        }
        Ok(())
    }
}

// ---- Payment deadlines: the orders that will be cancelled unless paid in time.

/// An order waiting for its payment, and when it is cancelled if none comes.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, ViewModel)]
#[view_model(name = "shop.PaymentDeadline")]
pub struct PaymentDeadline {
    /// Who ordered.
    pub customer_id: String,
    /// When the order is cancelled unless paid.
    pub pay_by: Option<DateTime<Utc>>,
}

/// Keeps one [`PaymentDeadline`] per unpaid order: added when the order is placed, deleted when
/// it is paid or cancelled (by the customer, a declined payment, or its deadline).
#[derive(Default)]
pub struct PaymentDeadlinesView;

#[view(model = PaymentDeadline, name = "shop.PaymentDeadlinesView")]
impl PaymentDeadlinesView {
    #[projects_on]
    async fn placed(&self, e: &OrderPlaced, cx: &mut ViewContext) {
        if let Some(pay_by) = e.pay_by {
            let id = cx.meta().stream.id.clone();
            cx.save(
                &id,
                PaymentDeadline {
                    customer_id: e.customer_id.clone(),
                    pay_by: Some(pay_by),
                },
            );
        }
    }

    #[projects_on]
    async fn paid(&self, _e: &OrderPaid, cx: &mut ViewContext) {
        let id = cx.meta().stream.id.clone();
        cx.delete::<PaymentDeadline>(&id);
    }

    #[projects_on]
    async fn cancelled(&self, _e: &OrderCancelled, cx: &mut ViewContext) {
        let id = cx.meta().stream.id.clone();
        cx.delete::<PaymentDeadline>(&id);
    }
}
