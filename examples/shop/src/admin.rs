//! Admin commands: raw events, replay, rebuild, export/import, sample data, statistics.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context as _};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use shop::domain::{self, Order, OrderStatus, Payment, Stock};
use shop::queries::{self, OrderFilter};
use shop::seed::SeedOptions;
use shop::transfer;
use shop::views::{
    CustomerOrders, CustomerOrdersView, OrderDetailsView, OrderSummaryView, PaymentDeadlinesView,
    ProductSalesView, StockLevelView, REACTION_NAMES, VIEW_NAMES,
};
use sourceflow::personal::SealedStore;
use sourceflow::store::{Page, StoreAdmin};
use sourceflow::{
    Entity, EntityId, Position, RecordedEvent, Sequence, SourceFlow, StreamId, Verification,
};
use uuid::Uuid;

use crate::cli::{EntityKind, Session, ViewName};
use crate::db::Access;
use crate::output::{bold, dim, format_count, good, progress_bar, say, spinner, table, warn};

/// Events read per batch when scanning the log.
const BATCH: usize = 1_000;
/// Commands `replay` lists before the state.
const SHOWN_COMMANDS: usize = 20;

/// Which events `shop events` prints.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    stream: Option<StreamFilter>,
    event_type: Option<String>,
    since: Option<DateTime<Utc>>,
    limit: Option<usize>,
    last: Option<usize>,
}

#[derive(Clone, Debug)]
enum StreamFilter {
    /// `TYPE/ID`: one stream.
    Exact(StreamId),
    /// `ID`: that id in every entity type (an order and its payment share one).
    Id(String),
}

impl EventFilter {
    /// A filter from the command line's words.
    ///
    /// # Errors
    /// A `--since` that is neither a time, a date nor an age.
    pub fn new(
        stream: Option<String>,
        event_type: Option<String>,
        since: Option<&str>,
        limit: Option<usize>,
        last: Option<usize>,
    ) -> anyhow::Result<Self> {
        let stream = stream
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .map(|s| match s.split_once('/') {
                Some((entity_type, id)) => {
                    StreamFilter::Exact(StreamId::new(entity_type.to_owned(), id))
                }
                None => StreamFilter::Id(s),
            });
        Ok(Self {
            stream,
            event_type: event_type
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty()),
            since: since.map(parse_since).transpose()?,
            limit,
            last,
        })
    }

    fn matches(&self, event: &RecordedEvent) -> bool {
        let stream_ok = match &self.stream {
            None => true,
            Some(StreamFilter::Exact(stream)) => &event.envelope.stream == stream,
            Some(StreamFilter::Id(id)) => event.envelope.stream.id.as_str() == id,
        };
        let type_ok = self.event_type.as_ref().is_none_or(|t| {
            let name = &*event.envelope.name;
            name.eq_ignore_ascii_case(t)
                || name
                    .rsplit_once('.')
                    .is_some_and(|(_, short)| short.eq_ignore_ascii_case(t))
        });
        stream_ok && type_ok
    }
}

/// `2024-05-01T10:00:00Z`, `2024-05-01`, or an age: `90s`, `30m`, `2h`, `7d`.
fn parse_since(text: &str) -> anyhow::Result<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(at) = day.and_hms_opt(0, 0, 0) {
            return Ok(at.and_utc());
        }
    }
    let unit = text.chars().last().unwrap_or(' ');
    let amount: Option<i64> = text
        .get(..text.len().saturating_sub(1))
        .and_then(|n| n.parse().ok());
    let age = amount.and_then(|n| match unit {
        's' => chrono::Duration::try_seconds(n),
        'm' => chrono::Duration::try_minutes(n),
        'h' => chrono::Duration::try_hours(n),
        'd' => chrono::Duration::try_days(n),
        _ => None,
    });
    match age {
        Some(age) => Ok(Utc::now() - age),
        None => bail!(
            "--since {text:?}: give a time (2024-05-01T10:00:00Z), a date (2024-05-01) or an age \
             (30m, 2h, 7d)"
        ),
    }
}

/// An event as `shop events` prints it: every envelope field, the payload as JSON.
#[derive(Serialize)]
struct EventJson<'a> {
    position: u64,
    stream: String,
    sequence: u64,
    command_sequence: u64,
    name: &'a str,
    version: u32,
    message_id: Uuid,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    timestamp: DateTime<Utc>,
    payload: serde_json::Value,
}

impl<'a> From<&'a RecordedEvent> for EventJson<'a> {
    fn from(e: &'a RecordedEvent) -> Self {
        Self {
            position: e.position.0,
            stream: e.envelope.stream.to_string(),
            sequence: e.sequence.0,
            command_sequence: e.command_sequence.0,
            name: &e.envelope.name,
            version: e.envelope.version,
            message_id: e.envelope.message_id,
            correlation_id: e.envelope.correlation_id,
            causation_id: e.envelope.causation_id,
            timestamp: e.envelope.timestamp,
            payload: e.payload_json().unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&e.payload).into_owned())
            }),
        }
    }
}

