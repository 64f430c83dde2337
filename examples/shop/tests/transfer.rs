//! Export to JSON Lines and import into a fresh database: an exact round trip, and refusals
//! that leave nothing half-imported.

mod common;

use common::{events_json, Shop};

/// A small shop with every kind of history: paid, declined, cancelled, rejected, draft.
fn populated() -> Shop {
    let shop = Shop::new();
    shop.ok(&["seed", "--orders", "20", "--seed", "5"]);
    let bob = shop.place("bob");
    shop.ok(&["add-item", &bob, "POT-LIMITED", "3"]);
    let carol = shop.place("carol");
    shop.ok(&["add-item", &carol, "POT-LIMITED", "1"]);
    shop.ok(&["confirm", &bob]);
    shop.ok(&["restock", "MUG-STONE", "5"]);
    shop
}

#[test]
fn export_then_import_into_a_fresh_file_is_identical() {
    let source = populated();
    let file = source.path("shop.jsonl");
    let file = file.to_str().unwrap();
    let out = source.ok(&["export", file]);
    assert!(out.contains("exported"), "{out}");
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.starts_with("{\"kind\":\"header\",\"format\":\"sourceflow-export\""));

    let target = Shop::new();
    let out = target.ok(&["import", file]);
    assert!(
        out.contains("imported") && out.contains("views rebuilt"),
        "{out}"
    );
    assert!(
        !out.contains("new positions"),
        "a SQLite log has no gaps: {out}"
    );

    for query in [
        &["orders", "--all"][..],
        &["events"],
        &["products"],
        &["customer", "bob"],
        &["customer", "alice"],
    ] {
        assert_eq!(source.ok(query), target.ok(query), "shop {query:?} differs");
    }
    // The whole event log, every envelope field included, is identical.
    let a = events_json(&source.ok(&["events"]));
    let b = events_json(&target.ok(&["events"]));
    assert_eq!(a, b);
    assert!(a.len() > 100);

    // Exporting the copy gives the same lines (but for the header's export time).
    let again = target.path("again.jsonl");
    target.ok(&["export", again.to_str().unwrap()]);
    let again = std::fs::read_to_string(&again).unwrap();
    assert_eq!(
        text.lines().skip(1).collect::<Vec<_>>(),
        again.lines().skip(1).collect::<Vec<_>>()
    );

    // The copy is a working shop: entities replay from the imported log on first use, and
    // the reactions continue from where the source stopped (no duplicates, no misses).
    let drafts = target.ok(&["orders", "--status", "draft", "--all"]);
    let draft = drafts
        .lines()
        .nth(3)
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("a draft order");
    let out = target.ok(&["add-item", draft, "TEA-ASSAM", "1"]);
    assert!(out.contains("reserved"), "{out}");
    let out = target.ok(&["confirm", draft]);
    assert!(out.contains("confirmed"), "{out}");
    // Every view and reaction is at the head: none is behind.
    let out = target.ok(&["stats"]);
    let behind: Vec<&str> = out
        .lines()
        .filter(|l| {
            l.contains("│ shop.")
                && (l.contains("View ") || l.contains("Process ") || l.contains("Reservations "))
        })
        .filter(|l| !l.trim_end_matches(['│', ' ']).ends_with(" 0"))
        .collect();
    assert!(behind.is_empty(), "{behind:?} in {out}");
}

#[test]
fn import_refuses_a_non_empty_target_and_bad_files_and_writes_nothing() {
    let source = populated();
    let file = source.path("shop.jsonl");
    source.ok(&["export", file.to_str().unwrap()]);
    let text = std::fs::read_to_string(&file).unwrap();

    // Into a database that has data: refused, and that data is untouched.
    let busy = Shop::new();
    busy.place("zoe");
    let before = busy.ok(&["events"]);
    let e = busy.fails(&["import", file.to_str().unwrap()]);
    assert!(e.contains("not empty"), "{e}");
    assert_eq!(busy.ok(&["events"]), before);

    let lines: Vec<&str> = text.lines().collect();
    let second_command = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("\"kind\":\"command\""))
        .nth(1)
        .map(|(i, _)| i)
        .unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("missing", String::new(), "cannot read"),
        ("empty", "\n".to_owned(), "the file is empty"),
        ("not-json", "hello\n".to_owned(), "line 1"),
        (
            "truncated",
            lines[..lines.len() / 2].join("\n"),
            "truncated",
        ),
        (
            "gap",
            // Drop the second command (and keep the rest): its events lose their command.
            lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != second_command)
                .map(|(_, l)| *l)
                .collect::<Vec<_>>()
                .join("\n"),
            "must follow that command",
        ),
        (
            "unknown-name",
            text.replacen("shop.AddItem", "shop.AddThing", 1),
            "unknown command \"shop.AddThing\"",
        ),
        (
            "bad-payload",
            text.replacen("\"customer_id\":", "\"customer\":", 1),
            "does not match its type",
        ),
        (
            "second-header",
            format!("{}\n{}", lines[0], text),
            "a second header",
        ),
    ];
    for (name, content, expected) in cases {
        let path = source.path(&format!("{name}.jsonl"));
        if name != "missing" {
            std::fs::write(&path, content).unwrap();
        }
        let target = Shop::new();
        let e = target.fails(&["import", path.to_str().unwrap()]);
        assert!(e.contains(expected), "{name}: expected {expected:?} in {e}");
        // The file is checked before the database is even created.
        assert!(!target.db.exists(), "{name}: nothing may be written");
    }
}

/// An export written by an earlier release of the shop (`tests/fixtures/export-v1.jsonl`:
/// `shop.OrderPlaced` at version 1, without a currency, and the command `shop.RejectItem`,
/// since renamed `shop.RejectLine`) imports into this release: its rows are kept as written,
/// and read as today's types everywhere.
#[test]
fn an_export_made_by_an_earlier_release_imports_and_reads_as_today() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/export-v1.jsonl"
    );
    let shop = Shop::new();
    let out = shop.ok(&["import", fixture]);
    assert!(out.contains("imported 44 commands and 51 events"), "{out}");

    // Version 1 orders read with the currency version 2 added.
    let bob = "01a248eb-0205-7072-8664-063b33c10e6e";
    let out = shop.ok(&["order", bob]);
    assert!(out.contains("placed by bob in EUR"), "{out}");
    // `shop events` shows the log as stored: version 1, no currency.
    let events = shop.ok(&["events", "--type", "OrderPlaced"]);
    assert!(events.contains("\"version\": 1"), "{events}");

    // The order whose line stock rejected (under the command's old name) replays: its line is
    // gone, and it takes new commands.
    let carol = "01a248eb-026c-72bd-bcd8-506ebd2b9a78";
    let out = shop.ok(&["order", carol]);
    assert!(out.contains("out of stock"), "{out}");
    let out = shop.ok(&["add-item", carol, "TEA-ASSAM", "1"]);
    assert!(out.contains("reserved"), "{out}");

    // Exported again, the old rows come out exactly as they went in.
    let again = shop.path("again.jsonl");
    shop.ok(&["export", again.to_str().unwrap()]);
    let again = std::fs::read_to_string(&again).unwrap();
    let original = std::fs::read_to_string(fixture).unwrap();
    let original: Vec<&str> = original.lines().skip(1).collect();
    assert_eq!(
        again
            .lines()
            .skip(1)
            .take(original.len())
            .collect::<Vec<_>>(),
        original
    );
}
