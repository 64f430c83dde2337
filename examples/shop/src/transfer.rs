//! Export and import of a whole database as JSON Lines, through the public store contract.
//!
//! The file is the log in commit order: a header line, then each command followed by the
//! events it emitted, every envelope field included and payloads embedded byte for byte.
//! Importing replays it into an **empty** store with [`Store::commit`], one unit of work per
//! command, so sequences, message ids, correlation and causation ids, timestamps and (for a
//! log without gaps) global positions come out identical. View models, entity states and
//! positions are not exported: they are derived data, rebuilt from the log after an import.
//! A deleted stream is exported as the store keeps it: its tombstone and its erased records
//! (no payload), so the import refuses commands to it as well. Restore archived streams before
//! exporting: their history is in the archive, which the export does not read.
//!
//! ```text
//! {"kind":"header","format":"sourceflow-export","version":1,"commands":2,"events":2,"exported_at":"..."}
//! {"kind":"command","sequence":1,"envelope":{"message_id":"...","name":"shop.PlaceOrder",...},"payload":{"customer_id":"alice"}}
//! {"kind":"event","position":1,"sequence":1,"command_sequence":1,"envelope":{...},"payload":{"customer_id":"alice"}}
//! ```

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sourceflow::lifecycle;
use sourceflow::message::{Message, NewEvent, StoredCommand};
use sourceflow::registry::{self, TypeKind};
use sourceflow::store::{Page, Store, StoreAdmin, StoreError, UnitOfWork};
use sourceflow::{Envelope, Position, RecordedEvent, Sequence, StreamDeleted, StreamId};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

/// The `format` of the header line.
pub const FORMAT: &str = "sourceflow-export";
/// The file format version this code writes and reads.
pub const VERSION: u32 = 1;

/// Events read from the store per batch while exporting.
const BATCH: usize = 1_000;

/// What went wrong in an export or import. Its `Display` is one line.
#[derive(Debug)]
pub enum TransferError {
    /// Reading or writing the file failed.
    Io(std::io::Error),
    /// A line of the file is malformed or inconsistent with the lines before it.
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The file as a whole is wrong (no header, truncated, empty).
    File(String),
    /// The import target already holds data.
    NotEmpty(String),
    /// The store failed.
    Store(StoreError),
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::Io(e) => write!(f, "{e}"),
            TransferError::Line { line, message } => write!(f, "line {line}: {message}"),
            TransferError::File(message) | TransferError::NotEmpty(message) => f.write_str(message),
            TransferError::Store(e) => write!(f, "store error: {e}"),
        }
    }
}

impl std::error::Error for TransferError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TransferError::Io(e) => Some(e),
            TransferError::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for TransferError {
    fn from(value: std::io::Error) -> Self {
        TransferError::Io(value)
    }
}

