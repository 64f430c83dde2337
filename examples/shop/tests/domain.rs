//! The domain without a database: each saga given/when/then with `SagaTest`, then the whole
//! process (reactions, compensations, views) on a `MemoryStore`.

use shop::domain::*;
use shop::queries::{self, OrderFilter};
use shop::views::{CustomerOrders, OrderDetails, OrderSummary, ProductSales, StockLevel};
use sourceflow::testing::SagaTest;
use sourceflow::{EntityId, Error, MemoryStore, SourceFlow, Verification};

fn add(sku: &str, quantity: u32) -> AddItem {
    AddItem {
        sku: sku.into(),
        quantity,
        unit_price: None,
    }
}

fn line(sku: &str, name: &str, quantity: u32, unit_price: i64) -> OrderLine {
    OrderLine {
        sku: sku.into(),
        name: name.into(),
        quantity,
        unit_price,
    }
}

fn place(customer: &str) -> PlaceOrder {
    PlaceOrder {
        customer_id: customer.into(),
        contact: None,
    }
}

// ---- OrderSaga

#[tokio::test]
async fn placing_an_order_twice_is_refused() {
    let test = SagaTest::new(OrderSaga::default()).await;
    let id = EntityId::from("o-1");
    let placed = test.when(&id, place("alice")).await;
    placed.expect_scheduled(PAYMENT_TIMEOUT, &id, ExpireOrder);
    let event: OrderPlaced = placed.events()[0].decode().unwrap();
    assert_eq!(event.customer_id, "alice");
    assert!(event.pay_by.is_some());
    assert_eq!(event.currency, "EUR");
    test.when(&id, place("bob"))
        .await
        .expect_rejected("already_placed");
}

#[tokio::test]
async fn items_merge_per_product_and_keep_their_price() {
    let test = SagaTest::new(OrderSaga::default()).await;
    let id = EntityId::from("o-1");
    test.given(&id, place("alice")).await;
    test.when(&id, add("TEA-SENCHA", 2))
        .await
        .expect_events([ItemAdded {
            sku: "TEA-SENCHA".into(),
            name: "Sencha green tea, 100 g".into(),
            quantity: 2,
            unit_price: 850,
        }]);
    test.when(&id, add("TEA-SENCHA", 3)).await;
    let order: Order = test.state(&id).await;
    assert_eq!(
        order.lines,
        [line("TEA-SENCHA", "Sencha green tea, 100 g", 5, 850)]
    );
    test.when(
        &id,
        AddItem {
            unit_price: Some(700),
            ..add("TEA-SENCHA", 1)
        },
    )
    .await
    .expect_rejected("price_mismatch");
    test.when(&id, add("TEA-SENCHA", 95))
        .await
        .expect_rejected("too_many");
}

#[tokio::test]
async fn validation_lists_every_problem_before_the_handler_runs() {
    let test = SagaTest::new(OrderSaga::default()).await;
    let id = EntityId::from("o-1");
    test.given(&id, place("alice")).await;
    let outcome = test
        .when(
            &id,
            AddItem {
                sku: "NOPE".into(),
                quantity: 0,
                unit_price: Some(-5),
            },
        )
        .await;
    outcome
        .expect_invalid("sku")
        .expect_invalid("quantity")
        .expect_invalid("unit_price");
    test.when(
        &id,
        AddItem {
            unit_price: Some(4_600),
            ..add("POT-CAST", 1)
        },
    )
    .await
    .expect_invalid("unit_price");
    test.when(&EntityId::from("o-2"), place(""))
        .await
        .expect_invalid("customer_id");
    test.when(&EntityId::from("o-2"), place(&"x".repeat(41)))
        .await
        .expect_invalid("customer_id");
    test.when(
        &id,
        RemoveItem {
            sku: "TEA-ASSAM".into(),
            quantity: Some(0),
        },
    )
    .await
    .expect_invalid("quantity");
    // Nothing was stored by the refused commands.
    assert_eq!(test.state::<Order>(&id).await.lines, []);
}

