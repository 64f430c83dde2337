//! One trace across processes: the W3C trace context (`traceparent`, `tracestate`) travels in
//! the headers of commands and events, and every process continues it.
//!
//! # Spans
//! | span | where | what |
//! | --- | --- | --- |
//! | `sourceflow.nats.send` | sender | a command published, until its reply (or until JetStream holds it) |
//! | `sourceflow.nats.command` | worker | a command handled; the runtime's `sourceflow.send`, `sourceflow.commit` and `sourceflow.project` spans run inside it |
//! | `sourceflow.nats.event` | [`NatsViewFeeder`](crate::NatsViewFeeder), [`NatsEventSubscriber`](crate::NatsEventSubscriber) | an event received; a subscriber applies it inside this span, a feeder applies its batch in a `sourceflow.nats.apply` span that follows from each event's |
//!
//! Each of them records the fields `trace_id` (32 hex digits), `span_id` and `parent_span_id`
//! (16 hex digits each, `parent_span_id` empty for the root): the W3C ids of the span. Spans
//! nested inside them in one process belong to the same trace. A `tracing` subscriber sees
//! API -> worker -> commit -> views as one trace by the `trace_id` field of the nearest
//! enclosing span that has one; an OpenTelemetry bridge maps it one to one (`trace_id`,
//! `span_id` and `parent_span_id` are the OpenTelemetry ids of the span, in the same hex form).
//!
//! # Where a trace starts
//! A command sent inside [`TraceContext::scope`] continues that context (for example the
//! `traceparent` of the HTTP request that led to it). Outside one, its trace id is its
//! correlation id (a UUID is 16 bytes, like a trace id): every command and event of one
//! correlation is then one trace, even where no trace context travels with it. Workers and
//! subscribers handle inside the context they received, so a follow-up command a handler or
//! reaction sends over NATS continues the same trace.
//!
//! # Events
//! The store does not keep trace contexts, so an event is published with one rebuilt from what
//! it keeps: the parent span id is the one the worker gave its command (derived from the
//! command's message id, the event's causation id), and the trace id is the command's when the
//! publisher runs in the process whose worker handled the command (it remembers the last
//! 4,096), otherwise the event's correlation id. So with a context from outside a deployment,
//! an event published by another worker process than the one that handled its command starts
//! its own trace, named by its correlation id.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use uuid::Uuid;

/// A W3C trace context: the trace, the span that is the parent of the next one, and the
/// vendor state that travels with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
    state: Option<String>,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

impl TraceContext {
    /// A context of trace `trace_id` whose current span is `span_id` (sampled). `None` if
    /// either is all zeroes, which W3C reserves as invalid.
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8]) -> Option<Self> {
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(Self {
            trace_id,
            span_id,
            flags: 1,
            state: None,
        })
    }

    /// A new trace, with a random trace id and span id.
    pub fn new_root() -> Self {
        Self {
            trace_id: nonzero(*Uuid::new_v4().as_bytes()),
            span_id: random_span_id(),
            flags: 1,
            state: None,
        }
    }

    /// Reads a `traceparent` header (version `00`, or a later one read as `00`), with the
    /// `tracestate` that came with it. `None` for a malformed or invalid one.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let mut parts = traceparent.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let mut context = Self::new(hex_array(trace)?, hex_array(span)?)?;
        context.flags = hex_array::<1>(flags)?[0];
        context.state = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty() && !s.contains(['\r', '\n']))
            .map(str::to_owned);
        Some(context)
    }

    /// The `traceparent` header value: `00-<trace id>-<span id>-<flags>`.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            self.span_id_hex(),
            self.flags
        )
    }

    /// The `tracestate` header value, if any came with the context.
    pub fn tracestate(&self) -> Option<&str> {
        self.state.as_deref()
    }

    /// The trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The current span's id.
    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// Whether the sender sampled the trace (flag `01`).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The same trace, with `span_id` as its current span.
    pub fn with_span(&self, span_id: [u8; 8]) -> Self {
        Self {
            span_id: nonzero(span_id),
            ..self.clone()
        }
    }

    /// The context the current task runs in: set by [`scope`](Self::scope), and by workers
    /// and subscribers while they handle a message.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `future` with this context as [`current`](Self::current): commands it sends
    /// over NATS continue this trace.
    pub async fn scope<F: std::future::Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }

    /// The root of a command's trace when no context is in scope: its correlation id.
    pub(crate) fn of_correlation(correlation_id: Uuid) -> [u8; 16] {
        nonzero(*correlation_id.as_bytes())
    }

    /// The context of a span `span_id` sending a message with `correlation_id`, and the id of
    /// its parent span: the current context's, or none (a new trace named by the correlation).
    pub(crate) fn for_sending(correlation_id: Uuid, span_id: [u8; 8]) -> (Self, Option<String>) {
        match Self::current() {
            Some(current) => (current.with_span(span_id), Some(current.span_id_hex())),
            None => (
                Self {
                    trace_id: Self::of_correlation(correlation_id),
                    span_id: nonzero(span_id),
                    flags: 1,
                    state: None,
                },
                None,
            ),
        }
    }
}