impl From<StoreError> for TransferError {
    fn from(value: StoreError) -> Self {
        TransferError::Store(value)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Header,
    Command,
    Event,
}

/// Reads only the `kind` of a line, to pick the record type to parse it as.
#[derive(Deserialize)]
struct Tag {
    kind: Kind,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    kind: Kind,
    format: String,
    version: u32,
    commands: u64,
    events: u64,
    exported_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandLine {
    kind: Kind,
    sequence: Sequence,
    envelope: Envelope,
    payload: Box<RawValue>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLine {
    kind: Kind,
    position: Position,
    sequence: Sequence,
    command_sequence: Sequence,
    envelope: Envelope,
    payload: Box<RawValue>,
}

/// What an export wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportSummary {
    /// Commands written.
    pub commands: u64,
    /// Events written.
    pub events: u64,
}

/// Writes every command and event of `store` to `out` as JSON Lines, in commit order.
///
/// # Errors
/// [`TransferError::Store`] if reading fails, [`TransferError::Io`] if writing fails,
/// [`TransferError::File`] if a stored payload is not JSON.
pub async fn export<W: AsyncWrite + Unpin>(
    store: &dyn Store,
    out: &mut W,
) -> Result<ExportSummary, TransferError> {
    // Commands of every stream, in sequence order. Events name the command that emitted them,
    // which gives the interleaving: each command goes right before its first event.
    let mut pending: BTreeMap<StreamId, VecDeque<StoredCommand>> = BTreeMap::new();
    let mut commands = 0u64;
    for entity_type in store.entity_types().await? {
        let mut page = Page::first(BATCH);
        loop {
            let ids = store.stream_ids(&entity_type, page.clone()).await?;
            for id in &ids {
                let stream = StreamId::new(entity_type.clone(), id.clone());
                let loaded = store.load_commands(&stream, Sequence(1), None).await?;
                commands += loaded.len() as u64;
                pending.insert(stream, loaded.into());
            }
            if ids.len() < BATCH {
                break;
            }
            page.after = ids.last().cloned();
        }
    }
    // Events are read after the commands: an event whose command was committed after the
    // commands were listed (the store is in use) is left out with its command, so the file
    // holds whole units of work only.
    let mut loaded_to: HashMap<StreamId, Sequence> = pending
        .iter()
        .map(|(stream, queue)| {
            let to = queue.back().map_or(Sequence::ZERO, |c| c.sequence);
            (stream.clone(), to)
        })
        .collect();
    let mut events = Vec::new();
    let mut after = Position::START;
    loop {
        let batch = store.read_all(after, BATCH).await?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        for event in batch {
            let stream = &event.envelope.stream;
            let name = &*event.envelope.name;
            let deleted = lifecycle::is_erased(name) || name == StreamDeleted::NAME;
            if deleted && !loaded_to.contains_key(stream) {
                // A deleted stream, left out of the listings: its tombstone is its last
                // command, so its commands are all there is.
                let loaded = store.load_commands(stream, Sequence(1), None).await?;
                commands += loaded.len() as u64;
                let to = loaded.last().map_or(Sequence::ZERO, |c| c.sequence);
                loaded_to.insert(stream.clone(), to);
                pending.insert(stream.clone(), loaded.into());
            }
            if loaded_to
                .get(stream)
                .is_some_and(|to| event.command_sequence <= *to)
            {
                events.push(event);
            }
        }
    }

    let header = Header {
        kind: Kind::Header,
        format: FORMAT.to_owned(),
        version: VERSION,
        commands,
        events: events.len() as u64,
        exported_at: Utc::now(),
    };
    let mut buffer = Vec::with_capacity(64 * 1024);
    write_line(&mut buffer, &header)?;
    for event in &events {
        if let Some(queue) = pending.get_mut(&event.envelope.stream) {
            while queue
                .front()
                .is_some_and(|c| c.sequence <= event.command_sequence)
            {
                if let Some(command) = queue.pop_front() {
                    write_command(&mut buffer, command)?;
                }
            }
        }
        write_event(&mut buffer, event)?;
        if buffer.len() > 60 * 1024 {
            out.write_all(&buffer).await?;
            buffer.clear();
        }
    }
    // Commands that emitted no event after the last one that did.
    for queue in pending.into_values() {
        for command in queue {
            write_command(&mut buffer, command)?;
        }
    }
    out.write_all(&buffer).await?;
    out.flush().await?;
    Ok(ExportSummary {
        commands,
        events: events.len() as u64,
    })
}

fn raw(payload: Vec<u8>, name: &str, stream: &StreamId) -> Result<Box<RawValue>, TransferError> {
    String::from_utf8(payload)
        .ok()
        .and_then(|text| RawValue::from_string(text).ok())
        .ok_or_else(|| {
            TransferError::File(format!(
                "the stored payload of {name} in {stream} is not JSON"
            ))
        })
}

fn write_command(buffer: &mut Vec<u8>, command: StoredCommand) -> Result<(), TransferError> {
    let payload = raw(
        command.payload,
        &command.envelope.name,
        &command.envelope.stream,
    )?;
    write_line(
        buffer,
        &CommandLine {
            kind: Kind::Command,
            sequence: command.sequence,
            envelope: command.envelope,
            payload,
        },
    )
}

fn write_event(buffer: &mut Vec<u8>, event: &RecordedEvent) -> Result<(), TransferError> {
    let payload = raw(
        event.payload.clone(),
        &event.envelope.name,
        &event.envelope.stream,
    )?;
    write_line(
        buffer,
        &EventLine {
            kind: Kind::Event,
            position: event.position,
            sequence: event.sequence,
            command_sequence: event.command_sequence,
            envelope: event.envelope.clone(),
            payload,
        },
    )
}

fn write_line(buffer: &mut Vec<u8>, value: &impl Serialize) -> Result<(), TransferError> {
    serde_json::to_writer(&mut *buffer, value).map_err(std::io::Error::from)?;
    buffer.push(b'\n');
    Ok(())
}

/// One command and its events, ready to commit.
#[derive(Debug)]
struct Unit {
    command: StoredCommand,
    events: Vec<(NewEvent, Position)>,
}

/// A parsed and fully validated export file.
#[derive(Debug)]
pub struct ImportPlan {
    units: Vec<Unit>,
    events: u64,
}

impl ImportPlan {
    /// Commands in the file.
    pub fn commands(&self) -> u64 {
        self.units.len() as u64
    }

