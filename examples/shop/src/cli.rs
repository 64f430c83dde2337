//! The command line: subcommands (clap), and the commands and queries they run.
//!
//! Every subcommand opens the database, does one thing and closes it; the interactive menu
//! runs the very same [`run_command`], so both interfaces behave alike.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use shop::domain::{
    format_money, parse_money, AddItem, CancelOrder, ConfirmOrder, Contact, OrderStatus,
    PlaceOrder, RemoveItem, Restock,
};
use shop::queries::{self, OrderFilter};
use sourceflow::personal::Personal;
use sourceflow::store::Store;
use sourceflow::{Builder, EntityId, Position, SourceFlow};

use crate::admin;
use crate::db::{open_flow, open_store, Access, Target};
use crate::output::{bold, describe, dim, good, say, short, table, time, warn, warn_stderr};

/// An event-sourced shop on sourceflow.
///
/// Run without a subcommand for an interactive menu. Data lives in `shop.db` (SQLite) unless
/// `--db`, `--database-url` or `$SHOP_DATABASE_URL` say otherwise.
#[derive(Parser, Debug)]
#[command(name = "shop", version, about, long_about = None)]
#[command(after_help = "Without a command, shop opens an interactive menu.\n\
                        Start with `shop demo`, then `shop --db shop-demo.db orders`.")]
pub struct Cli {
    /// SQLite database file [default: shop.db]
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// Database URL: postgres://user@host/db, sqlite://PATH or a file path
    /// [env: SHOP_DATABASE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// Postgres schema for the shop's tables (created if missing)
    #[arg(long, global = true, value_name = "NAME")]
    pub schema: Option<String>,

    /// How long to wait for a SQLite file another process is writing to
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 5)]
    pub lock_timeout: u64,

    /// What to do (nothing: the interactive menu)
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Open a new, empty order for a customer
    PlaceOrder {
        /// Who orders (letters, digits, - _ . @)
        #[arg(long, short)]
        customer: String,
        /// Use this order id instead of a fresh one
        #[arg(long)]
        id: Option<String>,
        /// Deliver to this name (personal data: stored encrypted, see `forget`)
        #[arg(long)]
        name: Option<String>,
        /// Deliver to this address (personal data)
        #[arg(long)]
        address: Option<String>,
        /// Send updates to this e-mail address (personal data)
        #[arg(long)]
        email: Option<String>,
    },
    /// Forget a customer for good: their name, address and e-mail become unreadable in every
    /// order, view and export (their orders stay)
    Forget {
        /// Customer id
        customer: String,
    },
    /// Add units of a product to a draft order (reserves stock)
    #[command(allow_negative_numbers = true)]
    AddItem {
        /// Order id (or a unique prefix of it)
        order: String,
        /// Product SKU (see `shop products`)
        sku: String,
        /// Units to add
        #[arg(default_value_t = 1)]
        quantity: u32,
        /// Agreed price per unit, e.g. 7.50 (at most the list price)
        #[arg(long, value_parser = parse_money, allow_negative_numbers = true)]
        price: Option<i64>,
    },
    /// Take units of a product out of a draft order (releases stock)
    RemoveItem {
        /// Order id (or a unique prefix of it)
        order: String,
        /// Product SKU
        sku: String,
        /// Units to remove [default: the whole line]
        quantity: Option<u32>,
    },
    /// Confirm a draft order; payment follows at once
    Confirm {
        /// Order id (or a unique prefix of it)
        order: String,
    },
    /// Cancel an order that is not paid (releases its stock)
    Cancel {
        /// Order id (or a unique prefix of it)
        order: String,
        /// Why
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Book a delivery of a product
    Restock {
        /// Product SKU
        sku: String,
        /// Units delivered
        quantity: u32,
    },
    /// List orders, newest first
    Orders {
        /// Only orders in this status (draft, confirmed, paid, cancelled)
        #[arg(long)]
        status: Option<OrderStatus>,
        /// Only orders of this customer
        #[arg(long)]
        customer: Option<String>,
        /// Show at most this many
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Show every order
        #[arg(long)]
        all: bool,
    },
    /// Show one order: lines and history
    Order {
        /// Order id (or a unique prefix of it)
        id: String,
    },
    /// Show a customer's orders
    Customer {
        /// Customer id
        id: String,
    },
    /// The catalogue with stock levels and sales
    Products,
    /// Unpaid orders and when each is cancelled unless paid
    Deadlines,
    /// Raw events from the log, as pretty JSON
    Events {
        /// Only this stream: TYPE/ID (shop.Order/0193...) or an id (every type)
        #[arg(long)]
        stream: Option<String>,
        /// Only events of this type (shop.OrderPlaced or OrderPlaced)
        #[arg(long = "type", value_name = "TYPE")]
        event_type: Option<String>,
        /// Only events since this time: RFC 3339, YYYY-MM-DD, or an age like 30m, 2h, 7d
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Show the first N matching events
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Show the last N matching events
        #[arg(long, value_name = "N", conflicts_with = "limit")]
        last: Option<usize>,
    },
    /// Rebuild an entity's state from its command log and check it against the stored one
    Replay {
        /// Order id (or a unique prefix), or a SKU with --entity stock
        id: String,
        /// Which entity
        #[arg(long, value_enum, default_value_t = EntityKind::Order)]
        entity: EntityKind,
        /// Show the state after this command sequence instead (time travel; nothing saved)
        #[arg(long, value_name = "SEQUENCE")]
        at: Option<u64>,
    },
    /// Drop views and rebuild them from the event log
    Rebuild {
        /// Which view [default: all]
        #[arg(value_enum)]
        view: Option<ViewName>,
    },
    /// Write the command and event logs to a JSON Lines file
    Export {
        /// File to write
        file: PathBuf,
    },
    /// Load a JSON Lines export into an empty database, then build the views
    Import {
        /// File to read
        file: PathBuf,
    },
    /// Generate sample orders
    Seed {
        /// How many orders
        #[arg(long, default_value_t = 100)]
        orders: usize,
        /// Seed for the generator (same seed, same orders) [default: random]
        #[arg(long)]
        seed: Option<u64>,
        /// Orders in flight at once: faster, but with more than 1 who gets the last units of
        /// a scarce product may vary between runs
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        jobs: u16,
    },
    /// Counts, streams and how far each view and reaction has got
    Stats,
    /// Run a scripted scenario end to end on a fresh database and explain what happens
    Demo,
}

