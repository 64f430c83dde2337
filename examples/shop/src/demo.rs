//! `shop demo`: a scripted scenario, end to end, explained as it runs.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use shop::domain::{
    format_money, AddItem, CancelOrder, ConfirmOrder, Contact, Order, OrderSaga, OrderStatus,
    PlaceOrder, RemoveItem, CARD_LIMIT,
};
use shop::queries::{self, OrderFilter};
use shop::transfer;
use shop::views::{OrderSummaryView, ProductSalesView, StockLevelView};
use sourceflow::{EntityId, Error, Sequence, SourceFlow, StreamId, Verification};

use crate::cli::{
    caused_events, print_customer, print_deadlines, print_order, print_orders, print_products,
    Session,
};
use crate::db::{open_flow, Access, Target};
use crate::output::{bold, describe, dim, good, say, short, warn};

/// The demo's own database, recreated on every run.
pub const DEMO_DB: &str = "shop-demo.db";

/// How long the demo's orders wait for their payment (the shop's default is 30 minutes).
const DEMO_PAYMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs the scenario on `shop-demo.db` (recreated), or on the database the user chose if it
/// is empty.
///
/// # Errors
/// A chosen database that is not empty; store faults.
pub async fn run(session: &Session) -> anyhow::Result<()> {
    let target = if session.chosen {
        session.target.clone()
    } else {
        let path = PathBuf::from(DEMO_DB);
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{DEMO_DB}{suffix}"));
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot recreate {}", file.display()))
                }
            }
        }
        Target::Sqlite(path)
    };
    let flow = open_flow(
        &target,
        Access::Create,
        session.lock_timeout,
        SourceFlow::builder().saga(OrderSaga::with_payment_timeout(DEMO_PAYMENT_TIMEOUT)),
    )
    .await?;
    if session.chosen && transfer::ensure_empty(&**flow.store()).await.is_err() {
        bail!(
            "the demo needs an empty database and {target} is not; run `shop demo` without \
             --db/--database-url to use its own {DEMO_DB}"
        );
    }
    let demo = Demo { flow };
    demo.script(&target).await
}

struct Demo {
    flow: SourceFlow,
}