/// Prints the matching events as a pretty JSON array.
///
/// # Errors
/// Store faults; writing to stdout.
pub async fn events(flow: &SourceFlow, filter: &EventFilter) -> anyhow::Result<()> {
    let store = flow.store();
    // Exclusive upper bound of time-range reads: later than any event can be.
    let end = NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let keep = filter.last.unwrap_or(usize::MAX);
    let mut found: VecDeque<RecordedEvent> = VecDeque::new();
    let mut after = Position::START;
    'scan: loop {
        let batch = match filter.since {
            Some(since) => store.read_between(since, end, after, BATCH).await?,
            None => store.read_all(after, BATCH).await?,
        };
        let Some(last) = batch.last() else { break };
        after = last.position;
        for event in batch {
            if !filter.matches(&event) {
                continue;
            }
            found.push_back(event);
            if found.len() > keep {
                found.pop_front();
            }
            if filter.limit.is_some_and(|limit| found.len() >= limit) {
                break 'scan;
            }
        }
    }
    let json: Vec<EventJson<'_>> = found.iter().map(EventJson::from).collect();
    say!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

/// Replays (or time-travels) one entity and checks it against what is stored.
///
/// # Errors
/// Unknown ids, a sequence past the end, replay failures.
pub async fn replay(
    session: &Session,
    id: &str,
    entity: EntityKind,
    at: Option<u64>,
) -> anyhow::Result<Option<EntityId>> {
    let flow = session.flow(Access::Existing).await?;
    match entity {
        EntityKind::Order => {
            let id = queries::resolve_order(&flow, id).await?;
            replay_entity::<Order>(&flow, &id, at).await?;
            Ok(Some(id))
        }
        EntityKind::Payment => {
            let id = queries::resolve_order(&flow, id).await?;
            replay_entity::<Payment>(&flow, &id, at).await?;
            Ok(Some(id))
        }
        EntityKind::Stock => {
            let sku = id.trim().to_uppercase();
            if domain::product(&sku).is_none() {
                bail!(
                    "unknown product {sku:?}; the catalogue has {}",
                    domain::catalogue::known_skus()
                );
            }
            replay_entity::<Stock>(&flow, &EntityId::from(sku), at).await?;
            Ok(None)
        }
    }
}

async fn replay_entity<E: Entity>(
    flow: &SourceFlow,
    id: &EntityId,
    at: Option<u64>,
) -> anyhow::Result<()> {
    let stream = StreamId::of::<E>(id);
    let commands = flow
        .store()
        .load_commands(&stream, Sequence(1), None)
        .await?;
    let Some(last) = commands.last().map(|c| c.sequence) else {
        bail!("{stream} has no commands yet");
    };
    // Long streams (a popular product's stock) show their latest commands only.
    let shown_to = at.map_or(commands.len(), |at| (at as usize).min(commands.len()));
    let shown_from = shown_to.saturating_sub(SHOWN_COMMANDS);
    say!("{}", bold(&format!("command log of {stream}")));
    if shown_from > 0 {
        say!(
            "{}",
            dim(&format!("  ({shown_from} earlier commands not shown)"))
        );
    }
    for c in &commands[shown_from..shown_to] {
        say!(
            "  {:>3} {} {} {}",
            c.sequence,
            dim(&crate::output::time(&c.envelope.timestamp)),
            c.envelope.name,
            String::from_utf8_lossy(&c.payload)
        );
    }
    if let Some(at) = at {
        if at == 0 || at > last.0 {
            bail!("{stream} has commands 1 to {last}; --at {at} is outside");
        }
        let state: E = flow.state_at(id, Sequence(at)).await?;
        say!(
            "{}",
            bold(&format!(
                "state after command {at} of {last} (time travel: nothing saved)"
            ))
        );
        say!("{}", serde_json::to_string_pretty(&state)?);
        return Ok(());
    }
    // Check before replaying: `replay` saves the state it computes.
    let verdict = flow.verify::<E>(id).await?;
    let state: E = flow.replay(id).await?;
    say!(
        "{}",
        bold(&format!("state after replaying {last} commands"))
    );
    say!("{}", serde_json::to_string_pretty(&state)?);
    match verdict {
        Verification::Consistent { sequence } => say!(
            "{}",
            good(&format!(
                "consistent: replaying commands 1..{sequence} reproduces the recorded events and \
                 the stored state"
            ))
        ),
        Verification::NoStoredState { sequence } => say!(
            "{}",
            good(&format!(
                "no stored state to compare (it is a cache); replaying 1..{sequence} worked and \
                 the state is stored again"
            ))
        ),
        Verification::Differs { sequence, detail } => say!(
            "{}",
            warn(&format!(
                "differs from command {sequence} on: {detail} (the state above is the replayed one, now stored)"
            ))
        ),
    }
    Ok(())
}

