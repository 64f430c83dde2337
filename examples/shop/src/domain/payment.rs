//! Payment: a process that starts when an order is confirmed and ends by telling the order.
//!
//! `PaymentProcess` (an aggregate reaction) turns `OrderConfirmed` into `AuthorizePayment`,
//! addressed to the `Payment` entity with the order's id (streams are per entity type, so the
//! two never collide). `PaymentSaga` decides, records the outcome and sends `MarkOrderPaid` or
//! `CancelOrder` back. The "card network" is a rule, so the example runs offline and replays
//! deterministically: anything above [`CARD_LIMIT`] is declined.

use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

use super::catalogue::format_money;
use super::orders::{CancelOrder, MarkOrderPaid, Order, OrderConfirmed};

/// The largest amount the pretend card network authorises, in cents.
pub const CARD_LIMIT: i64 = 30_000;

// ---- Commands

/// Asks for a payment authorisation for an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
#[command(name = "shop.AuthorizePayment", validate)]
pub struct AuthorizePayment {
    /// Who pays.
    pub customer_id: String,
    /// Amount in cents.
    pub amount: i64,
}

impl Validate for AuthorizePayment {
    fn validate(&self, v: &mut Violations) {
        v.check(self.amount <= 0, "amount", "must be positive");
    }
}

// ---- Events

/// The card network said yes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "shop.PaymentAuthorized")]
pub struct PaymentAuthorized {
    /// Who paid.
    pub customer_id: String,
    /// Amount in cents.
    pub amount: i64,
}

/// The card network said no.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "shop.PaymentDeclined")]
pub struct PaymentDeclined {
    /// Who tried to pay.
    pub customer_id: String,
    /// Amount in cents.
    pub amount: i64,
    /// Why.
    pub reason: String,
}

// ---- The entity

/// Where a payment is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Not asked for yet.
    #[default]
    Pending,
    /// Authorised.
    Authorized,
    /// Declined.
    Declined,
}

/// One order's payment; its id is the order's id.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Entity)]
#[entity(name = "shop.Payment")]
pub struct Payment {
    /// Where it is.
    pub status: PaymentStatus,
    /// Amount asked for, in cents.
    pub amount: i64,
}

/// Decides payments.
#[derive(Default)]
pub struct PaymentSaga;

#[saga(entity = Payment)]
impl PaymentSaga {
    #[handles]
    async fn authorize(
        &self,
        payment: &mut Payment,
        cmd: &AuthorizePayment,
        cx: &mut SagaContext,
    ) -> Result<(), DomainError> {
        if payment.status != PaymentStatus::Pending {
            return Err(DomainError::with_code(
                "already_decided",
                "this order's payment was already decided",
            ));
        }
        payment.amount = cmd.amount;
        // The payment and the order share an id: the order is told with a command to that id.
        let order_id = cx.entity_id().clone();
        if cmd.amount > CARD_LIMIT {
            let reason = format!(
                "payment declined: {} is above the card limit of {}",
                format_money(cmd.amount),
                format_money(CARD_LIMIT)
            );
            payment.status = PaymentStatus::Declined;
            cx.publish(PaymentDeclined {
                customer_id: cmd.customer_id.clone(),
                amount: cmd.amount,
                reason: reason.clone(),
            });
            cx.send(order_id, CancelOrder { reason });
        } else {
            payment.status = PaymentStatus::Authorized;
            cx.publish(PaymentAuthorized {
                customer_id: cmd.customer_id.clone(),
                amount: cmd.amount,
            });
            cx.send(order_id, MarkOrderPaid { amount: cmd.amount });
        }
        Ok(())
    }
}

/// Starts a payment for every confirmed order.
#[derive(Default)]
pub struct PaymentProcess;

#[aggregate(entity = Order, name = "shop.PaymentProcess")]
impl PaymentProcess {
    #[subscribes]
    async fn on_confirmed(&self, e: &OrderConfirmed, cx: &mut ReactionContext) {
        // Exactly once per event: the command's id is derived from the event's, so a reaction
        // re-run after a crash is acknowledged as a duplicate.
        cx.send(AuthorizePayment {
            customer_id: e.customer_id.clone(),
            amount: e.total,
        });
    }
}