impl Demo {
    async fn script(&self, target: &Target) -> anyhow::Result<()> {
        say!("{}", bold("sourceflow shop: a guided tour"));
        say!("database: {target} (fresh)\n");
        say!(
            "Every line starting with » is a command sent to an entity. The indented lines are the\n\
             events it caused, with their global position: its own, then those of the follow-up\n\
             commands that reactions and sagas sent (stock reservations, payments).\n"
        );

        self.chapter("1. Alice orders tea");
        let alice = EntityId::new();
        let alice_customer = PlaceOrder {
            customer_id: "alice".into(),
            contact: Some(Contact::of(
                "alice",
                "Alice Liddell",
                "1 Rabbit Hole Lane, Oxford",
                "alice@example.org",
            )),
        };
        self.send(&alice, alice_customer, "alice places an order")
            .await?;
        self.send(&alice, add("TEA-SENCHA", 2, None), "2 x TEA-SENCHA")
            .await?;
        self.send(&alice, add("MUG-STONE", 1, None), "1 x MUG-STONE")
            .await?;
        self.send(
            &alice,
            RemoveItem {
                sku: "MUG-STONE".into(),
                quantity: None,
            },
            "on second thought, no mug",
        )
        .await?;
        self.send(
            &alice,
            add("POT-CAST", 1, Some(4_050)),
            "1 x POT-CAST at a promotional 40.50",
        )
        .await?;
        self.send(&alice, ConfirmOrder, "alice confirms").await?;
        say!(
            "{}",
            dim("   Confirming started the payment process, which marked the order paid; paying\n   \
                 shipped the reserved stock. All of it happened before `send` returned.")
        );

        self.chapter("2. Validation before persistence: nothing is stored");
        let head = self.flow.store().head().await?;
        let bob = EntityId::new();
        self.send(
            &bob,
            PlaceOrder {
                customer_id: "bob".into(),
                contact: None,
            },
            "bob places an order",
        )
        .await?;
        let head_after_place = self.flow.store().head().await?;
        self.send(
            &bob,
            add("TEA-MATCHA", 1, None),
            "a product the shop does not sell",
        )
        .await?;
        self.send(&bob, add("TEA-ASSAM", 0, None), "zero units")
            .await?;
        self.send(
            &bob,
            add("POT-CAST", 1, Some(9_900)),
            "a price above the list price",
        )
        .await?;
        self.send(
            &bob,
            add("TEA-ASSAM", 120, Some(-100)),
            "several problems at once",
        )
        .await?;
        let head_now = self.flow.store().head().await?;
        say!(
            "{}",
            dim(&format!(
                "   The log went from position {head} to {head_after_place} with bob's order and \
                 stayed at {head_now}: refused commands leave no trace."
            ))
        );

        self.chapter("3. Business rules refuse what makes no sense");
        self.send(
            &alice,
            add("TEA-ASSAM", 1, None),
            "adding to alice's paid order",
        )
        .await?;
        self.send(&bob, ConfirmOrder, "confirming bob's empty order")
            .await?;
        self.send(
            &alice,
            CancelOrder {
                reason: "too late".into(),
            },
            "cancelling a paid order",
        )
        .await?;

        self.chapter("4. Stock runs out; a compensating command fixes the order");
        self.send(
            &bob,
            add("POT-LIMITED", 3, None),
            "bob takes all 3 limited-edition teapots",
        )
        .await?;
        let carol = EntityId::new();
        self.send(
            &carol,
            PlaceOrder {
                customer_id: "carol".into(),
                contact: None,
            },
            "carol places an order",
        )
        .await?;
        self.send(&carol, add("TEA-EARLGREY", 1, None), "1 x TEA-EARLGREY")
            .await?;
        self.send(
            &carol,
            add("POT-LIMITED", 1, None),
            "carol wants a limited teapot too",
        )
        .await?;
        say!(
            "{}",
            dim("   The order accepted the item; the stock could not reserve it and sent RejectLine\n   \
                 back, so the order took it out again. No transaction spans the two entities.")
        );

        self.chapter(&format!(
            "5. A declined payment cancels the order (card limit {})",
            format_money(CARD_LIMIT)
        ));
        self.send(&bob, ConfirmOrder, "bob confirms 360.00 worth of teapots")
            .await?;
        self.send(
            &carol,
            add("POT-LIMITED", 1, None),
            "carol tries again, now that bob's teapots are back",
        )
        .await?;
        self.send(&carol, ConfirmOrder, "carol confirms").await?;
        let dave = EntityId::new();
        self.send(
            &dave,
            PlaceOrder {
                customer_id: "dave".into(),
                contact: None,
            },
            "dave places an order",
        )
        .await?;
        self.send(&dave, add("KETTLE-GOOSE", 1, None), "1 x KETTLE-GOOSE")
            .await?;
        self.send(
            &dave,
            CancelOrder {
                reason: "found one cheaper".into(),
            },
            "dave cancels",
        )
        .await?;

        self.chapter(&format!(
            "6. An order nobody pays is cancelled after {} s, its stock released",
            DEMO_PAYMENT_TIMEOUT.as_secs()
        ));
        let erin = EntityId::new();
        self.send(
            &erin,
            PlaceOrder {
                customer_id: "erin".into(),
                contact: None,
            },
            "erin opens an order",
        )
        .await?;
        self.send(&erin, add("MUG-STONE", 2, None), "erin adds two mugs")
            .await?;
        say!("   placing the order scheduled its cancellation, committed with the order:");
        print_deadlines(&self.flow).await?;
        say!(
            "   erin never pays; the flow's scheduler fires the deadline (waiting {} s)",
            DEMO_PAYMENT_TIMEOUT.as_secs()
        );
        let mut waited = 0;
        loop {
            let order: Order = self.flow.replay(&erin).await?;
            if order.status == OrderStatus::Cancelled {
                break;
            }
            waited += 1;
            if waited > 100 {
                bail!("the payment deadline did not fire");
            }
            tokio::time::sleep(DEMO_PAYMENT_TIMEOUT / 10).await;
        }
        self.flow.catch_up().await?;
        print_order(&self.flow, erin.as_str()).await?;
        print_deadlines(&self.flow).await?;

        self.chapter("7. Queries read the views, never the entities");
        print_orders(&self.flow, &OrderFilter::default(), 10).await?;
        say!();
        print_customer(&self.flow, "alice").await?;
        say!();
        print_order(&self.flow, alice.as_str()).await?;
        say!();
        print_products(&self.flow).await?;

        self.chapter("8. The log is the truth: replay, time travel, rebuild");
        match self.flow.verify::<Order>(&alice).await? {
            Verification::Consistent { sequence } => say!(
                "{}",
                good(&format!(
                    "   replaying alice's {sequence} commands reproduces her events and stored state"
                ))
            ),
            other => say!("{}", warn(&format!("   verification: {other:?}"))),
        }
        let replayed: Order = self.flow.replay(&alice).await?;
        let earlier: Order = self.flow.state_at(&alice, Sequence(3)).await?;
        say!(
            "   now: {} with {} lines, {}; after command 3 it was {} with {} lines, {}",
            replayed.status,
            replayed.lines.len(),
            format_money(replayed.total()),
            earlier.status,
            earlier.lines.len(),
            format_money(earlier.total())
        );
        let before = queries::orders(&self.flow, &OrderFilter::default()).await?;
        let rebuilt = self.flow.rebuild::<OrderSummaryView>().await?;
        self.flow.rebuild::<StockLevelView>().await?;
        self.flow.rebuild::<ProductSalesView>().await?;
        let after = queries::orders(&self.flow, &OrderFilter::default()).await?;
        say!(
            "   rebuilt the order summaries from {rebuilt} events: {}",
            if before == after {
                good("identical to the live ones")
            } else {
                warn("they differ!")
            }
        );

        self.chapter("9. Personal data: encrypted at rest, forgotten on request");
        self.forget_alice(&alice).await?;

        self.chapter("Next");
        let db = match target {
            Target::Sqlite(path) => format!("--db {}", path.display()),
            Target::Postgres { .. } => "--database-url ...".to_owned(),
        };
        say!("   cargo run -p shop -- {db} orders");
        say!(
            "   cargo run -p shop -- {db} order {}",
            short(alice.as_str())
        );
        say!("   cargo run -p shop -- {db} events --stream {alice}");
        say!("   cargo run -p shop -- {db}            (the interactive menu)");
        if let Target::Sqlite(path) = target {
            say!(
                "   sqlite3 {} 'select position, stream_type, name, payload from sf_events'",
                path.display()
            );
        }
        Ok(())
    }

