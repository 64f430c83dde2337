//! Measurements, targets and the ratio table the binary prints.

use std::fmt::Write as _;
use std::time::Duration;

/// The median of `samples` (sorted in place); zero for an empty slice.
pub fn median(samples: &mut [Duration]) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let mid = samples.len() / 2;
    if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2
    }
}

/// The median of plain numbers (sorted in place); zero for an empty slice.
pub fn median_f64(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable_by(f64::total_cmp);
    let mid = samples.len() / 2;
    if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2.0
    }
}

/// Microseconds, for display.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// What a row is held to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// The ratio must be at least this.
    AtLeast(f64),
    /// The ratio must be at most this.
    AtMost(f64),
    /// Shown for context; no target.
    None,
}

impl Target {
    fn met(self, value: f64) -> Option<bool> {
        match self {
            Target::AtLeast(t) => Some(value >= t),
            Target::AtMost(t) => Some(value <= t),
            Target::None => None,
        }
    }

    fn text(self) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {}", trim(t)),
            Target::AtMost(t) => format!("<= {}", trim(t)),
            Target::None => String::new(),
        }
    }
}

fn trim(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// One line of the table: a measured value, and optionally a ratio checked against a target.
#[derive(Clone, Debug)]
pub struct Row {
    /// Workload id (`W1` .. `W8`).
    pub id: &'static str,
    /// What was measured.
    pub what: String,
    /// The measured value with its unit.
    pub measured: String,
    /// The ratio the target applies to (or the value itself for absolute targets), if any.
    pub ratio: Option<f64>,
    /// The target on `ratio`.
    pub target: Target,
    /// Why there is no measurement, or a remark.
    pub note: String,
}

impl Row {
    /// A row with a measured value and no ratio.
    pub fn info(id: &'static str, what: impl Into<String>, measured: impl Into<String>) -> Self {
        Self {
            id,
            what: what.into(),
            measured: measured.into(),
            ratio: None,
            target: Target::None,
            note: String::new(),
        }
    }

    /// A row checked against a target.
    pub fn checked(
        id: &'static str,
        what: impl Into<String>,
        measured: impl Into<String>,
        ratio: f64,
        target: Target,
    ) -> Self {
        Self {
            id,
            what: what.into(),
            measured: measured.into(),
            ratio: Some(ratio),
            target,
            note: String::new(),
        }
    }

    /// A row that could not be measured, with the reason.
    pub fn not_available(
        id: &'static str,
        what: impl Into<String>,
        why: impl Into<String>,
    ) -> Self {
        Self {
            id,
            what: what.into(),
            measured: "n/a".to_owned(),
            ratio: None,
            target: Target::None,
            note: why.into(),
        }
    }

    /// Adds a remark.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// `Some(true)` if the target is met, `Some(false)` if missed, `None` without a target.
    pub fn met(&self) -> Option<bool> {
        self.ratio.and_then(|r| self.target.met(r))
    }
}

/// Renders rows as a Markdown table (readable in a terminal and pasteable into
/// BENCHMARKS.md).
pub fn table(rows: &[Row]) -> String {
    let header = [
        "id", "workload", "measured", "ratio", "target", "met", "note",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.id.to_owned(),
                r.what.clone(),
                r.measured.clone(),
                r.ratio.map(|v| format!("{v:.2}")).unwrap_or_default(),
                r.target.text(),
                match r.met() {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "**MISSED**".to_owned(),
                    None => String::new(),
                },
                r.note.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        out.push('|');
        for (cell, w) in cells.iter().zip(widths) {
            let pad = w - cell.chars().count();
            let _ = write!(out, " {cell}{} |", " ".repeat(pad));
        }
        out.push('\n');
    };
    line(&mut out, &header.map(str::to_owned));
    out.push('|');
    for w in widths {
        let _ = write!(out, "{}|", "-".repeat(w + 2));
    }
    out.push('\n');
    for row in &cells {
        line(&mut out, row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        let ms = Duration::from_millis;
        assert_eq!(median(&mut [ms(3), ms(1), ms(2)]), ms(2));
        assert_eq!(
            median(&mut [ms(4), ms(1), ms(2), ms(3)]),
            Duration::from_micros(2500)
        );
        assert_eq!(median(&mut []), Duration::ZERO);
        assert_eq!(median_f64(&mut [5.0, 1.0, 3.0]), 3.0);
    }

    #[test]
    fn the_table_marks_misses() {
        let rows = [
            Row::checked("W1", "a", "1 us", 4.0, Target::AtLeast(3.0)),
            Row::checked("W2", "b", "2 ms", 2.0, Target::AtMost(1.5)),
            Row::not_available("W5", "c", "no database"),
        ];
        let text = table(&rows);
        assert!(text.contains("| yes"), "{text}");
        assert!(text.contains("**MISSED**"), "{text}");
        assert!(text.contains("no database"), "{text}");
        assert_eq!(rows.iter().filter(|r| r.met() == Some(false)).count(), 1);
    }
}
