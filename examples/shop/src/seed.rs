//! A sample data generator: realistic order traffic through the real commands.
//!
//! Deterministic for a given seed: the same seed produces the same order ids, customers, items
//! and outcomes (timestamps and message ids are of the moment). Orders are sent one after the
//! other, so stock runs out at the same points every time.

use std::fmt;

use sourceflow::{EntityId, Error, SourceFlow};
use uuid::Uuid;

use crate::domain::{
    AddItem, CancelOrder, ConfirmOrder, PlaceOrder, RemoveItem, Restock, CATALOGUE,
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

/// Places `options.orders` orders, calling `progress` with the number done after each.
///
/// # Errors
/// [`SeedError::SeedUsed`] if the seed's first order exists already; [`SeedError::Flow`] if
/// a command fails for a reason the generator does not expect (a store fault).
pub async fn seed(
    flow: &SourceFlow,
    options: SeedOptions,
    mut progress: impl FnMut(usize),
) -> Result<SeedReport, SeedError> {
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let customers = (options.orders / 5).clamp(NAMES.len(), 2_000);
    let mut report = SeedReport::default();
    // Products people buy every day; the limited edition only now and then.
    let everyday: Vec<&str> = CATALOGUE
        .iter()
        .filter(|p| p.opening_stock >= 10)
        .map(|p| p.sku)
        .collect();

    for n in 0..options.orders {
        if n > 0 && n % RESTOCK_EVERY == 0 {
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
        }
        let id = EntityId::from(Uuid::from_bytes(random_uuid_bytes(&mut rng)));
        let k = rng.usize(..customers);
        let customer_id = match k / NAMES.len() {
            0 => NAMES[k].to_owned(),
            round => format!("{}-{}", NAMES[k % NAMES.len()], round + 1),
        };
        match flow.send(&id, PlaceOrder { customer_id }).await {
            Ok(_) => {}
            Err(Error::Rejected(e)) if e.code == "already_placed" => {
                return Err(SeedError::SeedUsed { seed: options.seed })
            }
            Err(e) => return Err(e.into()),
        }
        report.orders += 1;
        report.commands += 1;

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
        for sku in &skus {
            // One line in ten at a promotional price: 10% off the list price.
            let unit_price = (rng.u8(..10) == 0).then(|| {
                let list = crate::domain::product(sku).map_or(100, |p| p.price);
                list - list / 10
            });
            send_expected(
                flow,
                &id,
                AddItem {
                    sku: (*sku).to_owned(),
                    quantity: 1 + rng.u32(..3),
                    unit_price,
                },
            )
            .await?;
            report.commands += 1;
        }
        if rng.u8(..10) == 0 {
            let sku = skus[rng.usize(..skus.len())];
            let quantity = (rng.bool()).then_some(1);
            send_expected(
                flow,
                &id,
                RemoveItem {
                    sku: sku.to_owned(),
                    quantity,
                },
            )
            .await?;
            report.commands += 1;
        }
        match rng.u8(..100) {
            0..=69 => {
                send_expected(flow, &id, ConfirmOrder).await?;
                report.confirmed += 1;
                report.commands += 1;
            }
            70..=81 => {
                send_expected(
                    flow,
                    &id,
                    CancelOrder {
                        reason: "changed my mind".to_owned(),
                    },
                )
                .await?;
                report.cancelled += 1;
                report.commands += 1;
            }
            _ => report.drafts += 1,
        }
        progress(n + 1);
    }
    Ok(report)
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
