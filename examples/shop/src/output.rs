//! How results look: tables, colours (only on a terminal), progress bars (only on a terminal),
//! and events described in words.

use std::io::{IsTerminal, Write as _};
use std::time::Duration;

use chrono::{DateTime, Utc};
use comfy_table::{presets, CellAlignment, ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressStyle};
use shop::domain::*;
use sourceflow::RecordedEvent;

/// `println!` that ends the program quietly when stdout is closed early (`shop events | head`),
/// as command-line tools do, instead of panicking.
macro_rules! say {
    () => {
        $crate::output::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// Writes one line to stdout for [`say!`]. A closed pipe ends the program with success (the
/// reader has what it wanted); any other write failure ends it with an error message.
pub fn write_line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// Whether stdout gets ANSI colours: a terminal, and `NO_COLOR` unset.
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn paint(code: &str, text: &str) -> String {
    if colour() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// Yellow for stderr (coloured only when stderr is a terminal).
pub fn warn_stderr(text: &str) -> String {
    if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        format!("\x1b[33m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// Green: something succeeded.
pub fn good(text: &str) -> String {
    paint("32", text)
}

/// Yellow: refused, or worth a look.
pub fn warn(text: &str) -> String {
    paint("33", text)
}

/// Bold: headings.
pub fn bold(text: &str) -> String {
    paint("1", text)
}

/// Dim: secondary detail.
pub fn dim(text: &str) -> String {
    paint("2", text)
}

/// A table with the shop's look; numeric columns (by index) are right-aligned.
pub fn table(header: &[&str], right: &[usize]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    for &i in right {
        if let Some(column) = table.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// A timestamp as tables show it (UTC, to the second).
pub fn time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A progress bar on stderr; indicatif hides it when stderr is not a terminal.
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} {elapsed} eta {eta}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(what.to_owned());
    bar
}

/// A spinner on stderr for work of unknown length.
pub fn spinner(message: &str) -> ProgressBar {
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(message.to_owned());
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

/// An event in words, for command output and the demo.
pub fn describe(event: &RecordedEvent) -> String {
    let entity = event.envelope.stream.id.as_str();
    let text = match &*event.envelope.name {
        "shop.OrderPlaced" => event
            .decode::<OrderPlaced>()
            .map(|e| format!("order placed by {} in {}", e.customer_id, e.currency)),
        "shop.ItemAdded" => event.decode::<ItemAdded>().map(|e| {
            format!(
                "{} x {} added at {}",
                e.quantity,
                e.sku,
                format_money(e.unit_price)
            )
        }),
        "shop.ItemRemoved" => event
            .decode::<ItemRemoved>()
            .map(|e| format!("{} x {} removed", e.quantity, e.sku)),
        "shop.ItemRejected" => event
            .decode::<ItemRejected>()
            .map(|e| format!("{} x {} taken out: {}", e.quantity, e.sku, e.reason)),
        "shop.OrderConfirmed" => event
            .decode::<OrderConfirmed>()
            .map(|e| format!("confirmed, {} due", format_money(e.total))),
        "shop.OrderPaid" => event
            .decode::<OrderPaid>()
            .map(|e| format!("paid {}", format_money(e.amount))),
        "shop.OrderCancelled" => event
            .decode::<OrderCancelled>()
            .map(|e| format!("cancelled: {}", e.reason)),
        "shop.PaymentAuthorized" => event
            .decode::<PaymentAuthorized>()
            .map(|e| format!("payment of {} authorised", format_money(e.amount))),
        "shop.PaymentDeclined" => event.decode::<PaymentDeclined>().map(|e| e.reason),
        "shop.StockReceived" => event.decode::<StockReceived>().map(|e| {
            format!(
                "{} units received ({}), {} on hand",
                e.quantity, e.reason, e.on_hand
            )
        }),
        "shop.StockReserved" => event.decode::<StockReserved>().map(|e| {
            format!(
                "{} reserved for order {}, {} free",
                e.quantity,
                short(&e.order_id),
                e.available
            )
        }),
        "shop.StockReservationFailed" => event.decode::<StockReservationFailed>().map(|e| {
            format!(
                "cannot reserve {} for order {}: {} free",
                e.quantity,
                short(&e.order_id),
                e.available
            )
        }),
        "shop.StockReleased" => event.decode::<StockReleased>().map(|e| {
            format!(
                "{} released from order {}, {} free",
                e.quantity,
                short(&e.order_id),
                e.available
            )
        }),
        "shop.StockShipped" => event.decode::<StockShipped>().map(|e| {
            format!(
                "{} shipped for order {}, {} on hand",
                e.quantity,
                short(&e.order_id),
                e.on_hand
            )
        }),
        _ => Ok(String::from_utf8_lossy(&event.payload).into_owned()),
    };
    let kind = event
        .envelope
        .stream
        .entity_type
        .strip_prefix("shop.")
        .unwrap_or(&event.envelope.stream.entity_type);
    let text = text.unwrap_or_else(|e| format!("(undecodable: {e})"));
    format!("{kind} {}: {text}", short(entity))
}

/// The first 18 characters of a UUID-like id: enough to tell orders apart and to find one
/// again (commands accept a unique prefix); listings show the full id.
pub fn short(id: &str) -> &str {
    if id.len() > 20 {
        id.get(..18).unwrap_or(id)
    } else {
        id
    }
}

/// A count with thousands separators (`12345` -> `12,345`).
pub fn format_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_separators() {
        assert_eq!(format_count(0), "0");
        assert_eq!(format_count(999), "999");
        assert_eq!(format_count(1_000), "1,000");
        assert_eq!(format_count(1_234_567), "1,234,567");
    }

    #[test]
    fn long_ids_are_shortened() {
        assert_eq!(short("TEA-SENCHA"), "TEA-SENCHA");
        assert_eq!(
            short("0193f2a1-7c3b-7abc-8def-0123456789ab"),
            "0193f2a1-7c3b-7abc"
        );
    }
}
