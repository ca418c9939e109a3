//! How BENCHMARKS.md writes a figure: values, ratios as percentages, table rows.

use std::fmt::Write as _;

use serde_json::Value;

use super::stats::Summary;

/// The per-packet "small constant" of the targets: conntrack hit minus empty program.
pub(super) const SMALL_CONSTANT_NS: f64 = 50.0;

pub(super) fn s(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

pub(super) fn fmt_value(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

pub(super) fn pct(ratio: f64) -> String {
    format!("{:+.1}%", (ratio - 1.0) * 100.0)
}

pub(super) fn row(md: &mut String, name: &str, s: &Summary, floor: Option<&Summary>) {
    let ratio = floor.map_or("".to_owned(), |fl| format!("{:.3}", s.median / fl.median));
    let failed = if s.failed > 0 {
        format!(" ({} failed)", s.failed)
    } else {
        String::new()
    };
    let _ = writeln!(
        md,
        "| {name} | {} | {} .. {} | {} .. {} | {:.1}% | {ratio} | {}{failed} |",
        fmt_value(s.median),
        fmt_value(s.min),
        fmt_value(s.max),
        fmt_value(s.q1),
        fmt_value(s.q3),
        s.spread_pct(),
        s.n
    );
}
