//! Every subcommand of the `shop` binary, on a temporary SQLite file.

mod common;

use common::{events_json, order_id, shop_on, Shop};

#[test]
fn an_order_goes_from_draft_to_paid_and_every_query_shows_it() {
    let shop = Shop::new();
    let out = shop.ok(&["place-order", "--customer", "alice"]);
    let id = order_id(&out);
    assert!(out.contains("placed for alice"), "{out}");

    let out = shop.ok(&["add-item", &id, "TEA-SENCHA", "2"]);
    assert!(out.contains("2 x TEA-SENCHA added at 8.50"), "{out}");
    assert!(out.contains("2 reserved"), "the reservation follows: {out}");
    // SKUs are case-insensitive, and a unique prefix of the id is enough.
    let out = shop.ok(&["add-item", &id[..13], "mug-stone"]);
    assert!(out.contains("1 x MUG-STONE added"), "{out}");
    let out = shop.ok(&["add-item", &id, "POT-CAST", "1", "--price", "40.50"]);
    assert!(out.contains("added at 40.50"), "{out}");
    let out = shop.ok(&["remove-item", &id, "MUG-STONE"]);
    assert!(out.contains("1 released"), "{out}");
    assert!(out.contains("is draft: 3 units, 57.50"), "{out}");

    let out = shop.ok(&["confirm", &id]);
    assert!(out.contains("payment of 57.50 authorised"), "{out}");
    assert!(out.contains("shipped"), "{out}");
    assert!(out.contains("is paid"), "{out}");

    let out = shop.ok(&["orders"]);
    assert!(
        out.contains(&id) && out.contains("paid") && out.contains("57.50"),
        "{out}"
    );
    let out = shop.ok(&["orders", "--status", "draft"]);
    assert!(out.contains("no orders"), "{out}");
    let out = shop.ok(&["orders", "--customer", "alice", "--all"]);
    assert!(out.contains(&id), "{out}");

    let out = shop.ok(&["order", &id]);
    for expected in [
        "(alice, paid)",
        "TEA-SENCHA",
        "POT-CAST",
        "placed by alice",
        "stock: 2 x TEA-SENCHA reserved",
        "payment of 57.50 authorised",
        "paid 57.50",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in {out}");
    }
    assert!(
        !out.contains("MUG-STONE ┆"),
        "the removed line is gone: {out}"
    );

    let out = shop.ok(&["customer", "alice"]);
    assert!(
        out.contains("orders 1, paid 57.50") && out.contains(&id),
        "{out}"
    );

    let out = shop.ok(&["products"]);
    let sencha = out.lines().find(|l| l.contains("TEA-SENCHA")).unwrap();
    assert!(sencha.contains("498"), "2 of 500 shipped: {sencha}");
}

#[test]
fn cancelling_releases_stock_and_restock_adds_units() {
    let shop = Shop::new();
    let id = shop.place("bob");
    shop.ok(&["add-item", &id, "KETTLE-GOOSE", "2"]);
    let out = shop.ok(&["cancel", &id, "--reason", "found one cheaper"]);
    assert!(out.contains("cancelled: found one cheaper"), "{out}");
    assert!(out.contains("2 released"), "{out}");
    let refused = shop.fails(&["confirm", &id]);
    assert!(refused.contains("the order is cancelled"), "{refused}");

    let out = shop.ok(&["restock", "kettle-goose", "10"]);
    assert!(
        out.contains("10 units received (delivery), 40 on hand"),
        "{out}"
    );
    let refused = shop.fails(&["restock", "NOPE", "10"]);
    assert!(refused.contains("not in the catalogue"), "{refused}");
}

#[test]
fn out_of_stock_items_are_taken_out_again_and_declined_payments_cancel() {
    let shop = Shop::new();
    let bob = shop.place("bob");
    shop.ok(&["add-item", &bob, "POT-LIMITED", "3"]);
    let carol = shop.place("carol");
    let out = shop.ok(&["add-item", &carol, "POT-LIMITED", "1"]);
    assert!(out.contains("cannot reserve 1"), "{out}");
    assert!(out.contains("taken out: out of stock"), "{out}");
    assert!(out.contains("is draft: 0 units, 0.00"), "{out}");

    // 360.00 is above the card limit: the payment cancels the order, the stock comes back.
    let out = shop.ok(&["confirm", &bob]);
    assert!(out.contains("payment declined"), "{out}");
    assert!(out.contains("3 released"), "{out}");
    let out = shop.ok(&["orders", "--status", "cancelled"]);
    assert!(out.contains(&bob), "{out}");
    let out = shop.ok(&["add-item", &carol, "POT-LIMITED", "1"]);
    assert!(out.contains("1 reserved"), "{out}");
}