#[tokio::test]
async fn removing_takes_units_or_the_whole_line() {
    let test = SagaTest::new(OrderSaga::default()).await;
    let id = EntityId::from("o-1");
    test.given(&id, place("alice")).await;
    test.given(&id, add("TEA-ASSAM", 3)).await;
    test.when(
        &id,
        RemoveItem {
            sku: "TEA-ASSAM".into(),
            quantity: Some(4),
        },
    )
    .await
    .expect_rejected("not_in_order");
    test.when(
        &id,
        RemoveItem {
            sku: "TEA-ASSAM".into(),
            quantity: Some(1),
        },
    )
    .await
    .expect_events([ItemRemoved {
        sku: "TEA-ASSAM".into(),
        quantity: 1,
        unit_price: 650,
    }]);
    test.when(
        &id,
        RemoveItem {
            sku: "TEA-ASSAM".into(),
            quantity: None,
        },
    )
    .await
    .expect_events([ItemRemoved {
        sku: "TEA-ASSAM".into(),
        quantity: 2,
        unit_price: 650,
    }]);
    assert!(test.state::<Order>(&id).await.lines.is_empty());
}

#[tokio::test]
async fn confirming_needs_items_and_closes_the_order() {
    let test = SagaTest::new(OrderSaga::default()).await;
    let id = EntityId::from("o-1");
    test.given(&id, place("alice")).await;
    test.when(&id, ConfirmOrder)
        .await
        .expect_rejected("empty_order");
    test.given(&id, add("MUG-STONE", 2)).await;
    test.when(&id, ConfirmOrder)
        .await
        .expect_events([OrderConfirmed {
            customer_id: "alice".into(),
            lines: vec![line("MUG-STONE", "Stoneware mug", 2, 1_200)],
            total: 2_400,
        }]);
    test.when(&id, add("MUG-STONE", 1))
        .await
        .expect_rejected("not_draft");
    test.when(&id, MarkOrderPaid { amount: 100 })
        .await
        .expect_rejected("amount_mismatch");
    test.when(&id, MarkOrderPaid { amount: 2_400 })
        .await
        .expect_event(OrderPaid {
            customer_id: "alice".into(),
            lines: vec![line("MUG-STONE", "Stoneware mug", 2, 1_200)],
            amount: 2_400,
        });
    test.when(
        &id,
        CancelOrder {
            reason: String::new(),
        },
    )
    .await
    .expect_rejected("already_paid");
}

#[tokio::test]
async fn commands_to_an_order_that_does_not_exist_are_refused() {
    let test = SagaTest::new(OrderSaga::default()).await;
    let id = EntityId::from("nowhere");
    test.when(&id, add("TEA-ASSAM", 1))
        .await
        .expect_rejected("no_such_order");
    test.when(&id, ConfirmOrder)
        .await
        .expect_rejected("no_such_order");
}

#[tokio::test]
async fn a_rejected_item_leaves_the_order_and_a_cancelled_order_ignores_it() {
    let test = SagaTest::new(OrderSaga::default()).await;
    let id = EntityId::from("o-1");
    test.given(&id, place("alice")).await;
    test.given(&id, add("POT-LIMITED", 2)).await;
    test.when(
        &id,
        RejectLine {
            sku: "POT-LIMITED".into(),
            quantity: 2,
            reason: "out of stock".into(),
        },
    )
    .await
    .expect_events([ItemRejected {
        sku: "POT-LIMITED".into(),
        quantity: 2,
        unit_price: 12_000,
        reason: "out of stock".into(),
    }]);
    test.given(
        &id,
        CancelOrder {
            reason: "bye".into(),
        },
    )
    .await;
    test.when(
        &id,
        RejectLine {
            sku: "POT-LIMITED".into(),
            quantity: 1,
            reason: "late".into(),
        },
    )
    .await
    .expect_no_events();
}

// ---- StockSaga