    /// Shows alice's contact sealed in the store, forgets her, and shows what is left.
    async fn forget_alice(&self, alice: &EntityId) -> anyhow::Result<()> {
        let stream = StreamId::new("shop.Order", alice.clone());
        let stored = self
            .flow
            .raw_store()
            .read_stream_range(&stream, Sequence(1), Sequence(1))
            .await?;
        if let Some(placed) = stored.first() {
            let text = String::from_utf8_lossy(&placed.payload);
            let from = text.find("\"contact\"").unwrap_or(0);
            let shown: String = text[from..].chars().take(100).collect();
            say!("   alice's OrderPlaced as stored (her name, address and e-mail are ciphertext):");
            say!("   {}", dim(&format!("{shown}...")));
        }
        self.flow.forget("alice").await?;
        say!("{}", good("   » forget alice: her key is deleted"));
        print_order(&self.flow, alice.as_str()).await?;
        match self.flow.verify::<Order>(alice).await? {
            Verification::Consistent { sequence } => say!(
                "{}",
                good(&format!(
                    "   her {sequence} commands still replay: the order stays, her data reads as redacted"
                ))
            ),
            other => say!("{}", warn(&format!("   verification: {other:?}"))),
        }
        Ok(())
    }

    fn chapter(&self, title: &str) {
        say!("\n{}", bold(title));
    }

    /// Sends a command and prints what happened; refusals are part of the story.
    async fn send<C: sourceflow::Command>(
        &self,
        id: &EntityId,
        command: C,
        label: &str,
    ) -> anyhow::Result<()> {
        let before = self.flow.store().head().await?;
        // Unit commands (`ConfirmOrder`) have no fields to show.
        let fields = serde_json::to_string(&command)?;
        let fields = if fields == "null" {
            String::new()
        } else {
            fields
        };
        say!("» {label}: {} {}", C::NAME, dim(&fields));
        match self.flow.send(id, command).await {
            Ok(receipt) => {
                for event in caused_events(&self.flow, before, receipt.message_id).await? {
                    let line = format!("    #{:<4} {}", event.position, describe(&event));
                    let bad = matches!(
                        &*event.envelope.name,
                        "shop.ItemRejected"
                            | "shop.PaymentDeclined"
                            | "shop.StockReservationFailed"
                            | "shop.OrderCancelled"
                    );
                    say!("{}", if bad { warn(&line) } else { line });
                }
            }
            Err(Error::Invalid(v)) => say!("{}", warn(&format!("    invalid: {v}"))),
            Err(Error::Rejected(e)) => say!("{}", warn(&format!("    refused: {e}"))),
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}

fn add(sku: &str, quantity: u32, unit_price: Option<i64>) -> AddItem {
    AddItem {
        sku: sku.into(),
        quantity,
        unit_price,
    }
}