/// The entity types `replay` can rebuild.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntityKind {
    /// An order (`shop.Order`).
    Order,
    /// An order's payment (`shop.Payment`, same id as the order).
    Payment,
    /// A product's stock (`shop.Stock`, id = SKU).
    Stock,
}

/// The views `rebuild` can rebuild.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewName {
    /// Every view.
    All,
    /// Order summaries (listings).
    Orders,
    /// Order details (lines and history).
    Details,
    /// Orders by customer.
    Customers,
    /// Stock levels.
    Stock,
    /// Product sales.
    Sales,
    /// Unpaid orders and their payment deadlines.
    Deadlines,
}

/// Where the commands of one invocation (or one menu session) go.
#[derive(Clone, Debug)]
pub struct Session {
    /// The database.
    pub target: Target,
    /// Whether the user chose it (`demo` then uses it instead of its own file).
    pub chosen: bool,
    /// How long to wait for a locked SQLite file.
    pub lock_timeout: Duration,
}

impl Session {
    /// The session the flags describe.
    ///
    /// # Errors
    /// An unsupported database URL.
    pub fn from_cli(cli: &Cli) -> anyhow::Result<Self> {
        Ok(Self {
            target: Target::resolve(
                cli.db.as_deref(),
                cli.database_url.as_deref(),
                cli.schema.as_deref(),
            )?,
            chosen: cli.db.is_some()
                || cli.database_url.is_some()
                || std::env::var_os(crate::db::DATABASE_URL_ENV).is_some(),
            lock_timeout: Duration::from_secs(cli.lock_timeout),
        })
    }

    /// Opens the flow with every component, in the foreground.
    ///
    /// # Errors
    /// As [`open_flow`].
    pub async fn flow(&self, access: Access) -> anyhow::Result<SourceFlow> {
        self.flow_with(access, SourceFlow::builder()).await
    }

    /// Opens the flow from a configured builder.
    ///
    /// # Errors
    /// As [`open_flow`].
    pub async fn flow_with(&self, access: Access, builder: Builder) -> anyhow::Result<SourceFlow> {
        open_flow(&self.target, access, self.lock_timeout, builder).await
    }

    /// Opens the store alone (export and import work below the flow).
    ///
    /// # Errors
    /// As [`open_store`].
    pub async fn store(&self, access: Access) -> anyhow::Result<Arc<dyn Store>> {
        open_store(&self.target, access, self.lock_timeout).await
    }
}

/// Runs the program: the menu without a subcommand, the subcommand otherwise.
///
/// # Errors
/// Whatever the command failed with, for `main` to print as one line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let session = Session::from_cli(&cli)?;
    match cli.command {
        None => crate::menu::run(&session).await,
        Some(command) => run_command(&session, command).await.map(drop),
    }
}

