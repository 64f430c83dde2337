//! Orders: the entity customers build up line by line, confirm, pay for or cancel.
//!
//! `OrderSaga` owns the `Order` entity. Two commands come from other parts of the domain rather
//! than from people: `RejectLine` (stock could not be reserved) and `MarkOrderPaid` (the payment
//! was authorised); cancellation is sent by people and by the payment when it is declined.

use std::fmt;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sourceflow::personal::Personal;
use sourceflow::prelude::*;
use sourceflow::schedule::ScheduleId;

use super::catalogue::{self, format_money, known_skus};

/// Most units of one product in one order.
pub const MAX_LINE_QUANTITY: u32 = 99;
/// How long an order may stay unpaid before it is cancelled and its stock released, unless the
/// saga is registered with another ([`OrderSaga::with_payment_timeout`]).
pub const PAYMENT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Most distinct products in one order.
pub const MAX_LINES: usize = 20;
/// Longest customer id.
pub const MAX_CUSTOMER_ID: usize = 40;

// ---- Commands

/// Opens a new, empty order for a customer. The order's id is the id it is sent to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "shop.PlaceOrder", validate)]
pub struct PlaceOrder {
    /// Who orders (any short id: `alice`, `cust-042`).
    pub customer_id: String,
    /// Name, address and e-mail for the delivery: personal data of the customer, stored
    /// encrypted and gone for good once the customer is forgotten (`shop forget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Personal<Contact>>,
}

/// Who to deliver an order to. Kept as [`Personal`] data of the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Full name.
    pub name: String,
    /// Delivery address.
    pub address: String,
    /// E-mail address.
    pub email: String,
}

impl Contact {
    /// `contact` as personal data of `customer_id`.
    pub fn of(customer_id: &str, name: &str, address: &str, email: &str) -> Personal<Contact> {
        Personal::new(
            customer_id,
            Contact {
                name: name.to_owned(),
                address: address.to_owned(),
                email: email.to_owned(),
            },
        )
    }
}

impl Validate for PlaceOrder {
    fn validate(&self, v: &mut Violations) {
        check_customer_id(&self.customer_id, v);
        if let Some(contact) = &self.contact {
            v.check(
                contact.subject() != self.customer_id,
                "contact",
                "must be personal data of the ordering customer",
            );
        }
    }
}

/// Checks a customer id: short, no spaces, printable.
pub fn check_customer_id(customer_id: &str, v: &mut Violations) {
    if customer_id.is_empty() {
        v.add("customer_id", "must not be empty");
        return;
    }
    v.check(
        customer_id.chars().count() > MAX_CUSTOMER_ID,
        "customer_id",
        format!("must be at most {MAX_CUSTOMER_ID} characters"),
    );
    v.check(
        !customer_id
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.@".contains(c)),
        "customer_id",
        "may contain letters, digits and - _ . @ only",
    );
}

/// Adds units of a product to a draft order, at the list price unless a (lower) price is agreed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "shop.AddItem", validate)]
pub struct AddItem {
    /// The product.
    pub sku: String,
    /// Units to add (1 to [`MAX_LINE_QUANTITY`]).
    pub quantity: u32,
    /// A price per unit in cents other than the list price (a promotion); never above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<i64>,
}

impl Validate for AddItem {
    fn validate(&self, v: &mut Violations) {
        let product = check_sku(&self.sku, v);
        check_quantity(self.quantity, v);
        if let Some(price) = self.unit_price {
            v.check(price <= 0, "unit_price", "must be positive");
            if let Some(product) = product {
                v.check(
                    price > product.price,
                    "unit_price",
                    format!(
                        "must not exceed the list price of {} ({})",
                        product.sku,
                        format_money(product.price)
                    ),
                );
            }
        }
    }
}

fn check_sku(sku: &str, v: &mut Violations) -> Option<&'static catalogue::Product> {
    let product = catalogue::product(sku);
    if product.is_none() {
        v.add(
            "sku",
            format!(
                "unknown product {sku:?}; the catalogue has {}",
                known_skus()
            ),
        );
    }
    product
}

fn check_quantity(quantity: u32, v: &mut Violations) {
    v.check(
        quantity == 0 || quantity > MAX_LINE_QUANTITY,
        "quantity",
        format!("must be between 1 and {MAX_LINE_QUANTITY}"),
    );
}

