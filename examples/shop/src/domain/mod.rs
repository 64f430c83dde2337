//! The write side: entities, the sagas that guard them, and the reactions that connect them.
//!
//! | entity | id | saga | fed by |
//! |---|---|---|---|
//! | [`Order`] | a fresh [`EntityId`](sourceflow::EntityId) | [`OrderSaga`] | people; `RejectLine` from stock; `MarkOrderPaid` / `CancelOrder` from payment; `ExpireOrder` from its own payment deadline |
//! | [`Stock`] | the product's SKU | [`StockSaga`] | [`StockReservations`] reacting to order events; `Restock` from people |
//! | [`Payment`] | the order's id | [`PaymentSaga`] | [`PaymentProcess`] reacting to `OrderConfirmed` |

pub mod catalogue;
pub mod orders;
pub mod payment;
pub mod stock;

pub use catalogue::{format_money, parse_money, product, Product, CATALOGUE};
pub use orders::{
    AddItem, CancelOrder, ConfirmOrder, Contact, ExpireOrder, ItemAdded, ItemRejected, ItemRemoved,
    MarkOrderPaid, Order, OrderCancelled, OrderConfirmed, OrderLine, OrderPaid, OrderPlaced,
    OrderSaga, OrderStatus, PlaceOrder, RejectLine, RemoveItem, PAYMENT_TIMEOUT,
};
pub use payment::{
    AuthorizePayment, Payment, PaymentAuthorized, PaymentDeclined, PaymentProcess, PaymentSaga,
    PaymentStatus, CARD_LIMIT,
};
pub use stock::{
    ReleaseStock, ReserveStock, Restock, ShipStock, Stock, StockReceived, StockReleased,
    StockReservationFailed, StockReservations, StockReserved, StockSaga, StockShipped,
};
