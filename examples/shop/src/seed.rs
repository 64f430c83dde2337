//! A sample data generator: realistic order traffic through the real commands.
//!
//! Deterministic for a given seed: the same seed produces the same order ids, customers, items
//! and outcomes (timestamps and message ids are of the moment) when orders are sent one after
//! the other, so stock runs out at the same points every time. Several at a time is faster;
//! the traffic is the same, but who gets the last units of a scarce product may differ.

use std::fmt;

use sourceflow::personal::Personal;
use sourceflow::{EntityId, Error, SourceFlow};
use uuid::Uuid;

use crate::domain::{
    AddItem, CancelOrder, ConfirmOrder, Contact, PlaceOrder, RemoveItem, Restock, CATALOGUE,
};

/// First names customers are made from (`alice`, `alice-2`, ...).
const NAMES: [&str; 20] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yvonne",
];

/// Every this many orders a delivery restocks every product.
const RESTOCK_EVERY: usize = 200;
/// Units of each product a delivery brings.
const RESTOCK_UNITS: u32 = 150;

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedOptions {
    /// Orders to place.
    pub orders: usize,
    /// Seed of the generator.
    pub seed: u64,
}

/// What the generator did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// Orders placed.
    pub orders: usize,
    /// Orders confirmed (then paid, or cancelled by a declined payment).
    pub confirmed: usize,
    /// Orders cancelled by their customer.
    pub cancelled: usize,
    /// Orders left as drafts.
    pub drafts: usize,
    /// Commands sent by the generator (follow-ups come on top).
    pub commands: usize,
}

/// Why generating stopped.
#[derive(Debug)]
pub enum SeedError {
    /// An order id the generator derives already exists: this seed was used on this database.
    SeedUsed {
        /// The seed.
        seed: u64,
    },
    /// A command failed for another reason.
    Flow(Error),
}

impl fmt::Display for SeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeedError::SeedUsed { seed } => write!(
                f,
                "seed {seed} was already used on this database (its orders exist); pick another --seed"
            ),
            SeedError::Flow(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SeedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SeedError::Flow(e) => Some(e),
            SeedError::SeedUsed { .. } => None,
        }
    }
}

impl From<Error> for SeedError {
    fn from(value: Error) -> Self {
        SeedError::Flow(value)
    }
}

/// One order as the generator plans it, before anything is sent.
#[derive(Clone, Debug)]
struct OrderPlan {
    id: EntityId,
    customer_id: String,
    items: Vec<AddItem>,
    remove: Option<RemoveItem>,
    ending: Ending,
}

#[derive(Clone, Copy, Debug)]
enum Ending {
    Confirm,
    Cancel,
    Draft,
}

/// A step of the generated traffic.
#[derive(Clone, Debug)]
enum Step {
    /// A delivery of every everyday product.
    Delivery,
    /// One customer's order.
    Order(OrderPlan),
}

/// The whole traffic, drawn from the seed up front so that running it concurrently does not
/// change what is generated.
fn plan(options: SeedOptions) -> Vec<Step> {
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let customers = (options.orders / 5).clamp(NAMES.len(), 2_000);
    // Products people buy every day; the limited edition only now and then.
    let everyday: Vec<&str> = CATALOGUE
        .iter()
        .filter(|p| p.opening_stock >= 10)
        .map(|p| p.sku)
        .collect();
    let mut steps = Vec::with_capacity(options.orders + options.orders / RESTOCK_EVERY);
    for n in 0..options.orders {
        if n > 0 && n % RESTOCK_EVERY == 0 {
            steps.push(Step::Delivery);
        }
        let id = EntityId::from(Uuid::from_bytes(random_uuid_bytes(&mut rng)));
        let k = rng.usize(..customers);
        let customer_id = match k / NAMES.len() {
            0 => NAMES[k].to_owned(),
            round => format!("{}-{}", NAMES[k % NAMES.len()], round + 1),
        };
        let lines = 1 + rng.usize(..4);
        let mut skus: Vec<&str> = Vec::with_capacity(lines);
        while skus.len() < lines {
            let sku = if rng.u8(..100) < 2 {
                "POT-LIMITED"
            } else {
                everyday[rng.usize(..everyday.len())]
            };
            if !skus.contains(&sku) {
                skus.push(sku);
            }
        }
        let items = skus
            .iter()
            .map(|sku| {
                // One line in ten at a promotional price: 10% off the list price.
                let unit_price = (rng.u8(..10) == 0).then(|| {
                    let list = crate::domain::product(sku).map_or(100, |p| p.price);
                    list - list / 10
                });
                AddItem {
                    sku: (*sku).to_owned(),
                    quantity: 1 + rng.u32(..3),
                    unit_price,
                }
            })
            .collect();
        let remove = (rng.u8(..10) == 0).then(|| RemoveItem {
            sku: skus[rng.usize(..skus.len())].to_owned(),
            quantity: rng.bool().then_some(1),
        });
        let ending = match rng.u8(..100) {
            0..=69 => Ending::Confirm,
            70..=81 => Ending::Cancel,
            _ => Ending::Draft,
        };
        steps.push(Step::Order(OrderPlan {
            id,
            customer_id,
            items,
            remove,
            ending,
        }));
    }
    steps
}