#[tokio::test]
async fn the_first_stock_command_books_the_opening_stock() {
    let test = SagaTest::new(StockSaga).await;
    let sku = EntityId::from("POT-CAST");
    test.when(
        &sku,
        ReserveStock {
            order_id: "o-1".into(),
            quantity: 2,
        },
    )
    .await
    .expect_event(StockReceived {
        quantity: 50,
        on_hand: 50,
        reason: "opening stock".into(),
    })
    .expect_event(StockReserved {
        order_id: "o-1".into(),
        quantity: 2,
        available: 48,
    });
    test.when(&EntityId::from("NOT-A-SKU"), Restock { quantity: 1 })
        .await
        .expect_rejected("unknown_product");
    test.when(&sku, Restock { quantity: 0 })
        .await
        .expect_invalid("quantity");
}

#[tokio::test]
async fn a_shortage_is_recorded_and_sent_back_to_the_order() {
    let test = SagaTest::new(StockSaga).await;
    let sku = EntityId::from("POT-LIMITED");
    test.given(
        &sku,
        ReserveStock {
            order_id: "o-1".into(),
            quantity: 2,
        },
    )
    .await;
    test.when(
        &sku,
        ReserveStock {
            order_id: "o-2".into(),
            quantity: 2,
        },
    )
    .await
    .expect_events([StockReservationFailed {
        order_id: "o-2".into(),
        quantity: 2,
        available: 1,
    }])
    .expect_command(
        "o-2",
        RejectLine {
            sku: "POT-LIMITED".into(),
            quantity: 2,
            reason: "only 1 left".into(),
        },
    );
    let stock: Stock = test.state(&sku).await;
    assert_eq!((stock.on_hand, stock.available()), (3, 1));
}

#[tokio::test]
async fn releasing_and_shipping_touch_only_what_the_order_holds() {
    let test = SagaTest::new(StockSaga).await;
    let sku = EntityId::from("MUG-STONE");
    test.given(
        &sku,
        ReserveStock {
            order_id: "o-1".into(),
            quantity: 3,
        },
    )
    .await;
    // Nothing held for o-2: nothing to release, no event.
    test.when(
        &sku,
        ReleaseStock {
            order_id: "o-2".into(),
            quantity: 3,
        },
    )
    .await
    .expect_no_events();
    test.when(
        &sku,
        ReleaseStock {
            order_id: "o-1".into(),
            quantity: 1,
        },
    )
    .await
    .expect_events([StockReleased {
        order_id: "o-1".into(),
        quantity: 1,
        available: 198,
    }]);
    test.when(
        &sku,
        ShipStock {
            order_id: "o-1".into(),
            quantity: 5,
        },
    )
    .await
    .expect_events([StockShipped {
        order_id: "o-1".into(),
        quantity: 2,
        on_hand: 198,
    }]);
    let stock: Stock = test.state(&sku).await;
    assert!(stock.reserved.is_empty());
    assert_eq!(stock.available(), 198);
}

// ---- PaymentSaga

#[tokio::test]
async fn payments_within_the_limit_are_authorised_and_tell_the_order() {
    let test = SagaTest::new(PaymentSaga).await;
    let id = EntityId::from("o-1");
    test.when(
        &id,
        AuthorizePayment {
            customer_id: "alice".into(),
            amount: 5_000,
        },
    )
    .await
    .expect_events([PaymentAuthorized {
        customer_id: "alice".into(),
        amount: 5_000,
    }])
    .expect_command("o-1", MarkOrderPaid { amount: 5_000 });
    test.when(
        &id,
        AuthorizePayment {
            customer_id: "alice".into(),
            amount: 5_000,
        },
    )
    .await
    .expect_rejected("already_decided");
}

#[tokio::test]
async fn payments_above_the_limit_are_declined_and_cancel_the_order() {
    let test = SagaTest::new(PaymentSaga).await;
    let id = EntityId::from("o-1");
    let outcome = test
        .when(
            &id,
            AuthorizePayment {
                customer_id: "bob".into(),
                amount: CARD_LIMIT + 1,
            },
        )
        .await;
    let reason = "payment declined: 300.01 is above the card limit of 300.00".to_owned();
    outcome
        .expect_events([PaymentDeclined {
            customer_id: "bob".into(),
            amount: CARD_LIMIT + 1,
            reason: reason.clone(),
        }])
        .expect_command("o-1", CancelOrder { reason });
    test.when(
        &EntityId::from("o-2"),
        AuthorizePayment {
            customer_id: "bob".into(),
            amount: 0,
        },
    )
    .await
    .expect_invalid("amount");
}

