//! The wire format: an envelope in NATS headers, the payload as the JSON body.
//!
//! | header | value |
//! | --- | --- |
//! | `Nats-Msg-Id` | events only: the message id (JetStream drops a re-publish within its duplicate window) |
//! | `Sf-Name`, `Sf-Version` | wire name and schema version of the payload |
//! | `Sf-Message-Id`, `Sf-Correlation-Id`, `Sf-Causation-Id` | ids (UUIDs) |
//! | `Sf-Stream-Type`, `Sf-Stream-Id` | the entity stream |
//! | `Sf-Timestamp` | RFC 3339 |
//! | `Sf-Sequence`, `Sf-Command-Sequence`, `Sf-Position` | events only: where it was recorded |
//! | `Sf-Reply-To` | commands only: the inbox awaiting the receipt |
//! | `Sf-Status` | replies only: `ok` (body: receipt) or `error` (body: [`WireError`]) |
//! | `traceparent`, `tracestate` | commands and events: the W3C trace context of the span that sent them (see [`trace`](crate::trace)) |

use std::borrow::Cow;

use async_nats::HeaderMap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sourceflow::store::StoreError;
use sourceflow::{
    CommandReceipt, DomainError, Envelope, Location, Position, RecordedEvent, Sequence, StreamId,
    Violation, Violations,
};
use uuid::Uuid;

use crate::trace::TraceContext;

const MSG_ID: &str = "Nats-Msg-Id";
const NAME: &str = "Sf-Name";
const VERSION: &str = "Sf-Version";
const MESSAGE_ID: &str = "Sf-Message-Id";
const CORRELATION_ID: &str = "Sf-Correlation-Id";
const CAUSATION_ID: &str = "Sf-Causation-Id";
const STREAM_TYPE: &str = "Sf-Stream-Type";
const STREAM_ID: &str = "Sf-Stream-Id";
const TIMESTAMP: &str = "Sf-Timestamp";
const SEQUENCE: &str = "Sf-Sequence";
const COMMAND_SEQUENCE: &str = "Sf-Command-Sequence";
const POSITION: &str = "Sf-Position";
pub(crate) const REPLY_TO: &str = "Sf-Reply-To";
pub(crate) const STATUS: &str = "Sf-Status";
/// On a command whose message id no earlier attempt can have stored
/// ([`OutgoingCommand::first_send`](sourceflow::OutgoingCommand::first_send)).
pub(crate) const FIRST_SEND: &str = "Sf-First-Send";
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Header values are single lines: an id with a line break would cut the header block.
fn single_line(value: &str) -> Result<&str, String> {
    if value.contains(['\r', '\n']) {
        Err(format!("{value:?} contains a line break"))
    } else {
        Ok(value)
    }
}

/// Writes an envelope into headers.
pub(crate) fn envelope_headers(envelope: &Envelope) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    headers.insert(MESSAGE_ID, envelope.message_id.to_string());
    headers.insert(NAME, single_line(&envelope.name)?);
    headers.insert(VERSION, envelope.version.to_string());
    headers.insert(STREAM_TYPE, single_line(&envelope.stream.entity_type)?);
    headers.insert(STREAM_ID, single_line(envelope.stream.id.as_str())?);
    headers.insert(CORRELATION_ID, envelope.correlation_id.to_string());
    if let Some(causation) = envelope.causation_id {
        headers.insert(CAUSATION_ID, causation.to_string());
    }
    headers.insert(TIMESTAMP, envelope.timestamp.to_rfc3339());
    Ok(headers)
}

/// Writes a recorded event into headers.
pub(crate) fn event_headers(event: &RecordedEvent) -> Result<HeaderMap, String> {
    let mut headers = envelope_headers(&event.envelope)?;
    // Commands carry no `Nats-Msg-Id`: a resend after a lost reply must reach a worker, to be
    // answered from the store as a duplicate, not be dropped by JetStream unanswered.
    headers.insert(MSG_ID, event.envelope.message_id.to_string());
    headers.insert(SEQUENCE, event.sequence.0.to_string());
    headers.insert(COMMAND_SEQUENCE, event.command_sequence.0.to_string());
    headers.insert(POSITION, event.position.0.to_string());
    Ok(headers)
}

/// Writes a trace context into headers.
pub(crate) fn insert_trace(headers: &mut HeaderMap, context: &TraceContext) {
    headers.insert(TRACEPARENT, context.traceparent());
    if let Some(state) = context.tracestate() {
        headers.insert(TRACESTATE, state);
    }
}

/// Reads the trace context from headers: `None` when absent or malformed (a trace is never a
/// reason to refuse a message).
pub(crate) fn read_trace(headers: Option<&HeaderMap>) -> Option<TraceContext> {
    let headers = headers?;
    let parent = headers.get(TRACEPARENT)?;
    TraceContext::parse(parent.as_str(), headers.get(TRACESTATE).map(|v| v.as_str()))
}