/// Takes units of a product out of a draft order (the whole line when `quantity` is `None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "shop.RemoveItem", validate)]
pub struct RemoveItem {
    /// The product.
    pub sku: String,
    /// Units to remove; `None` removes the line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u32>,
}

impl Validate for RemoveItem {
    fn validate(&self, v: &mut Violations) {
        check_sku(&self.sku, v);
        if let Some(quantity) = self.quantity {
            check_quantity(quantity, v);
        }
    }
}

/// Closes a draft order for changes and asks for payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "shop.ConfirmOrder")]
pub struct ConfirmOrder;

/// Cancels an order that is not paid yet; its reserved stock is released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "shop.CancelOrder", validate)]
pub struct CancelOrder {
    /// Why, for the customer and the history.
    pub reason: String,
}

impl Validate for CancelOrder {
    fn validate(&self, v: &mut Violations) {
        v.check(
            self.reason.chars().count() > 200,
            "reason",
            "must be at most 200 characters",
        );
    }
}

/// Takes units back out of an order because stock could not be reserved for them (sent by the
/// `Stock` saga, not by people).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
// Called `shop.RejectItem` by earlier releases: their logs and exports still read.
#[command(name = "shop.RejectLine", aliases = ["shop.RejectItem"])]
pub struct RejectLine {
    /// The product.
    pub sku: String,
    /// Units that could not be reserved.
    pub quantity: u32,
    /// Why, for the history.
    pub reason: String,
}

/// Records that the order's payment was authorised (sent by the `Payment` saga).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "shop.MarkOrderPaid", validate)]
pub struct MarkOrderPaid {
    /// Amount authorised, in cents.
    pub amount: i64,
}

impl Validate for MarkOrderPaid {
    fn validate(&self, v: &mut Violations) {
        v.check(self.amount <= 0, "amount", "must be positive");
    }
}

/// Cancels the order if it is still unpaid: sent by the payment deadline the order scheduled
/// when it was placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "shop.ExpireOrder")]
pub struct ExpireOrder;

// ---- Events

/// One product in an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The product.
    pub sku: String,
    /// Its name when it was added.
    pub name: String,
    /// Units.
    pub quantity: u32,
    /// Price per unit in cents.
    pub unit_price: i64,
}

impl OrderLine {
    /// Quantity times unit price, in cents.
    pub fn total(&self) -> i64 {
        i64::from(self.quantity) * self.unit_price
    }
}

/// The sum of the lines, in cents.
pub fn total_of(lines: &[OrderLine]) -> i64 {
    lines.iter().map(OrderLine::total).sum()
}

/// An order was opened.
///
/// Version 2 records the currency the order is priced in; orders placed by earlier releases
/// (version 1) were all in euros, which [`order_placed_v1`] says when they are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "shop.OrderPlaced", version = 2)]
pub struct OrderPlaced {
    /// Who ordered.
    pub customer_id: String,
    /// ISO code of the currency the order is priced in.
    pub currency: String,
    /// When the order is cancelled unless paid by then (absent in orders placed before
    /// payment deadlines existed).
    #[serde(default)]
    pub pay_by: Option<DateTime<Utc>>,
    /// Who to deliver to (personal data of the customer; absent if not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Personal<Contact>>,
}

/// The shop's currency.
pub const CURRENCY: &str = "EUR";

/// Version 1 of [`OrderPlaced`] had no currency: every order was in euros.
#[upcast(OrderPlaced, from = 1)]
pub fn order_placed_v1(payload: &mut serde_json::Value) -> Result<(), String> {
    let object = payload
        .as_object_mut()
        .ok_or("an OrderPlaced payload is an object")?;
    object.insert("currency".to_owned(), "EUR".into());
    Ok(())
}

/// Units of a product were added to an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "shop.ItemAdded")]
pub struct ItemAdded {
    /// The product.
    pub sku: String,
    /// Its name.
    pub name: String,
    /// Units added.
    pub quantity: u32,
    /// Price per unit in cents.
    pub unit_price: i64,
}

/// Units of a product were taken out of an order by the customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "shop.ItemRemoved")]
pub struct ItemRemoved {
    /// The product.
    pub sku: String,
    /// Units removed.
    pub quantity: u32,
    /// Price per unit in cents.
    pub unit_price: i64,
}