/// Runs one command; returns the order it concerned, if any (the menu offers it next time).
///
/// # Errors
/// Refusals, invalid input, unknown ids and store faults, as one readable chain.
pub async fn run_command(session: &Session, command: Command) -> anyhow::Result<Option<EntityId>> {
    match command {
        Command::PlaceOrder {
            customer,
            id,
            name,
            address,
            email,
        } => {
            let contact = [&name, &address, &email]
                .iter()
                .any(|field| field.is_some())
                .then(|| {
                    let field = |f: &Option<String>| f.as_deref().unwrap_or("").trim().to_owned();
                    Contact::of(
                        customer.trim(),
                        &field(&name),
                        &field(&address),
                        &field(&email),
                    )
                });
            place_order(session, customer, id, contact).await.map(Some)
        }
        Command::Forget { customer } => {
            admin::forget(session, &customer).await?;
            Ok(None)
        }
        Command::AddItem {
            order,
            sku,
            quantity,
            price,
        } => {
            let flow = session.flow(Access::Existing).await?;
            let id = queries::resolve_order(&flow, &order).await?;
            let sku = sku.trim().to_uppercase();
            let what = format!("add {quantity} x {sku} to order {}", short(id.as_str()));
            let command = AddItem {
                sku,
                quantity,
                unit_price: price,
            };
            send_and_show(&flow, &id, command, &what).await?;
            Ok(Some(id))
        }
        Command::RemoveItem {
            order,
            sku,
            quantity,
        } => {
            let flow = session.flow(Access::Existing).await?;
            let id = queries::resolve_order(&flow, &order).await?;
            let sku = sku.trim().to_uppercase();
            let what = format!("remove {sku} from order {}", short(id.as_str()));
            send_and_show(&flow, &id, RemoveItem { sku, quantity }, &what).await?;
            Ok(Some(id))
        }
        Command::Confirm { order } => {
            let flow = session.flow(Access::Existing).await?;
            let id = queries::resolve_order(&flow, &order).await?;
            let what = format!("confirm order {}", short(id.as_str()));
            send_and_show(&flow, &id, ConfirmOrder, &what).await?;
            Ok(Some(id))
        }
        Command::Cancel { order, reason } => {
            let flow = session.flow(Access::Existing).await?;
            let id = queries::resolve_order(&flow, &order).await?;
            let what = format!("cancel order {}", short(id.as_str()));
            send_and_show(&flow, &id, CancelOrder { reason }, &what).await?;
            Ok(Some(id))
        }
        Command::Restock { sku, quantity } => {
            let flow = session.flow(Access::Create).await?;
            let sku = sku.trim().to_uppercase();
            let id = EntityId::from(sku.as_str());
            let what = format!("restock {sku}");
            send_and_show(&flow, &id, Restock { quantity }, &what).await?;
            Ok(None)
        }
        Command::Orders {
            status,
            customer,
            limit,
            all,
        } => {
            let flow = session.flow(Access::Existing).await?;
            let filter = OrderFilter {
                status,
                customer_id: customer,
            };
            let limit = if all { usize::MAX } else { limit };
            print_orders(&flow, &filter, limit).await?;
            Ok(None)
        }
        Command::Order { id } => {
            let flow = session.flow(Access::Existing).await?;
            Ok(Some(print_order(&flow, &id).await?))
        }
        Command::Customer { id } => {
            let flow = session.flow(Access::Existing).await?;
            print_customer(&flow, &id).await?;
            Ok(None)
        }
        Command::Products => {
            let flow = session.flow(Access::Existing).await?;
            print_products(&flow).await?;
            Ok(None)
        }
        Command::Deadlines => {
            let flow = session.flow(Access::Existing).await?;
            print_deadlines(&flow).await?;
            Ok(None)
        }
        Command::Events {
            stream,
            event_type,
            since,
            limit,
            last,
        } => {
            let flow = session.flow(Access::Existing).await?;
            let filter =
                admin::EventFilter::new(stream, event_type, since.as_deref(), limit, last)?;
            admin::events(&flow, &filter).await?;
            Ok(None)
        }
        Command::Replay { id, entity, at } => admin::replay(session, &id, entity, at).await,
        Command::Rebuild { view } => {
            admin::rebuild(session, view.unwrap_or(ViewName::All)).await?;
            Ok(None)
        }
        Command::Export { file } => {
            admin::export(session, &file).await?;
            Ok(None)
        }
        Command::Import { file } => {
            admin::import(session, &file).await?;
            Ok(None)
        }
        Command::Seed { orders, seed, jobs } => {
            admin::seed(session, orders, seed, jobs.into()).await?;
            Ok(None)
        }
        Command::Stats => {
            admin::stats(session).await?;
            Ok(None)
        }
        Command::Demo => {
            crate::demo::run(session).await?;
            Ok(None)
        }
    }
}