// ---- The whole process on a MemoryStore: reactions, compensations, views.

async fn flow() -> SourceFlow {
    SourceFlow::builder()
        .store(MemoryStore::new())
        .build()
        .await
        .expect("the shop wires up")
}

#[tokio::test]
async fn a_confirmed_order_is_paid_and_shipped_before_send_returns() {
    let flow = flow().await;
    let id = EntityId::new();
    flow.send(&id, place("alice")).await.unwrap();
    flow.send(&id, add("TEA-SENCHA", 2)).await.unwrap();
    flow.send(&id, add("FILTER-100", 1)).await.unwrap();
    flow.send(&id, ConfirmOrder).await.unwrap();

    let summary: OrderSummary = flow.view_model(&id).await.unwrap().unwrap();
    assert_eq!(summary.status, OrderStatus::Paid);
    assert_eq!((summary.units, summary.total), (3, 2_000));
    let payment: Payment = flow.replay(&id).await.unwrap();
    assert_eq!(payment.status, PaymentStatus::Authorized);
    let stock: StockLevel = flow.view_model("TEA-SENCHA").await.unwrap().unwrap();
    assert_eq!(
        (stock.on_hand, stock.available, stock.shipped),
        (498, 498, 2)
    );
    let sales: ProductSales = flow.view_model("FILTER-100").await.unwrap().unwrap();
    assert_eq!((sales.units, sales.orders, sales.revenue), (1, 1, 300));
    let customer: CustomerOrders = flow.view_model("alice").await.unwrap().unwrap();
    assert_eq!(customer.total_paid, 2_000);
    assert_eq!(customer.orders[0].status, OrderStatus::Paid);
    let details: OrderDetails = flow.view_model(&id).await.unwrap().unwrap();
    let history: Vec<&str> = details.history.iter().map(|h| h.what.as_str()).collect();
    assert!(
        history.contains(&"payment of 20.00 authorised"),
        "{history:?}"
    );
    assert!(
        history.contains(&"stock: 2 x TEA-SENCHA shipped"),
        "{history:?}"
    );
    assert!(matches!(
        flow.verify::<Order>(&id).await.unwrap(),
        Verification::Consistent { .. }
    ));
}