/// Units of a product were taken out of an order because they are not in stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "shop.ItemRejected")]
pub struct ItemRejected {
    /// The product.
    pub sku: String,
    /// Units taken out.
    pub quantity: u32,
    /// Price per unit in cents.
    pub unit_price: i64,
    /// Why.
    pub reason: String,
}

/// The customer confirmed the order; payment is due.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "shop.OrderConfirmed")]
pub struct OrderConfirmed {
    /// Who ordered (so per-customer views need no lookup).
    pub customer_id: String,
    /// What was ordered.
    pub lines: Vec<OrderLine>,
    /// Amount due in cents.
    pub total: i64,
}

/// The order was paid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "shop.OrderPaid")]
pub struct OrderPaid {
    /// Who ordered.
    pub customer_id: String,
    /// What was sold.
    pub lines: Vec<OrderLine>,
    /// Amount paid in cents.
    pub amount: i64,
}

/// The order was cancelled; `lines` lists what was still in it (its stock is released).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "shop.OrderCancelled")]
pub struct OrderCancelled {
    /// Who ordered.
    pub customer_id: String,
    /// What the order held when it was cancelled.
    pub lines: Vec<OrderLine>,
    /// Why.
    pub reason: String,
}

// ---- The entity

/// Where an order is in its life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Open for changes.
    #[default]
    Draft,
    /// Confirmed, waiting for payment.
    Confirmed,
    /// Paid: final.
    Paid,
    /// Cancelled: final.
    Cancelled,
}

impl OrderStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [OrderStatus; 4] = [
        OrderStatus::Draft,
        OrderStatus::Confirmed,
        OrderStatus::Paid,
        OrderStatus::Cancelled,
    ];

    /// The lower-case name used in output and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Draft => "draft",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Paid => "paid",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OrderStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown status {s:?}: use draft, confirmed, paid or cancelled"))
    }
}

/// An order's state as its saga sees it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Entity)]
#[entity(name = "shop.Order")]
pub struct Order {
    /// Who ordered; empty until the order is placed.
    pub customer_id: String,
    /// Where the order is.
    pub status: OrderStatus,
    /// What is in it, one line per product.
    pub lines: Vec<OrderLine>,
    /// The scheduled cancellation if it is not paid in time, while it is pending.
    #[serde(default)]
    pub payment_deadline: Option<ScheduleId>,
    /// Who to deliver to (personal data of the customer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Personal<Contact>>,
}

impl Order {
    /// Amount of the order in cents.
    pub fn total(&self) -> i64 {
        total_of(&self.lines)
    }

    fn ensure_placed(&self) -> Result<(), DomainError> {
        if self.customer_id.is_empty() {
            return Err(DomainError::with_code(
                "no_such_order",
                "there is no such order (place it first)",
            ));
        }
        Ok(())
    }

    fn ensure_draft(&self) -> Result<(), DomainError> {
        self.ensure_placed()?;
        if self.status != OrderStatus::Draft {
            return Err(DomainError::with_code(
                "not_draft",
                format!("the order is {}; only draft orders can change", self.status),
            ));
        }
        Ok(())
    }

    fn line_mut(&mut self, sku: &str) -> Option<&mut OrderLine> {
        self.lines.iter_mut().find(|l| l.sku == sku)
    }

    /// Takes `quantity` units of `sku` out, dropping the line when it reaches zero.
    fn take_out(&mut self, sku: &str, quantity: u32) {
        if let Some(line) = self.line_mut(sku) {
            line.quantity -= quantity.min(line.quantity);
        }
        self.lines.retain(|l| l.quantity > 0);
    }
}

/// Handles every order command. An order is cancelled (and its stock released) when it is
/// not paid within the payment timeout ([`PAYMENT_TIMEOUT`] unless registered
/// [`with_payment_timeout`](Self::with_payment_timeout)): placing it schedules an
/// [`ExpireOrder`], which paying or cancelling it cancels.
pub struct OrderSaga {
    payment_timeout: Duration,
}

impl Default for OrderSaga {
    fn default() -> Self {
        Self::with_payment_timeout(PAYMENT_TIMEOUT)
    }
}