    /// Events in the file.
    pub fn events(&self) -> u64 {
        self.events
    }
}

/// Parses and checks a whole export file before anything is written: the header, every
/// line's shape, dense sequences per stream, events right after their command, increasing
/// positions, unique message ids, known message names, payloads that decode as their types,
/// and the counts announced by the header (so a truncated file is refused).
///
/// # Errors
/// [`TransferError::Line`] naming the first bad line, or [`TransferError::File`].
pub fn parse(text: &str) -> Result<ImportPlan, TransferError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((first, header_line)) = lines.next() else {
        return Err(TransferError::File("the file is empty".to_owned()));
    };
    let header: Header = serde_json::from_str(header_line)
        .ok()
        .filter(|h: &Header| h.kind == Kind::Header && h.format == FORMAT)
        .ok_or_else(|| TransferError::Line {
            line: first,
            message: format!("not a {FORMAT} file (the first line must be its header)"),
        })?;
    if header.version != VERSION {
        return Err(TransferError::Line {
            line: first,
            message: format!(
                "format version {} is not supported (this shop reads version {VERSION})",
                header.version
            ),
        });
    }

    let mut checker = Checker::default();
    let mut units: Vec<Unit> = Vec::new();
    let mut events = 0u64;
    for (line, text) in lines {
        let bad = |message: String| TransferError::Line { line, message };
        let tag: Tag = serde_json::from_str(text).map_err(|e| bad(format!("not a record: {e}")))?;
        match tag.kind {
            Kind::Header => return Err(bad("a second header".to_owned())),
            Kind::Command => {
                let record: CommandLine = serde_json::from_str(text)
                    .map_err(|e| bad(format!("malformed command: {e}")))?;
                let envelope = &record.envelope;
                check_payload(TypeKind::Command, envelope, &record.payload).map_err(bad)?;
                checker.command(envelope, record.sequence).map_err(bad)?;
                units.push(Unit {
                    command: StoredCommand {
                        payload: record.payload.get().as_bytes().to_vec(),
                        envelope: record.envelope,
                        sequence: record.sequence,
                    },
                    events: Vec::new(),
                });
            }
            Kind::Event => {
                let record: EventLine =
                    serde_json::from_str(text).map_err(|e| bad(format!("malformed event: {e}")))?;
                let envelope = &record.envelope;
                check_payload(TypeKind::Event, envelope, &record.payload).map_err(bad)?;
                let Some(unit) = units.last_mut() else {
                    return Err(bad("an event before any command".to_owned()));
                };
                if unit.command.envelope.stream != envelope.stream
                    || unit.command.sequence != record.command_sequence
                {
                    return Err(bad(format!(
                        "event of {} command {} must follow that command (it follows {} command {})",
                        envelope.stream,
                        record.command_sequence,
                        unit.command.envelope.stream,
                        unit.command.sequence
                    )));
                }
                checker
                    .event(envelope, record.sequence, record.position)
                    .map_err(bad)?;
                events += 1;
                unit.events.push((
                    NewEvent {
                        payload: record.payload.get().as_bytes().to_vec(),
                        envelope: record.envelope,
                    },
                    record.position,
                ));
            }
        }
    }
    let commands = units.len() as u64;
    if (commands, events) != (header.commands, header.events) {
        return Err(TransferError::File(format!(
            "the header announces {} commands and {} events but the file holds {commands} and \
             {events}: it is truncated or was edited",
            header.commands, header.events
        )));
    }
    Ok(ImportPlan { units, events })
}

/// Per-stream bookkeeping for [`parse`].
#[derive(Default)]
struct Checker {
    commands: HashMap<StreamId, Sequence>,
    events: HashMap<StreamId, Sequence>,
    ids: HashSet<(StreamId, Uuid)>,
    position: Position,
}

impl Checker {
    fn command(&mut self, envelope: &Envelope, sequence: Sequence) -> Result<(), String> {
        let last = self
            .commands
            .entry(envelope.stream.clone())
            .or_insert(Sequence::ZERO);
        if sequence != last.next() {
            return Err(format!(
                "command {} of {} should have sequence {}",
                sequence,
                envelope.stream,
                last.next()
            ));
        }
        *last = sequence;
        if !self
            .ids
            .insert((envelope.stream.clone(), envelope.message_id))
        {
            return Err(format!(
                "message id {} appears twice in {}",
                envelope.message_id, envelope.stream
            ));
        }
        Ok(())
    }