#[test]
fn invalid_input_is_refused_with_a_clear_message_and_nothing_is_stored() {
    let shop = Shop::new();
    let id = shop.place("alice");
    let before = events_json(&shop.ok(&["events"])).len();

    let e = shop.fails(&["add-item", &id, "TEA-MATCHA", "1"]);
    assert!(e.contains("sku: unknown product \"TEA-MATCHA\""), "{e}");
    let e = shop.fails(&["add-item", &id, "TEA-ASSAM", "0"]);
    assert!(e.contains("quantity: must be between 1 and 99"), "{e}");
    let e = shop.fails(&["add-item", &id, "TEA-ASSAM", "100"]);
    assert!(e.contains("quantity: must be between 1 and 99"), "{e}");
    let e = shop.fails(&["add-item", &id, "POT-CAST", "1", "--price", "99"]);
    assert!(
        e.contains("unit_price: must not exceed the list price"),
        "{e}"
    );
    let e = shop.fails(&["add-item", &id, "POT-CAST", "1", "--price", "-1.00"]);
    assert!(e.contains("unit_price: must be positive"), "{e}");
    // Every problem at once.
    let e = shop.fails(&["add-item", &id, "NOPE", "0"]);
    assert!(e.contains("sku:") && e.contains("quantity:"), "{e}");
    let e = shop.fails(&["place-order", "--customer", "two words"]);
    assert!(e.contains("customer_id: may contain"), "{e}");
    let e = shop.fails(&["remove-item", &id, "TEA-ASSAM"]);
    assert!(e.contains("TEA-ASSAM is not in the order"), "{e}");
    let e = shop.fails(&["confirm", &id]);
    assert!(e.contains("an empty order cannot be confirmed"), "{e}");

    assert_eq!(events_json(&shop.ok(&["events"])).len(), before);

    // Malformed numbers are usage errors (exit code 2), caught before anything runs.
    let out = shop
        .cmd(&["add-item", &id, "TEA-ASSAM", "two"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = shop
        .cmd(&["add-item", &id, "TEA-ASSAM", "1", "--price", "1.234"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_ids_and_missing_databases_are_one_line_errors() {
    let shop = Shop::new();
    let e = shop.fails(&["orders"]);
    assert!(e.contains("does not exist"), "{e}");
    assert!(!shop.db.exists(), "a query must not create the database");

    shop.place("alice");
    let e = shop.fails(&["order", "no-such-order"]);
    assert!(e.contains("no order with id \"no-such-order\""), "{e}");
    let e = shop.fails(&["confirm", "no-such-order"]);
    assert!(e.contains("no order"), "{e}");
    let e = shop.fails(&["customer", "nobody"]);
    assert!(e.contains("no customer with id \"nobody\""), "{e}");
    let e = shop.fails(&["replay", "TEA-NOPE", "--entity", "stock"]);
    assert!(e.contains("unknown product"), "{e}");
    let e = shop.fails(&["events", "--since", "yesterday-ish"]);
    assert!(e.contains("--since"), "{e}");

    let missing_dir = shop.path("no/such/dir/shop.db");
    let e = common::run_fails(
        shop_on(&missing_dir, &["place-order", "--customer", "x"]),
        &["place-order"],
    );
    assert!(e.contains("cannot open database"), "{e}");

    let e = common::run_fails(
        shop_on(&shop.db, &["--database-url", "mysql://h/db", "orders"]),
        &["orders"],
    );
    assert!(e.contains("unsupported database URL"), "{e}");
}

#[test]
fn a_database_locked_by_another_process_is_a_one_line_error() {
    use sqlx::Connection as _;
    let shop = Shop::new();
    shop.place("alice");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = format!("sqlite://{}", shop.db.display());
    let mut other = runtime
        .block_on(sqlx::SqliteConnection::connect(&url))
        .unwrap();
    runtime
        .block_on(sqlx::query("BEGIN EXCLUSIVE").execute(&mut other))
        .unwrap();
    let started = std::time::Instant::now();
    let e = shop.fails(&["--lock-timeout", "1", "place-order", "--customer", "bob"]);
    assert!(
        e.contains("database is locked") && e.contains("--lock-timeout"),
        "{e}"
    );
    assert!(started.elapsed().as_secs() < 20, "gave up in time");
    // Starting the shop catches views up (a write), so queries wait for the lock too.
    let e = shop.fails(&["--lock-timeout", "1", "orders"]);
    assert!(e.contains("database is locked"), "{e}");
    // Once the lock is gone, everything goes through.
    runtime
        .block_on(sqlx::query("ROLLBACK").execute(&mut other))
        .unwrap();
    drop(other);
    shop.place("bob");
    assert!(shop.ok(&["orders"]).contains("bob"));
}

#[test]
fn events_filter_by_stream_type_and_time() {
    let shop = Shop::new();
    let id = shop.place("alice");
    shop.ok(&["add-item", &id, "TEA-ASSAM", "1"]);
    shop.ok(&["confirm", &id]);

    let all = events_json(&shop.ok(&["events"]));
    assert!(all.len() >= 8, "{all:?}");
    let first = &all[0];
    for field in [
        "position",
        "stream",
        "sequence",
        "command_sequence",
        "name",
        "version",
        "message_id",
        "correlation_id",
        "causation_id",
        "timestamp",
        "payload",
    ] {
        assert!(first.get(field).is_some(), "missing {field} in {first}");
    }
    assert_eq!(first["name"], "shop.OrderPlaced");
    assert_eq!(first["payload"]["customer_id"], "alice");

    let order_stream = format!("shop.Order/{id}");
    let order = events_json(&shop.ok(&["events", "--stream", &order_stream]));
    assert!(order.iter().all(|e| e["stream"] == order_stream.as_str()));
    assert_eq!(order.len(), 4, "placed, added, confirmed, paid: {order:?}");
    // A bare id matches every entity type: the order and its payment.
    let by_id = events_json(&shop.ok(&["events", "--stream", &id]));
    assert!(by_id
        .iter()
        .any(|e| e["stream"] == format!("shop.Payment/{id}").as_str()));

    let paid = events_json(&shop.ok(&["events", "--type", "OrderPaid"]));
    assert_eq!(paid.len(), 1);
    let paid = events_json(&shop.ok(&["events", "--type", "shop.OrderPaid"]));
    assert_eq!(paid.len(), 1);

    let recent = events_json(&shop.ok(&["events", "--since", "1h"]));
    assert_eq!(recent.len(), all.len());
    let future = events_json(&shop.ok(&["events", "--since", "2999-01-01"]));
    assert!(future.is_empty());
    let ts = first["timestamp"].as_str().unwrap();
    let since = events_json(&shop.ok(&["events", "--since", ts]));
    assert_eq!(since.len(), all.len());

    let two = events_json(&shop.ok(&["events", "--limit", "2"]));
    assert_eq!(two, all[..2].to_vec());
    let last = events_json(&shop.ok(&["events", "--last", "1"]));
    assert_eq!(last, all[all.len() - 1..].to_vec());
}

#[test]
fn replay_rebuilds_state_from_the_command_log_and_travels_in_time() {
    let shop = Shop::new();
    let id = shop.place("alice");
    shop.ok(&["add-item", &id, "TEA-ASSAM", "2"]);
    shop.ok(&["add-item", &id, "FILTER-100", "1"]);
    shop.ok(&["confirm", &id]);

    let out = shop.ok(&["replay", &id]);
    assert!(out.contains("consistent"), "{out}");
    assert!(out.contains("\"status\": \"paid\""), "{out}");
    assert!(
        out.contains("shop.MarkOrderPaid"),
        "the payment's follow-up is in the log: {out}"
    );

    let out = shop.ok(&["replay", &id, "--at", "2"]);
    assert!(out.contains("state after command 2 of 5"), "{out}");
    assert!(out.contains("\"status\": \"draft\""), "{out}");
    assert!(!out.contains("FILTER-100\","), "not added yet at 2: {out}");
    let e = shop.fails(&["replay", &id, "--at", "9"]);
    assert!(e.contains("outside"), "{e}");

    let out = shop.ok(&["replay", &id, "--entity", "payment"]);
    assert!(out.contains("\"status\": \"authorized\""), "{out}");
    let out = shop.ok(&["replay", "TEA-ASSAM", "--entity", "stock"]);
    assert!(out.contains("\"on_hand\": 498"), "{out}");
}

#[test]
fn rebuilding_views_gives_what_the_live_projection_gave() {
    let shop = Shop::new();
    shop.ok(&["seed", "--orders", "25", "--seed", "11"]);
    let id = shop.place("alice");
    shop.ok(&["add-item", &id, "TEA-ASSAM", "1"]);
    let queries: [&[&str]; 5] = [
        &["orders", "--all"],
        &["order", &id],
        &["customer", "alice"],
        &["products"],
        &["stats"],
    ];
    let before: Vec<String> = queries.iter().map(|q| shop.ok(q)).collect();
    let out = shop.ok(&["rebuild"]);
    for view in [
        "shop.OrderSummaryView",
        "shop.OrderDetailsView",
        "shop.CustomerOrdersView",
        "shop.StockLevelView",
        "shop.ProductSalesView",
    ] {
        assert!(out.contains(&format!("rebuilt {view}")), "{out}");
    }
    let after: Vec<String> = queries.iter().map(|q| shop.ok(q)).collect();
    assert_eq!(before, after);
    for view in ["orders", "details", "customers", "stock", "sales"] {
        let out = shop.ok(&["rebuild", view]);
        assert_eq!(out.lines().count(), 1, "{out}");
    }
}

#[test]
fn seed_is_deterministic() {
    let a = Shop::new();
    let b = Shop::new();
    let out = a.ok(&["seed", "--orders", "30", "--seed", "42"]);
    assert!(
        out.contains("seeded 30 orders") && out.contains("seed 42"),
        "{out}"
    );
    b.ok(&["seed", "--orders", "30", "--seed", "42"]);
    // Same orders, customers, items and outcomes; only the clock differs.
    let strip = |s: String| {
        s.lines()
            .map(|l| match l.find("┆ 20") {
                Some(at) => l[..at].to_owned(),
                None => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip(a.ok(&["orders", "--all"])),
        strip(b.ok(&["orders", "--all"]))
    );
    assert_eq!(a.ok(&["products"]), b.ok(&["products"]));
    // A seed's orders exist already: refused with a hint, not a pile of errors.
    let e = a.fails(&["seed", "--orders", "5", "--seed", "42"]);
    assert!(e.contains("seed 42 was already used"), "{e}");
}

#[test]
fn stats_count_orders_streams_and_view_positions() {
    let shop = Shop::new();
    let id = shop.place("alice");
    shop.ok(&["add-item", &id, "TEA-ASSAM", "1"]);
    shop.ok(&["confirm", &id]);
    let out = shop.ok(&["stats"]);
    for expected in [
        "shop.Order",
        "shop.Payment",
        "shop.Stock",
        "shop.OrderSummaryView",
        "shop.PaymentProcess",
        "customers: 1",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in {out}");
    }
    let paid = out.lines().find(|l| l.contains("│ paid")).unwrap();
    assert!(paid.contains("1") && paid.contains("6.50"), "{paid}");
}

#[test]
fn the_demo_runs_on_its_own_fresh_database_every_time() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = assert_cmd::Command::new(env!("CARGO_BIN_EXE_shop"))
            .arg("demo")
            .current_dir(dir.path())
            .env_remove("SHOP_DATABASE_URL")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for expected in [
            "database: shop-demo.db (fresh)",
            "invalid: shop.AddItem: sku: unknown product",
            "refused: not_draft",
            "taken out: out of stock",
            "payment declined",
            "identical to the live ones",
            "reproduces her events",
        ] {
            assert!(
                stdout.contains(expected),
                "missing {expected:?} in {stdout}"
            );
        }
        // Fresh each time: the same positions in the same places.
        assert!(stdout.contains("#1    Order"), "{stdout}");
    }
    assert!(dir.path().join("shop-demo.db").exists());

    // On a database the user chose, the demo runs only if it is empty.
    let shop = Shop::new();
    shop.place("alice");
    let e = shop.fails(&["demo"]);
    assert!(e.contains("needs an empty database"), "{e}");
}

#[test]
fn the_menu_works_with_piped_stdin() {
    let shop = Shop::new();
    // Place an order, add an item to it (the order id defaults to the one just placed),
    // confirm it, list orders, try something invalid, then quit.
    let script = "1\nalice\n\n2\n\nTEA-SENCHA\n2\n\n4\n\n7\n\n\n2\n\nNOPE\n1\n\n0\n";
    let out = shop.cmd(&[]).write_stdin(script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    for expected in [
        "Place an order",
        "placed for alice",
        "2 x TEA-SENCHA added",
        "is paid",
        "bye",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in {stdout}"
        );
    }
    // The refusal is reported and the menu carries on to the quit.
    assert!(stderr.contains("unknown product"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // End of input quits cleanly too.
    let out = shop.cmd(&[]).write_stdin("7\n").output().unwrap();
    assert!(out.status.success());
}