async fn place_order(
    session: &Session,
    customer: String,
    id: Option<String>,
    contact: Option<Personal<Contact>>,
) -> anyhow::Result<EntityId> {
    let flow = session.flow(Access::Create).await?;
    let id = match id {
        Some(id) if !id.trim().is_empty() => EntityId::from(id.trim()),
        _ => EntityId::new(),
    };
    let customer = customer.trim().to_owned();
    let receipt = flow
        .send(
            &id,
            PlaceOrder {
                customer_id: customer.clone(),
                contact,
            },
        )
        .await
        .with_context(|| format!("cannot place an order for {customer:?}"))?;
    // The first line is meant for scripts: `order <id> placed for <customer>`.
    say!("order {id} placed for {customer}");
    say!(
        "{}",
        dim(&format!(
            "  command #{} in {}",
            receipt.sequence, receipt.stream
        ))
    );
    Ok(id)
}

/// Sends a command, then prints every event it led to (its own and those of the follow-up
/// commands it caused, found by its correlation id) and where the order stands.
async fn send_and_show<C: sourceflow::Command>(
    flow: &SourceFlow,
    id: &EntityId,
    command: C,
    what: &str,
) -> anyhow::Result<()> {
    let before = flow.store().head().await?;
    let receipt = flow
        .send(id, command)
        .await
        .with_context(|| format!("cannot {what}"))?;
    say!("{}", good(&format!("ok: {what}")));
    for event in caused_events(flow, before, receipt.message_id).await? {
        let line = format!("  #{:<6} {}", event.position, describe(&event));
        let bad = matches!(
            &*event.envelope.name,
            "shop.ItemRejected" | "shop.PaymentDeclined" | "shop.StockReservationFailed"
        );
        say!("{}", if bad { warn(&line) } else { line });
    }
    if receipt.stream.entity_type == <shop::domain::Order as sourceflow::Entity>::NAME {
        if let Some(summary) = flow.view_model::<shop::views::OrderSummary>(id).await? {
            say!(
                "{}",
                bold(&format!(
                    "order {} is {}: {} units, {}",
                    short(id.as_str()),
                    summary.status,
                    summary.units,
                    format_money(summary.total)
                ))
            );
        }
    }
    Ok(())
}

/// Events after `after` that belong to the chain started by the command `correlation`.
pub async fn caused_events(
    flow: &SourceFlow,
    after: Position,
    correlation: uuid::Uuid,
) -> anyhow::Result<Vec<sourceflow::RecordedEvent>> {
    let mut found = Vec::new();
    let mut position = after;
    loop {
        let batch = flow.store().read_all(position, 500).await?;
        let Some(last) = batch.last() else { break };
        position = last.position;
        found.extend(
            batch
                .into_iter()
                .filter(|e| e.envelope.correlation_id == correlation),
        );
    }
    Ok(found)
}

/// Prints the orders matching `filter`, at most `limit`.
pub async fn print_orders(
    flow: &SourceFlow,
    filter: &OrderFilter,
    limit: usize,
) -> anyhow::Result<()> {
    let rows = queries::orders(flow, filter).await?;
    if rows.is_empty() {
        say!("no orders");
        return Ok(());
    }
    let mut t = table(
        &[
            "Order",
            "Customer",
            "Status",
            "Units",
            "Total",
            "Placed (UTC)",
            "Note",
        ],
        &[3, 4],
    );
    for (id, s) in rows.iter().take(limit) {
        t.add_row(vec![
            id.to_string(),
            s.customer_id.clone(),
            s.status.to_string(),
            s.units.to_string(),
            format_money(s.total),
            s.placed_at.as_ref().map(time).unwrap_or_default(),
            clip(&s.note, 40),
        ]);
    }
    say!("{t}");
    if rows.len() > limit {
        say!(
            "{}",
            dim(&format!(
                "showing {limit} of {} orders; --all shows every one",
                rows.len()
            ))
        );
    }
    Ok(())
}