    fn event(
        &mut self,
        envelope: &Envelope,
        sequence: Sequence,
        position: Position,
    ) -> Result<(), String> {
        let last = self
            .events
            .entry(envelope.stream.clone())
            .or_insert(Sequence::ZERO);
        if sequence != last.next() {
            return Err(format!(
                "event {} of {} should have sequence {}",
                sequence,
                envelope.stream,
                last.next()
            ));
        }
        *last = sequence;
        if position <= self.position {
            return Err(format!(
                "position {position} does not increase (after {})",
                self.position
            ));
        }
        self.position = position;
        Ok(())
    }
}

/// Checks that a message name is registered with the expected kind (under its name or an
/// earlier one) and that its payload, of the version it was exported with, decodes as that
/// type once upcast: a file that would later fail to replay is refused up front, and an export
/// made by an earlier version of the shop imports as it was written.
fn check_payload(kind: TypeKind, envelope: &Envelope, payload: &RawValue) -> Result<(), String> {
    // What deleting or archiving a stream recorded: sourceflow's own records, with no type of
    // the application's (an erased one has no payload left).
    let system = match kind {
        TypeKind::Command => lifecycle::is_system_command(&envelope.name),
        _ => lifecycle::is_erased(&envelope.name),
    };
    if system {
        return Ok(());
    }
    if registry::find(kind, &envelope.name).is_none() {
        let what = if kind == TypeKind::Command {
            "command"
        } else {
            "event"
        };
        return Err(format!("unknown {what} {:?}", envelope.name));
    }
    let payload = payload.get().as_bytes();
    registry::check_stored(kind, &envelope.name, envelope.version, payload).map_err(|e| match e {
        sourceflow::Error::Decode { source, .. } => {
            format!(
                "payload of {} does not match its type: {source}",
                envelope.name
            )
        }
        other => other.to_string(),
    })
}

/// Fails unless `store` holds no command and no event.
///
/// # Errors
/// [`TransferError::NotEmpty`], or [`TransferError::Store`].
pub async fn ensure_empty(store: &dyn Store) -> Result<(), TransferError> {
    let types = store.entity_types().await?;
    let head = store.head().await?;
    if !types.is_empty() || head != Position::START {
        return Err(TransferError::NotEmpty(format!(
            "the target database is not empty (it has streams of {} and events up to position \
             {head}); import only into a new database",
            if types.is_empty() {
                "no type".to_owned()
            } else {
                types.join(", ")
            }
        )));
    }
    Ok(())
}

/// What an import did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportSummary {
    /// Commands committed.
    pub commands: u64,
    /// Events committed.
    pub events: u64,
    /// Events whose position differs from the file's (only when the exported log had gaps,
    /// which a fresh store cannot reproduce; everything else is identical).
    pub renumbered: u64,
}

/// Commits a validated plan into `store`, in file order, reporting `(units done, units total)`.
/// Call [`ensure_empty`] first.
///
/// # Errors
/// [`TransferError::Store`] if a commit fails (including a conflict if something else writes
/// to the store at the same time).
pub async fn apply(
    store: &dyn Store,
    plan: ImportPlan,
    mut progress: impl FnMut(u64, u64),
) -> Result<ImportSummary, TransferError> {
    let total = plan.units.len() as u64;
    let mut summary = ImportSummary {
        commands: 0,
        events: 0,
        renumbered: 0,
    };
    for unit in plan.units {
        let expected_positions: Vec<Position> = unit.events.iter().map(|(_, p)| *p).collect();
        let sequence = unit.command.sequence;
        let receipt = store
            .commit(UnitOfWork {
                expected: Sequence(sequence.0 - 1),
                command: unit.command,
                // The entity state is a cache of the log: the first command sent to the entity
                // after the import replays its stream and stores it again.
                entity: None,
                events: unit.events.into_iter().map(|(e, _)| e).collect(),
                // Follow-ups already ran in the source: their commands are in the file.
                outbox: vec![],
                keys: Vec::new(),
            })
            .await?;
        summary.commands += 1;
        summary.events += receipt.events.len() as u64;
        summary.renumbered += receipt
            .events
            .iter()
            .zip(&expected_positions)
            .filter(|(e, p)| e.position != **p)
            .count() as u64;
        progress(summary.commands, total);
    }
    Ok(summary)
}
