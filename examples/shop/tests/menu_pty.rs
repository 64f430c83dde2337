//! The interactive menu driven through a pseudo-terminal, as a person would use it: stdin and
//! stdout are a terminal, so colours and progress bars are on.

#![cfg(unix)]

use std::process::Command;

use rexpect::session::spawn_command;

#[test]
fn a_person_places_fills_and_confirms_an_order_from_the_menu() -> Result<(), rexpect::error::Error>
{
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("shop.db");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shop"));
    cmd.arg("--db")
        .arg(&db)
        .env_remove("SHOP_DATABASE_URL")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm");
    let mut p = spawn_command(cmd, Some(30_000))?;

    p.exp_string("Place an order")?;
    p.exp_string("choose 0-18")?;
    p.send_line("1")?;
    p.exp_string("customer id: ")?;
    p.send_line("alice")?;
    p.exp_string("deliver to: name")?;
    p.send_line("Alice Liddell")?;
    p.exp_string("deliver to: address")?;
    p.send_line("1 Rabbit Hole Lane")?;
    p.exp_string("e-mail")?;
    p.send_line("alice@example.org")?;
    p.exp_string("placed for alice")?;

    p.exp_string("choose 0-18")?;
    p.send_line("2")?;
    // The order just placed is offered as the default.
    p.exp_string("order id [")?;
    p.send_line("")?;
    p.exp_string("product SKU")?;
    p.send_line("TEA-SENCHA")?;
    p.exp_string("quantity [1]: ")?;
    p.send_line("3")?;
    p.exp_string("price per unit")?;
    p.send_line("")?;
    p.exp_string("3 x TEA-SENCHA added at 8.50")?;
    p.exp_string("3 reserved")?;

    // A mistake is reported and the menu carries on.
    p.exp_string("choose 0-18")?;
    p.send_line("2")?;
    p.exp_string("order id [")?;
    p.send_line("")?;
    p.exp_string("product SKU")?;
    p.send_line("TEA-MATCHA")?;
    p.exp_string("quantity [1]: ")?;
    p.send_line("")?;
    p.exp_string("price per unit")?;
    p.send_line("")?;
    p.exp_string("unknown product")?;

    p.exp_string("choose 0-18")?;
    p.send_line("4")?;
    p.exp_string("order id [")?;
    p.send_line("")?;
    p.exp_string("payment of 25.50 authorised")?;

    p.exp_string("choose 0-18")?;
    p.send_line("8")?;
    p.exp_string("order id [")?;
    p.send_line("")?;
    p.exp_string("(alice, paid)")?;
    p.exp_string("deliver to Alice Liddell, 1 Rabbit Hole Lane <alice@example.org>")?;
    p.exp_string("stock: 3 x TEA-SENCHA shipped")?;

    // Forgetting her keeps the order and makes her contact unreadable.
    p.exp_string("choose 0-18")?;
    p.send_line("18")?;
    p.exp_string("customer id: ")?;
    p.send_line("alice")?;
    p.exp_string("customer alice: name, address and e-mail are now unreadable")?;
    p.exp_string("choose 0-18")?;
    p.send_line("8")?;
    p.exp_string("order id [")?;
    p.send_line("")?;
    p.exp_string("[forgotten customer]")?;

    p.exp_string("choose 0-18")?;
    p.send_line("14")?;
    p.exp_string("rebuilt")?;
    p.exp_string("ProductSalesView")?;

    p.exp_string("choose 0-18")?;
    p.send_line("0")?;
    p.exp_string("bye")?;
    p.exp_eof()?;
    Ok(())
}
