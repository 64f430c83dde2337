//! Bulk data: `seed` then `rebuild`, and the rebuilt views equal the live ones.
//!
//! 10,000 orders with a release build (`cargo test --release -p shop --test seed_rebuild`).
//! A debug build runs a few hundred: seeding costs tens of milliseconds per order unoptimised,
//! so 10,000 would take minutes. `SHOP_SEED_TEST_ORDERS` overrides the count.

mod common;

use std::time::Instant;

use common::Shop;

fn orders_to_seed() -> usize {
    std::env::var("SHOP_SEED_TEST_ORDERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 300 } else { 10_000 })
}

#[test]
fn seeded_views_survive_a_rebuild_unchanged() {
    let shop = Shop::new();
    let n = orders_to_seed();
    let started = Instant::now();
    let out = shop.ok(&["seed", "--orders", &n.to_string(), "--seed", "2024"]);
    assert!(out.contains(&format!("seeded {}", with_commas(n))), "{out}");
    eprintln!(
        "seed --orders {n}: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // What the live projection produced: every order, a sample of order details and customers,
    // the stock and sales of every product.
    let orders = shop.ok(&["orders", "--all"]);
    let ids: Vec<String> = orders
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|w| w.len() == 36)
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), n, "every order is listed");
    let sample: Vec<&String> = ids.iter().step_by((n / 25).max(1)).collect();
    let mut customers: Vec<String> = orders
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|w| w.len() == 36))
        .filter_map(|l| l.split_whitespace().nth(3))
        .map(str::to_owned)
        .collect();
    customers.sort();
    customers.dedup();
    let customers: Vec<&String> = customers.iter().step_by(7).collect();
    let snapshot = |shop: &Shop| {
        let mut views = vec![shop.ok(&["orders", "--all"]), shop.ok(&["products"])];
        for id in &sample {
            views.push(shop.ok(&["order", id]));
        }
        for customer in &customers {
            views.push(shop.ok(&["customer", customer]));
        }
        views
    };
    let live = snapshot(&shop);

    let started = Instant::now();
    let out = shop.ok(&["rebuild"]);
    eprintln!("rebuild: {:.1} s\n{out}", started.elapsed().as_secs_f64());
    let rebuilt = snapshot(&shop);
    for (live, rebuilt) in live.iter().zip(&rebuilt) {
        assert_eq!(live, rebuilt);
    }
}

fn with_commas(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