/// The span id a worker gives the handling of the command with `message_id`: derived, so that
/// a publisher in any process can name it as the parent of the command's events.
pub(crate) fn command_span_id(message_id: Uuid) -> [u8; 8] {
    let bytes = message_id.as_bytes();
    let mut id = [0u8; 8];
    // The random half of a v4 or v7 UUID, mixed with the other half.
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = bytes[8 + i] ^ bytes[i].rotate_left(3);
    }
    nonzero(id)
}

/// A fresh random span id.
pub(crate) fn random_span_id() -> [u8; 8] {
    let bytes = Uuid::new_v4().into_bytes();
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[8..]);
    nonzero(id)
}

fn nonzero<const N: usize>(mut id: [u8; N]) -> [u8; N] {
    if id == [0; N] {
        id[N - 1] = 1;
    }
    id
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// The traces of the commands this process's workers handled recently, by command message id,
/// for the publisher to give their events the same trace.
pub(crate) struct Remembered {
    traces: HashMap<Uuid, TraceContext>,
    order: VecDeque<Uuid>,
}

const REMEMBERED: usize = 4096;

fn remembered() -> &'static Mutex<Remembered> {
    static CELL: OnceLock<Mutex<Remembered>> = OnceLock::new();
    CELL.get_or_init(|| {
        Mutex::new(Remembered {
            traces: HashMap::new(),
            order: VecDeque::new(),
        })
    })
}

fn lock() -> std::sync::MutexGuard<'static, Remembered> {
    remembered()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Remembers the trace of the command `message_id` (only needed when it is not the one its
/// correlation id names).
pub(crate) fn remember(message_id: Uuid, context: &TraceContext) {
    let mut remembered = lock();
    if remembered
        .traces
        .insert(message_id, context.clone())
        .is_none()
    {
        remembered.order.push_back(message_id);
        if remembered.order.len() > REMEMBERED {
            if let Some(old) = remembered.order.pop_front() {
                remembered.traces.remove(&old);
            }
        }
    }
}

/// The context an event is published with (see the module docs).
pub(crate) fn of_event(envelope: &sourceflow::Envelope) -> TraceContext {
    let command = envelope.causation_id.unwrap_or(envelope.message_id);
    let span = command_span_id(command);
    match lock().traces.get(&command) {
        Some(context) => context.with_span(span),
        None => TraceContext {
            trace_id: TraceContext::of_correlation(envelope.correlation_id),
            span_id: span,
            flags: 1,
            state: None,
        },
    }
}

/// The context a received message is handled in, with `span_id` as the handling span, and the
/// sender's span id: the one its headers carry, or a new trace named by `correlation_id`.
pub(crate) fn for_receiving(
    received: Option<TraceContext>,
    correlation_id: Uuid,
    span_id: [u8; 8],
) -> (TraceContext, Option<String>) {
    match received {
        Some(received) => (received.with_span(span_id), Some(received.span_id_hex())),
        None => (
            TraceContext {
                trace_id: TraceContext::of_correlation(correlation_id),
                span_id: nonzero(span_id),
                flags: 1,
                state: None,
            },
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_reads_back() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::parse(header, Some("congo=t61rcWkgMzE")).expect("valid");
        assert_eq!(context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id_hex(), "00f067aa0ba902b7");
        assert!(context.sampled());
        assert_eq!(context.tracestate(), Some("congo=t61rcWkgMzE"));
        assert_eq!(context.traceparent(), header);
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for header in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceContext::parse(header, None), None, "{header}");
        }
        // A later version may add fields; its first four read as version 00.
        assert!(TraceContext::parse(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            None
        )
        .is_some());
    }

    #[tokio::test]
    async fn a_scope_sets_the_current_context() {
        assert_eq!(TraceContext::current(), None);
        let root = TraceContext::new_root();
        let seen = root.clone().scope(async { TraceContext::current() }).await;
        assert_eq!(seen, Some(root));
    }

    #[test]
    fn an_event_continues_its_command_trace() {
        let envelope = |causation: Uuid| sourceflow::Envelope {
            message_id: Uuid::now_v7(),
            name: "t.Happened".into(),
            version: 1,
            stream: sourceflow::StreamId::new("t.Thing", "1"),
            correlation_id: Uuid::now_v7(),
            causation_id: Some(causation),
            timestamp: chrono::Utc::now(),
        };
        // Unknown command: the correlation names the trace, the command's span is the parent.
        let command = Uuid::now_v7();
        let event = envelope(command);
        let context = of_event(&event);
        assert_eq!(context.trace_id(), *event.correlation_id.as_bytes());
        assert_eq!(context.span_id(), command_span_id(command));
        // A command a worker here handled in a trace from outside: its events join it.
        let outside = TraceContext::new_root();
        remember(command, &outside);
        let context = of_event(&event);
        assert_eq!(context.trace_id(), outside.trace_id());
        assert_eq!(context.span_id(), command_span_id(command));
    }
}