/// At most `max` characters of `text`, with an ellipsis when cut (keeps tables narrow; `order`
/// shows the whole text).
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Prints one order; returns its full id.
pub async fn print_order(flow: &SourceFlow, id: &str) -> anyhow::Result<EntityId> {
    let view = queries::order(flow, id).await?;
    let s = &view.summary;
    say!(
        "{}",
        bold(&format!(
            "order {} ({}, {})",
            view.id, s.customer_id, s.status
        ))
    );
    if let Some(placed) = &s.placed_at {
        say!(
            "placed {} UTC, total {}",
            time(placed),
            format_money(s.total)
        );
    }
    if let Some(contact) = &view.details.contact {
        match contact.get() {
            Some(c) => say!("deliver to {}, {} <{}>", c.name, c.address, c.email),
            None => say!("deliver to {}", dim("[forgotten customer]")),
        }
    }
    if view.details.lines.is_empty() {
        say!("no items");
    } else {
        let mut t = table(&["SKU", "Product", "Qty", "Price", "Total"], &[2, 3, 4]);
        for line in &view.details.lines {
            t.add_row(vec![
                line.sku.clone(),
                line.name.clone(),
                line.quantity.to_string(),
                format_money(line.unit_price),
                format_money(line.total()),
            ]);
        }
        say!("{t}");
    }
    say!("{}", bold("history"));
    for entry in &view.details.history {
        say!(
            "  {} {} {}",
            dim(&time(&entry.at)),
            dim(&format!("#{:<6}", entry.position)),
            entry.what
        );
    }
    Ok(view.id)
}

/// Prints a customer's orders.
pub async fn print_customer(flow: &SourceFlow, id: &str) -> anyhow::Result<()> {
    let c = queries::customer(flow, id).await?;
    say!(
        "{}",
        bold(&format!(
            "customer {}: orders {}, paid {}",
            c.customer_id,
            c.orders.len(),
            format_money(c.total_paid)
        ))
    );
    let mut t = table(&["Order", "Status", "Total", "Placed (UTC)"], &[2]);
    for o in &c.orders {
        t.add_row(vec![
            o.order_id.clone(),
            o.status.to_string(),
            o.total.map(format_money).unwrap_or_else(|| "-".to_owned()),
            time(&o.placed_at),
        ]);
    }
    say!("{t}");
    Ok(())
}

/// Prints the unpaid orders, soonest deadline first.
pub async fn print_deadlines(flow: &SourceFlow) -> anyhow::Result<()> {
    let deadlines = queries::payment_deadlines(flow).await?;
    if deadlines.is_empty() {
        say!("{}", dim("no unpaid orders"));
        return Ok(());
    }
    let mut t = table(&["Order", "Customer", "Cancelled unless paid by"], &[]);
    for (id, deadline) in deadlines {
        let pay_by = deadline.pay_by.as_ref().map(time).unwrap_or_default();
        t.add_row(vec![short(id.as_str()), &deadline.customer_id, &pay_by]);
    }
    say!("{t}");
    Ok(())
}

/// Prints the catalogue with stock and sales.
pub async fn print_products(flow: &SourceFlow) -> anyhow::Result<()> {
    let mut t = table(
        &[
            "SKU",
            "Product",
            "Price",
            "On hand",
            "Free",
            "Shipped",
            "Shortages",
            "Sold",
            "Revenue",
        ],
        &[2, 3, 4, 5, 6, 7, 8],
    );
    for row in queries::products(flow).await? {
        let p = row.product;
        let (on_hand, free, shipped, shortages) = match &row.stock {
            Some(s) => (s.on_hand, s.available, s.shipped, s.shortages),
            // Nothing touched the product yet: its opening stock is booked on first use.
            None => (p.opening_stock, p.opening_stock, 0, 0),
        };
        t.add_row(vec![
            p.sku.to_owned(),
            p.name.to_owned(),
            format_money(p.price),
            on_hand.to_string(),
            free.to_string(),
            shipped.to_string(),
            shortages.to_string(),
            row.sales.units.to_string(),
            format_money(row.sales.revenue),
        ]);
    }
    say!("{t}");
    Ok(())
}

/// Prints an error the way `main` does, for the menu (which carries on afterwards).
pub fn print_error(e: &anyhow::Error) {
    eprintln!("{}", warn_stderr(&format!("error: {}", one_line(e))));
}

/// An error chain on one line: causes joined with `: `, newlines folded. A cause whose text
/// its parent already ends with is not repeated (some errors print their source themselves).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if parts.last().is_some_and(|last| last.ends_with(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts
        .join(": ")
        .split('\n')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn errors_fit_on_one_line() {
        let e = anyhow::anyhow!("first\n  - second").context("outer");
        assert_eq!(one_line(&e), "outer: first; - second");
        let refused = sourceflow::Error::Rejected(sourceflow::DomainError::rejected("no"));
        let e = anyhow::Error::new(refused).context("cannot confirm");
        assert_eq!(one_line(&e), "cannot confirm: command rejected: no");
    }
}