fn get<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, String> {
    headers
        .get(name)
        .map(|v| v.as_str())
        .ok_or_else(|| format!("header {name} is missing"))
}

fn parse<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    let raw = get(headers, name)?;
    raw.parse()
        .map_err(|e| format!("header {name} = {raw:?}: {e}"))
}

/// Reads an envelope back from headers.
pub(crate) fn read_envelope(headers: Option<&HeaderMap>) -> Result<Envelope, String> {
    let headers = headers.ok_or("the message has no headers")?;
    let causation_id = match headers.get(CAUSATION_ID) {
        Some(v) => Some(
            v.as_str()
                .parse()
                .map_err(|e| format!("header {CAUSATION_ID}: {e}"))?,
        ),
        None => None,
    };
    let timestamp: DateTime<Utc> = DateTime::parse_from_rfc3339(get(headers, TIMESTAMP)?)
        .map_err(|e| format!("header {TIMESTAMP}: {e}"))?
        .with_timezone(&Utc);
    Ok(Envelope {
        message_id: parse(headers, MESSAGE_ID)?,
        name: Cow::Owned(get(headers, NAME)?.to_owned()),
        version: parse(headers, VERSION)?,
        stream: StreamId::new(
            get(headers, STREAM_TYPE)?.to_owned(),
            get(headers, STREAM_ID)?,
        ),
        correlation_id: parse(headers, CORRELATION_ID)?,
        causation_id,
        timestamp,
    })
}

