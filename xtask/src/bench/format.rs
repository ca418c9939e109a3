//! How BENCHMARKS.md writes a figure: values, ratios as percentages, table rows.

use std::fmt::Write as _;

use serde_json::Value;

use super::stats::{FloorRatio, Interval, Summary};

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

/// A 95% interval and the number of pairs it is from.
pub(super) fn interval(i: &Interval) -> String {
    if i.lo.is_finite() && i.hi.is_finite() {
        format!("{:.3} .. {:.3} ({} pairs)", i.lo, i.hi, i.n)
    } else {
        format!("no interval ({} pair)", i.n)
    }
}

/// A netperf row: the median and range of the measured runs, the ratio to the floor (the
/// paired geometric mean and its interval, or the ratio of medians for figures without pairs),
/// and the floor node's median while this configuration was installed.
pub(super) fn netperf_row(
    md: &mut String,
    name: &str,
    s: &Summary,
    ratio: Option<FloorRatio>,
    floor: Option<&Summary>,
) {
    let failed = if s.failed > 0 {
        format!(" ({} failed)", s.failed)
    } else {
        String::new()
    };
    let (estimate, ci) = match ratio {
        Some(FloorRatio::Paired(i)) => (format!("{:.3}", i.estimate), interval(&i)),
        Some(FloorRatio::Medians(r)) => (format!("{r:.3}"), "medians, no pairs".to_owned()),
        None => (String::new(), String::new()),
    };
    let _ = writeln!(
        md,
        "| {name} | {} | {} .. {} | {:.1}% | {estimate} | {ci} | {} | {}{failed} |",
        fmt_value(s.median),
        fmt_value(s.min),
        fmt_value(s.max),
        s.spread_pct(),
        floor.map_or(String::new(), |fl| fmt_value(fl.median)),
        s.n
    );
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