impl OrderSaga {
    /// A saga that cancels orders not paid within `timeout`. Register it with
    /// `SourceFlow::builder().saga(OrderSaga::with_payment_timeout(..))`.
    pub fn with_payment_timeout(timeout: Duration) -> Self {
        Self {
            payment_timeout: timeout,
        }
    }
}

impl Order {
    /// Cancels the pending payment deadline, if any.
    fn settle_deadline(&mut self, cx: &mut SagaContext) {
        if let Some(deadline) = self.payment_deadline.take() {
            cx.cancel(deadline);
        }
    }
}

#[saga(entity = Order)]
impl OrderSaga {
    #[handles]
    async fn place(
        &self,
        order: &mut Order,
        cmd: &PlaceOrder,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        if !order.customer_id.is_empty() {
            return Err(DomainError::with_code(
                "already_placed",
                format!("order {} already exists", cx.entity_id()),
            ));
        }
        order.customer_id = cmd.customer_id.clone();
        order.contact = cmd.contact.clone();
        // The deadline counts from the commit, on the flow's clock (a test's manual clock
        // included). The event tells the views when that is, from the command's own time, so
        // a replay computes the same event.
        let id = cx.entity_id().clone();
        order.payment_deadline = Some(cx.schedule(self.payment_timeout, id, ExpireOrder));
        let pay_by = cx.timestamp()
            + chrono::Duration::from_std(self.payment_timeout).unwrap_or(chrono::Duration::MAX);
        cx.publish(OrderPlaced {
            customer_id: cmd.customer_id.clone(),
            currency: CURRENCY.to_owned(),
            pay_by: Some(pay_by),
            contact: cmd.contact.clone(),
        });
        Ok(())
    }

    #[handles]
    async fn add_item(
        &self,
        order: &mut Order,
        cmd: &AddItem,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        order.ensure_draft()?;
        // Validation already proved the SKU exists; a catalogue that lost it since is a refusal,
        // not a panic.
        let product = catalogue::product(&cmd.sku).ok_or_else(|| {
            DomainError::with_code("unknown_product", format!("unknown product {}", cmd.sku))
        })?;
        let unit_price = cmd.unit_price.unwrap_or(product.price);
        match order.line_mut(&cmd.sku) {
            Some(line) => {
                if line.unit_price != unit_price {
                    return Err(DomainError::with_code(
                        "price_mismatch",
                        format!(
                            "{} is already in the order at {} a unit; remove it first to change the price",
                            cmd.sku,
                            format_money(line.unit_price)
                        ),
                    ));
                }
                if line.quantity + cmd.quantity > MAX_LINE_QUANTITY {
                    return Err(DomainError::with_code(
                        "too_many",
                        format!(
                            "the order already has {} x {}; at most {MAX_LINE_QUANTITY} per product",
                            line.quantity, cmd.sku
                        ),
                    ));
                }
                line.quantity += cmd.quantity;
            }
            None => {
                if order.lines.len() >= MAX_LINES {
                    return Err(DomainError::with_code(
                        "too_many_lines",
                        format!("an order holds at most {MAX_LINES} products"),
                    ));
                }
                order.lines.push(OrderLine {
                    sku: product.sku.to_owned(),
                    name: product.name.to_owned(),
                    quantity: cmd.quantity,
                    unit_price,
                });
            }
        }
        cx.publish(ItemAdded {
            sku: product.sku.to_owned(),
            name: product.name.to_owned(),
            quantity: cmd.quantity,
            unit_price,
        });
        Ok(())
    }

    #[handles]
    async fn remove_item(
        &self,
        order: &mut Order,
        cmd: &RemoveItem,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        order.ensure_draft()?;
        let Some(line) = order.line_mut(&cmd.sku) else {
            return Err(DomainError::with_code(
                "not_in_order",
                format!("{} is not in the order", cmd.sku),
            ));
        };
        let quantity = cmd.quantity.unwrap_or(line.quantity);
        if quantity > line.quantity {
            return Err(DomainError::with_code(
                "not_in_order",
                format!(
                    "the order has only {} x {}; cannot remove {quantity}",
                    line.quantity, cmd.sku
                ),
            ));
        }
        let unit_price = line.unit_price;
        order.take_out(&cmd.sku, quantity);
        cx.publish(ItemRemoved {
            sku: cmd.sku.clone(),
            quantity,
            unit_price,
        });
        Ok(())
    }

