//! Forgetting a customer: their name, address and e-mail are stored encrypted, readable in
//! orders and exports until `shop forget`, and unreadable everywhere after it (the database
//! file, `order`, an export, a database imported from that export), while their orders stay.

mod common;

use common::{order_id, Shop};

const SECRETS: [&str; 3] = ["Carol Kingsley", "4 Privet Drive", "carol@example.net"];

fn file_holds(path: &std::path::Path, text: &str) -> bool {
    let mut bytes = std::fs::read(path).unwrap_or_default();
    bytes.extend(std::fs::read(path.with_extension("db-wal")).unwrap_or_default());
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

#[test]
fn a_forgotten_customer_is_unreadable_everywhere_and_their_orders_stay() {
    let shop = Shop::new();
    let out = shop.ok(&[
        "place-order",
        "--customer",
        "carol",
        "--name",
        SECRETS[0],
        "--address",
        SECRETS[1],
        "--email",
        SECRETS[2],
    ]);
    let carol = order_id(&out);
    shop.ok(&["add-item", &carol, "TEA-SENCHA", "2"]);
    let bob = order_id(&shop.ok(&[
        "place-order",
        "--customer",
        "bob",
        "--name",
        "Bob Stone",
        "--address",
        "9 Elm Row",
        "--email",
        "bob@example.net",
    ]));

    // Readable where the shop shows it, never in the database file.
    let out = shop.ok(&["order", &carol]);
    assert!(
        out.contains("deliver to Carol Kingsley, 4 Privet Drive <carol@example.net>"),
        "{out}"
    );
    for secret in SECRETS {
        assert!(
            !file_holds(&shop.db, secret),
            "the database holds {secret:?}"
        );
    }
    let before = shop.path("before.jsonl");
    shop.ok(&["export", before.to_str().unwrap()]);
    let exported = std::fs::read_to_string(&before).unwrap();
    assert!(exported.contains("Carol Kingsley"), "exports are readable");

    let out = shop.ok(&["forget", "carol"]);
    assert!(out.contains("forgot customer carol"), "{out}");
    assert!(out.contains("1 orders kept"), "{out}");

    let out = shop.ok(&["order", &carol]);
    assert!(out.contains("deliver to [forgotten customer]"), "{out}");
    assert!(out.contains("TEA-SENCHA"), "the order stays: {out}");
    let out = shop.ok(&["order", &bob]);
    assert!(out.contains("deliver to Bob Stone, 9 Elm Row"), "{out}");
    let out = shop.ok(&["replay", &carol]);
    assert!(out.contains("consistent"), "replay still works: {out}");
    shop.ok(&["rebuild"]);
    let out = shop.ok(&["order", &carol]);
    assert!(out.contains("deliver to [forgotten customer]"), "{out}");

    let after = shop.path("after.jsonl");
    shop.ok(&["export", after.to_str().unwrap()]);
    let exported = std::fs::read_to_string(&after).unwrap();
    for secret in SECRETS {
        assert!(!exported.contains(secret), "the export holds {secret:?}");
        assert!(
            !file_holds(&shop.db, secret),
            "the database holds {secret:?}"
        );
    }
    assert!(exported.contains("Bob Stone"), "others stay readable");

    // The export imports into a fresh database: Bob readable, Carol redacted, no plaintext.
    let copy = Shop::new();
    copy.ok(&["import", after.to_str().unwrap()]);
    let out = copy.ok(&["order", &carol]);
    assert!(out.contains("deliver to [forgotten customer]"), "{out}");
    let out = copy.ok(&["order", &bob]);
    assert!(out.contains("deliver to Bob Stone, 9 Elm Row"), "{out}");
    assert!(
        !file_holds(&copy.db, "Bob Stone"),
        "the copy seals it with its own keys"
    );
}