/// Places `options.orders` orders, at most `jobs` at a time, calling `progress` with the number
/// done after each.
///
/// With `jobs = 1` everything is deterministic. With more, the same orders are generated but
/// their commands interleave, so when a product runs short, which order gets the last units
/// may differ from run to run.
///
/// # Errors
/// [`SeedError::SeedUsed`] if the seed's orders exist already; [`SeedError::Flow`] if a
/// command fails for a reason the generator does not expect (a store fault).
pub async fn seed(
    flow: &SourceFlow,
    options: SeedOptions,
    jobs: usize,
    mut progress: impl FnMut(usize),
) -> Result<SeedReport, SeedError> {
    let steps = plan(options);
    let mut report = SeedReport::default();
    let mut running = futures_util::stream::FuturesOrdered::new();
    let mut steps = steps.into_iter();
    loop {
        // Keep up to `jobs` steps in flight; a delivery waits for what came before it, so
        // stock arrives at the same point of the traffic whatever the concurrency.
        while running.len() < jobs.max(1) {
            match steps.next() {
                Some(Step::Delivery) if !running.is_empty() => {
                    let outcome = drain(&mut running, &mut report).await?;
                    progress(outcome);
                    deliver(flow, &mut report).await?;
                }
                Some(Step::Delivery) => deliver(flow, &mut report).await?,
                Some(Step::Order(order)) => running.push_back(run_order(flow, order, options.seed)),
                None => break,
            }
        }
        match futures_util::StreamExt::next(&mut running).await {
            Some(outcome) => {
                count(outcome, &mut report)?;
                progress(report.orders);
            }
            None => return Ok(report),
        }
    }
}

/// Waits for every step in flight; returns the orders done so far.
async fn drain<F>(
    running: &mut futures_util::stream::FuturesOrdered<F>,
    report: &mut SeedReport,
) -> Result<usize, SeedError>
where
    F: std::future::Future<Output = Result<OrderOutcome, SeedError>>,
{
    while let Some(outcome) = futures_util::StreamExt::next(running).await {
        count(outcome, report)?;
    }
    Ok(report.orders)
}

fn count(
    outcome: Result<OrderOutcome, SeedError>,
    report: &mut SeedReport,
) -> Result<(), SeedError> {
    let outcome = outcome?;
    report.orders += 1;
    report.commands += outcome.commands;
    match outcome.ending {
        Ending::Confirm => report.confirmed += 1,
        Ending::Cancel => report.cancelled += 1,
        Ending::Draft => report.drafts += 1,
    }
    Ok(())
}

async fn deliver(flow: &SourceFlow, report: &mut SeedReport) -> Result<(), SeedError> {
    for product in CATALOGUE.iter().filter(|p| p.opening_stock >= 10) {
        flow.send(
            product.sku,
            Restock {
                quantity: RESTOCK_UNITS,
            },
        )
        .await?;
        report.commands += 1;
    }
    Ok(())
}

struct OrderOutcome {
    commands: usize,
    ending: Ending,
}

async fn run_order(
    flow: &SourceFlow,
    order: OrderPlan,
    seed: u64,
) -> Result<OrderOutcome, SeedError> {
    let id = &order.id;
    match flow
        .send(
            id,
            PlaceOrder {
                contact: Some(sample_contact(&order.customer_id)),
                customer_id: order.customer_id,
            },
        )
        .await
    {
        Ok(_) => {}
        Err(Error::Rejected(e)) if e.code == "already_placed" => {
            return Err(SeedError::SeedUsed { seed })
        }
        Err(e) => return Err(e.into()),
    }
    let mut commands = 1;
    for item in order.items {
        send_expected(flow, id, item).await?;
        commands += 1;
    }
    if let Some(remove) = order.remove {
        send_expected(flow, id, remove).await?;
        commands += 1;
    }
    match order.ending {
        Ending::Confirm => send_expected(flow, id, ConfirmOrder).await?,
        Ending::Cancel => {
            send_expected(
                flow,
                id,
                CancelOrder {
                    reason: "changed my mind".to_owned(),
                },
            )
            .await?;
        }
        Ending::Draft => {}
    }
    if !matches!(order.ending, Ending::Draft) {
        commands += 1;
    }
    Ok(OrderOutcome {
        commands,
        ending: order.ending,
    })
}

/// Sends a command whose refusal is part of normal traffic (an item rejected for lack of stock
/// leaves nothing to remove or confirm): refusals are fine, faults are not.
async fn send_expected<C: sourceflow::Command>(
    flow: &SourceFlow,
    id: &EntityId,
    command: C,
) -> Result<(), Error> {
    match flow.send(id, command).await {
        Ok(_) | Err(Error::Rejected(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sixteen random bytes laid out as a UUID v4, drawn from the seeded generator.
fn random_uuid_bytes(rng: &mut fastrand::Rng) -> [u8; 16] {
    let mut bytes = rng.u128(..).to_le_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes
}

/// A made-up delivery contact for a sample customer, the same every time.
fn sample_contact(customer_id: &str) -> Personal<Contact> {
    let mut name = customer_id.replace(['-', '_', '.'], " ");
    if let Some(first) = name.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    let number = customer_id.bytes().map(u32::from).sum::<u32>() % 97 + 1;
    Contact::of(
        customer_id,
        &format!("{name} Sample"),
        &format!("{number} Market Street, Springfield"),
        &format!("{customer_id}@example.com"),
    )
}