    #[handles]
    async fn reject_item(
        &self,
        order: &mut Order,
        cmd: &RejectLine,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        order.ensure_placed()?;
        // Only a cancelled order has nothing to give back: its lines were already released.
        // Anything else drops the units, even after confirmation, so the order never claims
        // stock it does not have.
        if order.status == OrderStatus::Cancelled {
            return Ok(());
        }
        let Some(line) = order.line_mut(&cmd.sku) else {
            return Ok(());
        };
        let quantity = cmd.quantity.min(line.quantity);
        let unit_price = line.unit_price;
        order.take_out(&cmd.sku, quantity);
        cx.publish(ItemRejected {
            sku: cmd.sku.clone(),
            quantity,
            unit_price,
            reason: cmd.reason.clone(),
        });
        Ok(())
    }

    #[handles]
    async fn confirm(
        &self,
        order: &mut Order,
        _cmd: &ConfirmOrder,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        order.ensure_draft()?;
        if order.lines.is_empty() {
            return Err(DomainError::with_code(
                "empty_order",
                "an empty order cannot be confirmed; add an item first",
            ));
        }
        order.status = OrderStatus::Confirmed;
        cx.publish(OrderConfirmed {
            customer_id: order.customer_id.clone(),
            lines: order.lines.clone(),
            total: order.total(),
        });
        Ok(())
    }

    #[handles]
    async fn mark_paid(
        &self,
        order: &mut Order,
        cmd: &MarkOrderPaid,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        order.ensure_placed()?;
        if order.status != OrderStatus::Confirmed {
            return Err(DomainError::with_code(
                "not_confirmed",
                format!(
                    "the order is {}; only confirmed orders are paid",
                    order.status
                ),
            ));
        }
        if cmd.amount != order.total() {
            return Err(DomainError::with_code(
                "amount_mismatch",
                format!(
                    "payment of {} does not match the order total {}",
                    format_money(cmd.amount),
                    format_money(order.total())
                ),
            ));
        }
        order.status = OrderStatus::Paid;
        order.settle_deadline(cx);
        cx.publish(OrderPaid {
            customer_id: order.customer_id.clone(),
            lines: order.lines.clone(),
            amount: cmd.amount,
        });
        Ok(())
    }

    #[handles]
    async fn cancel(
        &self,
        order: &mut Order,
        cmd: &CancelOrder,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        order.ensure_placed()?;
        match order.status {
            OrderStatus::Draft | OrderStatus::Confirmed => {}
            OrderStatus::Paid => {
                return Err(DomainError::with_code(
                    "already_paid",
                    "the order is paid; refunds are not part of this shop",
                ))
            }
            OrderStatus::Cancelled => {
                return Err(DomainError::with_code(
                    "already_cancelled",
                    "the order is already cancelled",
                ))
            }
        }
        order.status = OrderStatus::Cancelled;
        order.settle_deadline(cx);
        let reason = if cmd.reason.trim().is_empty() {
            "cancelled by the customer".to_owned()
        } else {
            cmd.reason.clone()
        };
        cx.publish(OrderCancelled {
            customer_id: order.customer_id.clone(),
            lines: order.lines.clone(),
            reason,
        });
        Ok(())
    }

    #[handles]
    async fn expire(&self, order: &mut Order, _cmd: &ExpireOrder, cx: &mut SagaContext) {
        order.payment_deadline = None;
        // Paid or cancelled meanwhile (a deadline that fired while it was being cancelled):
        // nothing to do.
        if !matches!(order.status, OrderStatus::Draft | OrderStatus::Confirmed) {
            return;
        }
        order.status = OrderStatus::Cancelled;
        cx.publish(OrderCancelled {
            customer_id: order.customer_id.clone(),
            lines: order.lines.clone(),
            reason: format!("not paid within {}", humanize(self.payment_timeout)),
        });
    }
}

/// A timeout for people: `30 minutes`, `5 seconds`.
fn humanize(timeout: Duration) -> String {
    let seconds = timeout.as_secs();
    match seconds {
        s if s >= 3600 && s % 3600 == 0 => format!("{} hours", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}