/// Reads a recorded event back from headers and body.
pub(crate) fn read_event(
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<RecordedEvent, String> {
    let envelope = read_envelope(headers)?;
    let headers = headers.ok_or("the message has no headers")?;
    Ok(RecordedEvent {
        envelope,
        sequence: Sequence(parse(headers, SEQUENCE)?),
        command_sequence: Sequence(parse(headers, COMMAND_SEQUENCE)?),
        position: Position(parse(headers, POSITION)?),
        payload: payload.to_vec(),
    })
}

/// A recorded event inside a receipt reply.
#[derive(Serialize, Deserialize)]
struct WireEvent {
    envelope: Envelope,
    sequence: Sequence,
    command_sequence: Sequence,
    position: Position,
    /// The stored JSON text, carried as is (a parsed value would reorder keys and round
    /// numbers beyond 64 bits).
    payload: Box<RawValue>,
}

/// A receipt as a reply body.
#[derive(Serialize, Deserialize)]
pub(crate) struct WireReceipt {
    message_id: Uuid,
    stream: StreamId,
    sequence: Sequence,
    events: Vec<WireEvent>,
    duplicate: bool,
    retries: u32,
}

impl WireReceipt {
    pub(crate) fn from_receipt(receipt: &CommandReceipt) -> Self {
        Self {
            message_id: receipt.message_id,
            stream: receipt.stream.clone(),
            sequence: receipt.sequence,
            events: receipt
                .events
                .iter()
                .map(|e| WireEvent {
                    envelope: e.envelope.clone(),
                    sequence: e.sequence,
                    command_sequence: e.command_sequence,
                    position: e.position,
                    payload: raw_payload(&e.payload),
                })
                .collect(),
            duplicate: receipt.duplicate,
            retries: receipt.retries,
        }
    }

    pub(crate) fn into_receipt(self) -> CommandReceipt {
        CommandReceipt {
            message_id: self.message_id,
            stream: self.stream,
            sequence: self.sequence,
            events: self
                .events
                .into_iter()
                .map(|e| RecordedEvent {
                    envelope: e.envelope,
                    sequence: e.sequence,
                    command_sequence: e.command_sequence,
                    position: e.position,
                    payload: e.payload.get().as_bytes().to_vec(),
                })
                .collect(),
            duplicate: self.duplicate,
            retries: self.retries,
        }
    }
}

/// A handler's error as a reply body: enough to rebuild the matching [`sourceflow::Error`]
/// variant on the sender's side.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireError {
    /// `rejected`, `invalid`, `no_handler`, `unknown_message`, `decode`, `concurrency`,
    /// `stream_deleted`, `stream_archived`, `store`, `transport` or `other`.
    pub kind: String,
    /// The error as text.
    pub message: String,
    /// `rejected`: the domain error's code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `invalid`: the failed checks as (field, message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<(String, String)>,
    /// `invalid`: the message the checks belong to; `no_handler`, `unknown_message`,
    /// `decode`: the wire name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `concurrency`, `stream_deleted`, `stream_archived`, `unknown_message`, `decode`: the
    /// stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamId>,
    /// `concurrency`: expected sequence and attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
    /// `concurrency`: how many times the handler ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

impl WireError {
    fn new(kind: &str, message: String) -> Self {
        Self {
            kind: kind.to_owned(),
            message,
            code: None,
            violations: Vec::new(),
            name: None,
            stream: None,
            expected: None,
            attempts: None,
        }
    }

    /// The reply for an error the worker's pipeline returned.
    pub(crate) fn from_error(error: &sourceflow::Error) -> Self {
        use sourceflow::Error as E;
        let text = error.to_string();
        match error {
            E::Rejected(d) => Self {
                code: Some(d.code.clone()),
                message: d.message.clone(),
                ..Self::new("rejected", text)
            },
            E::Invalid(v) => Self {
                name: Some(v.message.clone()),
                violations: v
                    .items
                    .iter()
                    .map(|i| (i.field.clone(), i.message.clone()))
                    .collect(),
                ..Self::new("invalid", text)
            },
            E::NoHandler { message } => Self {
                name: Some(message.clone()),
                ..Self::new("no_handler", text)
            },
            E::UnknownMessage { name, at } => Self {
                name: Some(name.clone()),
                stream: stream_of(at),
                ..Self::new("unknown_message", text)
            },
            E::Decode { name, at, .. } => Self {
                name: Some(name.clone()),
                stream: stream_of(at),
                ..Self::new("decode", text)
            },
            E::Encode { name, at, .. } => Self {
                name: Some(name.clone()),
                stream: stream_of(at),
                ..Self::new("encode", text)
            },
            E::Concurrency {
                stream,
                expected,
                attempts,
            } => Self {
                stream: Some(stream.clone()),
                expected: Some(expected.0),
                attempts: Some(*attempts),
                ..Self::new("concurrency", text)
            },
            E::StreamDeleted { stream } => Self {
                stream: Some(stream.clone()),
                ..Self::new("stream_deleted", text)
            },
            E::StreamArchived { stream } => Self {
                stream: Some(stream.clone()),
                ..Self::new("stream_archived", text)
            },
            E::Store(_) => Self::new("store", text),
            _ => Self::new("other", text),
        }
    }

    /// The reply for a message the worker could not even read.
    pub(crate) fn malformed(message: String) -> Self {
        Self::new("decode", message)
    }

    /// Rebuilds the runtime error on the sender's side.
    pub(crate) fn into_error(self) -> sourceflow::Error {
        use sourceflow::Error as E;
        match self.kind.as_str() {
            "rejected" => E::Rejected(DomainError {
                code: self.code.unwrap_or_else(|| "rejected".to_owned()),
                message: self.message,
            }),
            "invalid" => E::Invalid(Violations {
                message: self.name.unwrap_or_default(),
                items: self
                    .violations
                    .into_iter()
                    .map(|(field, message)| Violation { field, message })
                    .collect(),
            }),
            "no_handler" => E::NoHandler {
                message: self.name.unwrap_or_default(),
            },
            "unknown_message" => E::UnknownMessage {
                name: self.name.unwrap_or_default(),
                at: location(self.stream),
            },
            "decode" => E::Decode {
                name: self.name.unwrap_or_default(),
                at: location(self.stream),
                source: <serde_json::Error as serde::de::Error>::custom(self.message),
            },
            "encode" => E::Encode {
                name: self.name.unwrap_or_default(),
                at: location(self.stream),
                source: <serde_json::Error as serde::ser::Error>::custom(self.message),
            },
            "concurrency" => match self.stream {
                Some(stream) => E::Concurrency {
                    stream,
                    expected: Sequence(self.expected.unwrap_or_default()),
                    attempts: self.attempts.unwrap_or_default(),
                },
                None => E::Store(StoreError::Backend(self.message.into())),
            },
            "stream_deleted" | "stream_archived" => match self.stream {
                Some(stream) if self.kind == "stream_deleted" => E::StreamDeleted { stream },
                Some(stream) => E::StreamArchived { stream },
                None => E::Store(StoreError::Backend(self.message.into())),
            },
            "store" => E::Store(StoreError::Transient(self.message.into())),
            _ => E::Store(StoreError::Backend(self.message.into())),
        }
    }
}

/// A stored payload as raw JSON: the exact text when it is JSON (as every payload the runtime
/// writes is), otherwise the bytes as a JSON string.
fn raw_payload(payload: &[u8]) -> Box<RawValue> {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|text| RawValue::from_string(text.to_owned()).ok())
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(payload);
            serde_json::value::to_raw_value(&text).unwrap_or_default()
        })
}

/// The stream a located error concerns, if any.
fn stream_of(at: &Location) -> Option<StreamId> {
    match at {
        Location::Stored { stream, .. } | Location::Sending { stream } => Some(stream.clone()),
        _ => None,
    }
}