/// Drops views and re-projects the whole log into them.
///
/// # Errors
/// Store faults, projection failures.
pub async fn rebuild(session: &Session, view: ViewName) -> anyhow::Result<()> {
    let flow = session.flow(Access::Existing).await?;
    let head = flow.store().head().await?;
    let all = view == ViewName::All;
    if all || view == ViewName::Orders {
        rebuild_one::<OrderSummaryView>(&flow, VIEW_NAMES[0], head).await?;
    }
    if all || view == ViewName::Details {
        rebuild_one::<OrderDetailsView>(&flow, VIEW_NAMES[1], head).await?;
    }
    if all || view == ViewName::Customers {
        rebuild_one::<CustomerOrdersView>(&flow, VIEW_NAMES[2], head).await?;
    }
    if all || view == ViewName::Stock {
        rebuild_one::<StockLevelView>(&flow, VIEW_NAMES[3], head).await?;
    }
    if all || view == ViewName::Sales {
        rebuild_one::<ProductSalesView>(&flow, VIEW_NAMES[4], head).await?;
    }
    if all || view == ViewName::Deadlines {
        rebuild_one::<PaymentDeadlinesView>(&flow, VIEW_NAMES[5], head).await?;
    }
    Ok(())
}

async fn rebuild_one<V: 'static>(
    flow: &SourceFlow,
    name: &str,
    head: Position,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let bar = progress_bar(head.0, name.trim_start_matches("shop."));
    let applied = flow
        .rebuild_with::<V>(|p| bar.set_position(p.position.0))
        .await
        .with_context(|| format!("cannot rebuild {name}"))?;
    bar.finish_and_clear();
    say!(
        "{} {name}: {} events in {:.2} s",
        good("rebuilt"),
        format_count(applied),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Writes the logs to `file` (through a temporary file, so a failed export leaves nothing).
///
/// # Errors
/// Store faults, file errors.
pub async fn export(session: &Session, file: &Path) -> anyhow::Result<()> {
    // Personal data is exported readable (and forgotten customers' redacted), so the file
    // imports into another database, which seals it with keys of its own.
    let store = SealedStore::new(session.store(Access::Existing).await?);
    let partial = file.with_extension("partial");
    let handle = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut out = tokio::io::BufWriter::new(handle);
    let spinner = spinner("exporting");
    let written = transfer::export(&store, &mut out).await;
    spinner.finish_and_clear();
    let summary = match written {
        Ok(summary) => summary,
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e).context("export failed");
        }
    };
    tokio::fs::rename(&partial, file)
        .await
        .with_context(|| format!("cannot write {}", file.display()))?;
    say!(
        "{} {} commands and {} events to {}",
        good("exported"),
        format_count(summary.commands),
        format_count(summary.events),
        file.display()
    );
    Ok(())
}

/// Forgets a customer: deletes the key of their personal data (name, address, e-mail), which
/// then reads as redacted in every order, view and export.
///
/// # Errors
/// Store faults.
pub async fn forget(session: &Session, customer: &str) -> anyhow::Result<()> {
    let customer = customer.trim();
    let flow = session.flow(Access::Existing).await?;
    let orders = match queries::customer(&flow, customer).await {
        Ok(c) => c.orders.len(),
        Err(_) => 0,
    };
    flow.forget(customer)
        .await
        .with_context(|| format!("cannot forget customer {customer:?}"))?;
    say!(
        "{} customer {customer}: name, address and e-mail are now unreadable in every order, \
         view and export ({orders} orders kept)",
        good("forgot")
    );
    Ok(())
}

