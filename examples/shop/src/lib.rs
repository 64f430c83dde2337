//! An event-sourced shop on sourceflow: the template application to copy.
//!
//! - **Write side** ([`domain`]): three entity types, each guarded by a saga. Orders are placed,
//!   filled, confirmed or cancelled; stock is reserved and released by reacting to order events;
//!   a payment is started when an order is confirmed and reports back with a command. Commands
//!   are validated before anything runs (unknown products, bad quantities and prices are refused
//!   with every problem listed, and nothing is stored).
//! - **Read side** ([`views`]): five views keep query-shaped models up to date from the event
//!   log; [`queries`] answers questions from them only.
//! - **Tooling**: [`seed`] generates sample traffic, [`transfer`] exports and imports a whole
//!   database as JSON Lines through the public store contract.
//!
//! ```
//! use shop::domain::{AddItem, ConfirmOrder, OrderStatus, PlaceOrder};
//! use shop::views::OrderSummary;
//! use sourceflow::prelude::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! // Every saga, view and reaction of the crate is discovered: nothing to register.
//! let flow = SourceFlow::builder().store(MemoryStore::new()).build().await?;
//! let order = EntityId::new();
//! flow.send(&order, PlaceOrder { customer_id: "alice".into(), contact: None }).await?;
//! flow.send(&order, AddItem { sku: "TEA-SENCHA".into(), quantity: 2, unit_price: None }).await?;
//! flow.send(&order, ConfirmOrder).await?;
//! // Confirming started the payment, which marked the order paid before `send` returned.
//! let summary: OrderSummary = flow.view_model(&order).await?.unwrap_or_default();
//! assert_eq!((summary.status, summary.total), (OrderStatus::Paid, 1_700));
//! # Ok(())
//! # }
//! ```

pub mod domain;
pub mod queries;
pub mod seed;
pub mod transfer;
pub mod views;

use sourceflow::{Builder, SourceFlow};

/// A flow builder with the shop's views projected in the background: several times the
/// throughput for bulk loads (`seed`), at the price of reads lagging until
/// [`SourceFlow::catch_up`]. Reactions stay in the foreground, so every order still reaches
/// its final state before `send` returns.
pub fn bulk_builder() -> Builder {
    SourceFlow::builder()
        .background::<views::OrderSummaryView>()
        .background::<views::OrderDetailsView>()
        .background::<views::CustomerOrdersView>()
        .background::<views::StockLevelView>()
        .background::<views::ProductSalesView>()
        .background::<views::PaymentDeadlinesView>()
}