/// A remote error's location: the stream it named, as a message on its way there.
fn location(stream: Option<StreamId>) -> Location {
    match stream {
        Some(stream) => Location::Sending { stream },
        None => Location::Detached,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            message_id: Uuid::now_v7(),
            name: Cow::Borrowed("bank.Deposit"),
            version: 1,
            stream: StreamId::new("bank.Account", "acc-1"),
            correlation_id: Uuid::now_v7(),
            causation_id: Some(Uuid::now_v7()),
            timestamp: DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z")
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default(),
        }
    }

    #[test]
    fn an_envelope_survives_the_headers() {
        let envelope = envelope();
        let headers = envelope_headers(&envelope).expect("plain ids");
        assert_eq!(read_envelope(Some(&headers)), Ok(envelope));
    }

    #[test]
    fn a_trace_context_survives_the_headers() {
        let mut headers = envelope_headers(&envelope()).expect("plain ids");
        assert_eq!(read_trace(Some(&headers)), None);
        let context = TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some("congo=t61rcWkgMzE"),
        )
        .expect("valid");
        insert_trace(&mut headers, &context);
        assert_eq!(read_trace(Some(&headers)), Some(context));
        headers.insert(TRACEPARENT, "garbage");
        assert_eq!(read_trace(Some(&headers)), None);
    }

    #[test]
    fn a_line_break_in_an_id_is_refused() {
        let mut envelope = envelope();
        envelope.stream = StreamId::new("bank.Account", "a\r\nb");
        assert!(envelope_headers(&envelope).is_err());
    }

    #[test]
    fn missing_headers_are_reported_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(NAME, "x");
        let error = read_envelope(Some(&headers)).expect_err("incomplete");
        assert!(error.contains("missing"), "{error}");
    }

    #[test]
    fn a_rejection_keeps_its_code_across_the_wire() {
        let error = sourceflow::Error::Rejected(DomainError::with_code("insufficient_funds", "no"));
        let wire: WireError = serde_json::from_slice(
            &serde_json::to_vec(&WireError::from_error(&error)).expect("json"),
        )
        .expect("json");
        match wire.into_error() {
            sourceflow::Error::Rejected(d) => {
                assert_eq!(d.code, "insufficient_funds");
                assert_eq!(d.message, "no");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_deleted_or_archived_stream_is_named_across_the_wire() {
        let stream = StreamId::new("bank.Account", "a-1");
        for error in [
            sourceflow::Error::StreamDeleted {
                stream: stream.clone(),
            },
            sourceflow::Error::StreamArchived {
                stream: stream.clone(),
            },
        ] {
            let wire: WireError = serde_json::from_slice(
                &serde_json::to_vec(&WireError::from_error(&error)).expect("json"),
            )
            .expect("a wire error");
            match (&error, wire.into_error()) {
                (
                    sourceflow::Error::StreamDeleted { .. },
                    sourceflow::Error::StreamDeleted { stream: s },
                )
                | (
                    sourceflow::Error::StreamArchived { .. },
                    sourceflow::Error::StreamArchived { stream: s },
                ) => {
                    assert_eq!(s, stream)
                }
                (sent, back) => panic!("{sent:?} came back as {back:?}"),
            }
        }
    }

    #[test]
    fn a_receipt_carries_payloads_byte_for_byte() {
        let payload = br#"{"z":1,"a":-0.0,"big":123456789012345678901234567890,"f":123456789.12345679,"s":"nul\u0000 crab \ud83e\udd80"}"#;
        let event = RecordedEvent {
            envelope: envelope(),
            sequence: Sequence(3),
            command_sequence: Sequence(2),
            position: Position(u64::MAX >> 1),
            payload: payload.to_vec(),
        };
        let receipt = CommandReceipt {
            message_id: event.envelope.message_id,
            stream: event.envelope.stream.clone(),
            sequence: Sequence(2),
            events: vec![event],
            duplicate: false,
            retries: 0,
        };
        let body = serde_json::to_vec(&WireReceipt::from_receipt(&receipt)).unwrap();
        let back: WireReceipt = serde_json::from_slice(&body).unwrap();
        assert_eq!(back.into_receipt(), receipt);
    }

    #[test]
    fn an_event_survives_headers_and_body() {
        let mut envelope = envelope();
        envelope.stream = StreamId::new("shop.Order", "o-\u{e9}t\u{e9} \u{1F980} #42");
        let event = RecordedEvent {
            envelope,
            sequence: Sequence(u64::MAX >> 1),
            command_sequence: Sequence(7),
            position: Position(123),
            payload: b"{\"s\":\"\\u0000\",\"x\":-0.0}".to_vec(),
        };
        let headers = event_headers(&event).expect("printable ids");
        assert_eq!(read_event(Some(&headers), &event.payload), Ok(event));
    }
}