/// Loads an export into an empty database, then builds the views.
///
/// # Errors
/// An unreadable or invalid file (nothing is written then), a non-empty target, store faults.
pub async fn import(session: &Session, file: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let text = tokio::fs::read_to_string(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    // The whole file is checked before the database is even opened.
    let plan = transfer::parse(&text)
        .with_context(|| format!("{} is not a valid export", file.display()))?;
    drop(text);
    let store = session.store(Access::Bulk).await?;
    transfer::ensure_empty(&*store)
        .await
        .context("import refused")?;
    let bar = progress_bar(plan.commands(), "importing");
    let sealed = SealedStore::new(store.clone());
    let summary = transfer::apply(&sealed, plan, |done, _| bar.set_position(done))
        .await
        .context("import failed")?;
    bar.finish_and_clear();
    // The reactions already ran where the file comes from: the follow-up commands they sent
    // are in the file. Starting them at the head keeps them from re-running all of history
    // (which would only be acknowledged as duplicates, slowly).
    let head = store.head().await?;
    for name in REACTION_NAMES {
        store.set_position(name, head).await?;
    }
    let spinner = spinner("building views");
    let flow = SourceFlow::builder()
        .shared_store(store)
        .build()
        .await
        .context("cannot build the views")?;
    flow.catch_up().await?;
    spinner.finish_and_clear();
    say!(
        "{} {} commands and {} events from {} in {:.1} s; views rebuilt",
        good("imported"),
        format_count(summary.commands),
        format_count(summary.events),
        file.display(),
        started.elapsed().as_secs_f64()
    );
    if summary.renumbered > 0 {
        say!(
            "{}",
            warn(&format!(
                "note: the exported log had gaps in its positions; {} events got new positions \
                 (everything else is identical)",
                summary.renumbered
            ))
        );
    }
    Ok(())
}

/// Generates sample orders.
///
/// # Errors
/// A seed used before on this database; store faults.
pub async fn seed(
    session: &Session,
    orders: usize,
    seed: Option<u64>,
    jobs: usize,
) -> anyhow::Result<()> {
    let seed = seed.unwrap_or_else(|| fastrand::u64(..));
    let started = Instant::now();
    let flow = session
        .flow_with(Access::Bulk, shop::bulk_builder())
        .await?;
    let bar = progress_bar(orders as u64, "orders");
    let report = shop::seed::seed(&flow, SeedOptions { orders, seed }, jobs, |n| {
        bar.set_position(n as u64)
    })
    .await;
    bar.finish_and_clear();
    let report = report.context("seeding stopped")?;
    let spinner = spinner("catching views up");
    flow.catch_up().await?;
    spinner.finish_and_clear();
    say!(
        "{} {} orders in {:.1} s (seed {seed}): {} confirmed, {} cancelled, {} left as drafts; \
         {} commands sent, more followed",
        good("seeded"),
        format_count(report.orders as u64),
        started.elapsed().as_secs_f64(),
        report.confirmed,
        report.cancelled,
        report.drafts,
        format_count(report.commands as u64)
    );
    Ok(())
}

/// Prints counts, streams per entity type and each view's position.
///
/// # Errors
/// Store faults.
pub async fn stats(session: &Session) -> anyhow::Result<()> {
    let flow = session.flow(Access::Existing).await?;
    let store = flow.store();
    let head = store.head().await?;
    say!("{}", bold(&format!("database {}", session.target)));

    let orders = queries::orders(&flow, &OrderFilter::default()).await?;
    let mut by_status: BTreeMap<&str, (u64, i64)> = BTreeMap::new();
    for (_, s) in &orders {
        let entry = by_status.entry(s.status.as_str()).or_default();
        entry.0 += 1;
        entry.1 += s.total;
    }
    let mut t = table(&["Orders", "Count", "Value"], &[1, 2]);
    for status in OrderStatus::ALL {
        let (count, value) = by_status.get(status.as_str()).copied().unwrap_or_default();
        t.add_row(vec![
            status.to_string(),
            format_count(count),
            domain::format_money(value),
        ]);
    }
    t.add_row(vec![
        "all".to_owned(),
        format_count(orders.len() as u64),
        String::new(),
    ]);
    say!("{t}");
    let customers = queries::all_models::<CustomerOrders>(&flow).await?.len();
    say!("customers: {}", format_count(customers as u64));

    let mut t = table(&["Entity type", "Streams", "Commands"], &[1, 2]);
    let (mut streams_total, mut commands_total) = (0u64, 0u64);
    for entity_type in flow.entity_types().await? {
        let (mut streams, mut commands) = (0u64, 0u64);
        let mut page = Page::first(BATCH);
        loop {
            let ids = flow.stream_ids(&entity_type, page.clone()).await?;
            for id in &ids {
                let stream = StreamId::new(entity_type.clone(), id.clone());
                commands += store.last_sequence(&stream).await?.0;
            }
            streams += ids.len() as u64;
            if ids.len() < BATCH {
                break;
            }
            page.after = ids.last().cloned();
        }
        streams_total += streams;
        commands_total += commands;
        t.add_row(vec![
            entity_type,
            format_count(streams),
            format_count(commands),
        ]);
    }
    t.add_row(vec![
        "all".to_owned(),
        format_count(streams_total),
        format_count(commands_total),
    ]);
    say!("{t}");
    say!("events: {} (last position {head})", format_count(head.0));

    let mut t = table(&["View or reaction", "Position", "Behind"], &[1, 2]);
    for name in VIEW_NAMES.iter().chain(REACTION_NAMES.iter()) {
        let position = store.get_position(name).await?;
        t.add_row(vec![
            (*name).to_owned(),
            position.0.to_string(),
            head.0.saturating_sub(position.0).to_string(),
        ]);
    }
    say!("{t}");
    Ok(())
}
