//! `BANK_NATS_TRACE_FILE=<path>`: writes every sourceflow span to `<path>` when it closes, one
//! line each, fields separated by tabs, with the W3C trace id it belongs to (its own `trace_id` field, or the nearest
//! enclosing span's), so that a trace can be followed across the API and worker processes:
//!
//! ```text
//! span=sourceflow.commit trace_id=4bf9... seq=3 attempt=1
//! ```
//!
//! A stand-in for an OpenTelemetry exporter, with nothing to install.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Installs the capture as the global subscriber if `BANK_NATS_TRACE_FILE` is set.
pub fn install() -> anyhow::Result<()> {
    let Ok(path) = std::env::var("BANK_NATS_TRACE_FILE") else {
        return Ok(());
    };
    let file = File::options().create(true).append(true).open(path)?;
    tracing_subscriber::registry()
        .with(Capture {
            file: Mutex::new(file),
        })
        .try_init()?;
    Ok(())
}

/// A span's fields as recorded so far.
struct Fields(Vec<(&'static str, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let value = value.replace(['\t', '\n'], " ");
        match self.0.iter_mut().find(|(name, _)| *name == field.name()) {
            Some(slot) => slot.1 = value,
            None => self.0.push((field.name(), value)),
        }
    }
}

struct Capture {
    file: Mutex<File>,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        metadata.is_span()
            && (metadata.target().starts_with("sourceflow")
                || metadata.target().starts_with("bank"))
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields(Vec::new());
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let trace_id = span
            .scope()
            .find_map(|s| {
                s.extensions().get::<Fields>().and_then(|f| {
                    f.0.iter()
                        .find(|(n, _)| *n == "trace_id")
                        .map(|(_, v)| v.clone())
                })
            })
            .unwrap_or_default();
        let mut line = format!("span={}\ttrace_id={trace_id}", span.name());
        if let Some(fields) = span.extensions().get::<Fields>() {
            for (name, value) in fields.0.iter().filter(|(n, _)| *n != "trace_id") {
                let _ = write!(line, "\t{name}={value}");
            }
        }
        line.push('\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = file.write_all(line.as_bytes());
    }
}
