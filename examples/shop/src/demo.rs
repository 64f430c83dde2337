//! `shop demo`: a scripted scenario, end to end, explained as it runs.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use shop::domain::{
    format_money, AddItem, CancelOrder, ConfirmOrder, Order, PlaceOrder, RemoveItem, CARD_LIMIT,
};
use shop::queries::{self, OrderFilter};
use shop::transfer;
use shop::views::{OrderSummaryView, ProductSalesView, StockLevelView};
use sourceflow::{EntityId, Error, Sequence, SourceFlow, Verification};

use crate::cli::{
    caused_events, print_customer, print_order, print_orders, print_products, Session,
};
use crate::db::{open_flow, Access, Target};
use crate::output::{bold, describe, dim, good, say, short, warn};

/// The demo's own database, recreated on every run.
pub const DEMO_DB: &str = "shop-demo.db";

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
        SourceFlow::builder(),
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

        self.chapter("6. Queries read the views, never the entities");
        print_orders(&self.flow, &OrderFilter::default(), 10).await?;
        say!();
        print_customer(&self.flow, "alice").await?;
        say!();
        print_order(&self.flow, alice.as_str()).await?;
        say!();
        print_products(&self.flow).await?;

        self.chapter("7. The log is the truth: replay, time travel, rebuild");
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
