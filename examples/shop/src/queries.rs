//! Queries: the questions the shop answers, read from the view models only (never from the
//! entities or the logs), so they are cheap and keep working while commands run.

use std::fmt;

use sourceflow::store::Page;
use sourceflow::{EntityId, Error, SourceFlow, ViewModel};

use crate::domain::{OrderStatus, Product, CATALOGUE};
use crate::views::{CustomerOrders, OrderDetails, OrderSummary, ProductSales, StockLevel};

/// Rows fetched per page when a query walks a whole view.
const PAGE: usize = 1_000;

/// Why a query found nothing usable.
#[derive(Debug)]
pub enum QueryError {
    /// Nothing has this id (or id prefix).
    NotFound {
        /// What was looked for (`order`, `customer`).
        what: &'static str,
        /// The id as given.
        id: String,
    },
    /// An id prefix matches several orders.
    Ambiguous {
        /// The prefix as given.
        prefix: String,
        /// Some of the ids it matches.
        matches: Vec<String>,
    },
    /// The store failed, or a model no longer decodes.
    Flow(Error),
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::NotFound { what, id } => write!(f, "no {what} with id {id:?}"),
            QueryError::Ambiguous { prefix, matches } => write!(
                f,
                "{prefix:?} matches several orders ({}, ...); give more of the id",
                matches.join(", ")
            ),
            QueryError::Flow(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for QueryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            QueryError::Flow(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for QueryError {
    fn from(value: Error) -> Self {
        QueryError::Flow(value)
    }
}

/// Every model of type `M`, ordered by id.
///
/// # Errors
/// [`Error::Store`] or [`Error::Decode`] from the view store.
pub async fn all_models<M: ViewModel>(flow: &SourceFlow) -> Result<Vec<(EntityId, M)>, Error> {
    let mut all = Vec::new();
    let mut page = Page::first(PAGE);
    loop {
        let rows = flow.view_models::<M>(page.clone()).await?;
        let done = rows.len() < PAGE;
        page.after = rows.last().map(|(id, _)| id.clone());
        all.extend(rows);
        if done {
            return Ok(all);
        }
    }
}

/// Unpaid orders and when each is cancelled unless paid, soonest first (from
/// [`PaymentDeadlinesView`](crate::views::PaymentDeadlinesView)).
///
/// # Errors
/// As [`all_models`].
pub async fn payment_deadlines(
    flow: &SourceFlow,
) -> Result<Vec<(EntityId, crate::views::PaymentDeadline)>, Error> {
    let mut all = all_models::<crate::views::PaymentDeadline>(flow).await?;
    all.sort_by(|a, b| (a.1.pay_by, &a.0).cmp(&(b.1.pay_by, &b.0)));
    Ok(all)
}

/// Which orders a listing shows.
#[derive(Clone, Debug, Default)]
pub struct OrderFilter {
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// Only orders of this customer.
    pub customer_id: Option<String>,
}

/// Orders matching `filter`, newest first (ties broken by id, so the order is stable).
///
/// # Errors
/// As [`all_models`].
pub async fn orders(
    flow: &SourceFlow,
    filter: &OrderFilter,
) -> Result<Vec<(EntityId, OrderSummary)>, Error> {
    let mut rows: Vec<(EntityId, OrderSummary)> = all_models::<OrderSummary>(flow)
        .await?
        .into_iter()
        .filter(|(_, s)| filter.status.is_none_or(|status| s.status == status))
        .filter(|(_, s)| {
            filter
                .customer_id
                .as_ref()
                .is_none_or(|c| &s.customer_id == c)
        })
        .collect();
    rows.sort_by(|(a_id, a), (b_id, b)| b.placed_at.cmp(&a.placed_at).then(b_id.cmp(a_id)));
    Ok(rows)
}

/// Resolves an order id, or a unique prefix of one, to the order's id.
///
/// # Errors
/// [`QueryError::NotFound`], [`QueryError::Ambiguous`], or [`QueryError::Flow`].
pub async fn resolve_order(flow: &SourceFlow, text: &str) -> Result<EntityId, QueryError> {
    let text = text.trim();
    let not_found = || QueryError::NotFound {
        what: "order",
        id: text.to_owned(),
    };
    if text.is_empty() {
        return Err(not_found());
    }
    let exact = EntityId::from(text);
    if flow.view_model::<OrderSummary>(&exact).await?.is_some() {
        return Ok(exact);
    }
    // Ids are listed in order, and every id starting with the prefix sorts right after it,
    // so one short page answers whether the prefix is unique.
    let page = Page {
        after: Some(exact),
        limit: 4,
    };
    let matches: Vec<EntityId> = flow
        .view_models::<OrderSummary>(page)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .take_while(|id| id.as_str().starts_with(text))
        .collect();
    match matches.as_slice() {
        [] => Err(not_found()),
        [one] => Ok(one.clone()),
        _ => Err(QueryError::Ambiguous {
            prefix: text.to_owned(),
            matches: matches.iter().map(ToString::to_string).collect(),
        }),
    }
}

/// An order's summary and details.
#[derive(Clone, Debug)]
pub struct OrderView {
    /// The order's id.
    pub id: EntityId,
    /// Its row in listings.
    pub summary: OrderSummary,
    /// Its lines and history.
    pub details: OrderDetails,
}

/// One order, by id or unique id prefix.
///
/// # Errors
/// As [`resolve_order`].
pub async fn order(flow: &SourceFlow, id: &str) -> Result<OrderView, QueryError> {
    let id = resolve_order(flow, id).await?;
    let summary = flow
        .view_model::<OrderSummary>(&id)
        .await?
        .unwrap_or_default();
    let details = flow
        .view_model::<OrderDetails>(&id)
        .await?
        .unwrap_or_default();
    Ok(OrderView {
        id,
        summary,
        details,
    })
}

/// A customer's orders.
///
/// # Errors
/// [`QueryError::NotFound`] if the customer never ordered; [`QueryError::Flow`].
pub async fn customer(flow: &SourceFlow, customer_id: &str) -> Result<CustomerOrders, QueryError> {
    flow.view_model::<CustomerOrders>(customer_id.trim())
        .await?
        .ok_or_else(|| QueryError::NotFound {
            what: "customer",
            id: customer_id.to_owned(),
        })
}

/// One catalogue product with its stock and sales.
#[derive(Clone, Debug)]
pub struct ProductRow {
    /// The product.
    pub product: &'static Product,
    /// Its stock, or `None` before anything touched it (the opening stock is not booked yet).
    pub stock: Option<StockLevel>,
    /// What it sold.
    pub sales: ProductSales,
}

/// The catalogue with stock levels and sales.
///
/// # Errors
/// As [`all_models`].
pub async fn products(flow: &SourceFlow) -> Result<Vec<ProductRow>, Error> {
    let mut rows = Vec::with_capacity(CATALOGUE.len());
    for product in CATALOGUE {
        rows.push(ProductRow {
            product,
            stock: flow.view_model::<StockLevel>(product.sku).await?,
            sales: flow
                .view_model::<ProductSales>(product.sku)
                .await?
                .unwrap_or_default(),
        });
    }
    Ok(rows)
}