#[tokio::test]
async fn stock_shortages_and_declined_payments_compensate() {
    let flow = flow().await;
    let bob = EntityId::new();
    let carol = EntityId::new();
    flow.send(&bob, place("bob")).await.unwrap();
    flow.send(&bob, add("POT-LIMITED", 3)).await.unwrap();
    flow.send(&carol, place("carol")).await.unwrap();
    flow.send(&carol, add("POT-LIMITED", 1)).await.unwrap();
    let carol_now: Order = flow.replay(&carol).await.unwrap();
    assert!(carol_now.lines.is_empty(), "the shortage took the item out");

    flow.send(&bob, ConfirmOrder).await.unwrap();
    let bob_now: OrderSummary = flow.view_model(&bob).await.unwrap().unwrap();
    assert_eq!(bob_now.status, OrderStatus::Cancelled);
    assert!(bob_now.note.contains("payment declined"));
    let stock: StockLevel = flow.view_model("POT-LIMITED").await.unwrap().unwrap();
    assert_eq!((stock.available, stock.shortages), (3, 1));

    // A refused command stores nothing and says why.
    match flow.send(&bob, add("TEA-ASSAM", 1)).await {
        Err(Error::Rejected(e)) => assert_eq!(e.code, "not_draft"),
        other => panic!("{other:?}"),
    }
    let cancelled = queries::orders(
        &flow,
        &OrderFilter {
            status: Some(OrderStatus::Cancelled),
            customer_id: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(cancelled.len(), 1);
}

#[tokio::test]
async fn order_ids_resolve_from_unique_prefixes() {
    let flow = flow().await;
    for id in ["abc-1", "abc-2", "xyz-1"] {
        flow.send(id, place("alice")).await.unwrap();
    }
    assert_eq!(
        queries::resolve_order(&flow, "xyz").await.unwrap().as_str(),
        "xyz-1"
    );
    assert_eq!(
        queries::resolve_order(&flow, "abc-2")
            .await
            .unwrap()
            .as_str(),
        "abc-2"
    );
    assert!(matches!(
        queries::resolve_order(&flow, "abc").await,
        Err(queries::QueryError::Ambiguous { .. })
    ));
    assert!(matches!(
        queries::resolve_order(&flow, "nope").await,
        Err(queries::QueryError::NotFound { .. })
    ));
}

// ---- Payment deadlines

#[tokio::test]
async fn an_unpaid_order_is_cancelled_when_its_payment_deadline_passes() {
    let test = SagaTest::new(OrderSaga::default()).await;
    let id = EntityId::from("o-1");
    test.given(&id, place("alice")).await;
    test.given(&id, add("TEA-SENCHA", 2)).await;
    test.when(&id, ConfirmOrder).await.expect_no_commands();
    test.advance(PAYMENT_TIMEOUT - std::time::Duration::from_secs(1))
        .await
        .expect_nothing_fired();
    let fired = test.advance(std::time::Duration::from_secs(1)).await;
    fired.expect_fired(&id, ExpireOrder);
    let order: Order = test.state(&id).await;
    assert_eq!(order.status, OrderStatus::Cancelled);
    assert_eq!(order.payment_deadline, None);
}

#[tokio::test]
async fn paying_or_cancelling_cancels_the_payment_deadline() {
    let test = SagaTest::new(OrderSaga::with_payment_timeout(
        std::time::Duration::from_secs(60),
    ))
    .await;
    let paid = EntityId::from("o-paid");
    test.given(&paid, place("alice")).await;
    test.given(&paid, add("TEA-SENCHA", 1)).await;
    test.given(&paid, ConfirmOrder).await;
    test.given(&paid, MarkOrderPaid { amount: 850 }).await;
    let cancelled = EntityId::from("o-cancelled");
    test.given(&cancelled, place("bob")).await;
    test.given(
        &cancelled,
        CancelOrder {
            reason: String::new(),
        },
    )
    .await;
    assert!(test.pending().await.is_empty());
    test.advance(std::time::Duration::from_secs(3600))
        .await
        .expect_nothing_fired();
    let order: Order = test.state(&paid).await;
    assert_eq!(order.status, OrderStatus::Paid);
}

#[tokio::test]
async fn an_expired_order_releases_its_stock_and_leaves_the_deadline_list() {
    use shop::views::PaymentDeadline;
    let clock = sourceflow::schedule::ManualClock::new();
    let flow = SourceFlow::builder()
        .store(MemoryStore::new())
        .saga(OrderSaga::with_payment_timeout(
            std::time::Duration::from_secs(5),
        ))
        .clock(clock.clone())
        .without_scheduler()
        .build()
        .await
        .unwrap();
    let sku = "TEA-SENCHA";
    flow.send(sku, Restock { quantity: 10 }).await.unwrap();
    let stock = |flow: SourceFlow| async move {
        flow.view_model::<StockLevel>(sku)
            .await
            .unwrap()
            .unwrap()
            .available
    };
    let before = stock(flow.clone()).await;
    let order = EntityId::from("o-late");
    flow.send(&order, place("carol")).await.unwrap();
    flow.send(&order, add(sku, 3)).await.unwrap();
    assert_eq!(stock(flow.clone()).await, before - 3);
    let listed = queries::payment_deadlines(&flow).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, order);
    let due: PaymentDeadline = listed[0].1.clone();
    assert_eq!(due.customer_id, "carol");

    clock.advance(std::time::Duration::from_secs(5));
    assert_eq!(flow.fire_due().await.unwrap(), 1);
    let summary: OrderSummary = flow.view_model(&order).await.unwrap().unwrap();
    assert_eq!(summary.status, OrderStatus::Cancelled);
    assert_eq!(summary.note, "not paid within 5 seconds");
    assert_eq!(stock(flow.clone()).await, before);
    assert!(queries::payment_deadlines(&flow).await.unwrap().is_empty());
}
