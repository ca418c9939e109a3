//! The targets section of BENCHMARKS.md: issue #15's targets, each with the figure that meets
//! or misses it and how sure that figure is.
//!
//! - per-packet rows are ratios to the empty program over alternations: "met" when every
//!   alternation's ratio is within the target, "met on the median" when only the median is;
//! - netperf figures are paired ratios to the floor with a 95% interval: "met" when the whole
//!   interval clears the target, "met on the point estimate, CI overlaps" when only the
//!   estimate does (and the mirror cases for a miss);
//! - a run without a count the issue names (the quick run measures 1,000 policies only) says
//!   so and judges what it has.

use std::fmt::Write as _;

use serde_json::Value;

use super::{
    format::{fmt_value, interval},
    stats::{self, FloorRatio, Interval, Spread},
};

/// The conntrack-hit rows, each held to [`HIT_BUDGET`].
pub(super) const HIT_ROWS: [&str; 4] = [
    "conntrack hit, TCP forward",
    "conntrack hit, TCP reply",
    "conntrack hit, UDP forward",
    "conntrack hit, UDP reply",
];
const HIT_BUDGET: f64 = 4.0;
const ALLOWED_ROW: &str = "new connection, allowed (single runs)";
const ALLOWED_BUDGET: f64 = 8.0;
const DENIED_ROW: &str = "new connection, denied";
const DENIED_BUDGET: f64 = 5.0;
/// "Unchanged from 1 to 10,000 policies": the ratio at 10,000 over the ratio at 1.
const FLAT: (f64, f64) = (0.9, 1.1);
/// The policy counts the issue names.
const ISSUE_COUNTS: [u64; 2] = [1, 10_000];
/// netperf: each test's least ratio to the floor.
const NETPERF_TARGETS: [(&str, f64); 4] = [
    ("TCP_RR", 0.95),
    ("TCP_CRR", 0.90),
    ("TCP_STREAM", 0.97),
    ("UDP_RR", 0.97),
];

pub(super) fn targets(md: &mut String, f: &Value) {
    let _ = writeln!(
        md,
        "## Targets\n\nIssue #15's targets against this run. Per-packet figures are ratios to \
         the empty program run in the same mode, the median over alternations with their \
         min .. max: \"met\" when every alternation is within the target. netperf figures are \
         ratios to the floor node: the geometric mean of paired ratios with its 95% confidence \
         interval: \"met\" only when the whole interval clears the target.\n\n\
         | target | measured | interval or spread | |\n|---|---|---|---|"
    );
    per_packet_targets(md, f, "");
    let events = serde_json::json!({ "per_packet": f["per_packet_events"] });
    if !stats::per_packet_counts(&events).is_empty() {
        per_packet_targets(md, &events, ", flow events on");
    }
    netperf_targets(md, f);
    md.push('\n');
    resolution(md, f);
}

/// The counts to judge per-packet targets at: the issue's where measured, else all measured.
fn judged_counts(measured: &[u64]) -> (Vec<u64>, bool) {
    let issue: Vec<u64> = ISSUE_COUNTS
        .iter()
        .copied()
        .filter(|n| measured.contains(n))
        .collect();
    if issue.is_empty() {
        (measured.to_vec(), false)
    } else {
        (issue, true)
    }
}

/// The per-packet targets judged on `f`'s `per_packet` rows; `state` names how they differ from
/// the main series (empty for it).
fn per_packet_targets(md: &mut String, f: &Value, state: &str) {
    let measured = stats::per_packet_counts(f);
    if measured.is_empty() {
        return;
    }
    let (counts, issue) = judged_counts(&measured);
    let note = if issue {
        String::new()
    } else {
        " (the issue's 1 and 10,000 not measured in this run)".to_owned()
    };
    let mut rows: Vec<(&str, &str, f64)> = HIT_ROWS
        .iter()
        .map(|r| (*r, "empty program", HIT_BUDGET))
        .collect();
    rows.push((ALLOWED_ROW, "empty program, single runs", ALLOWED_BUDGET));
    rows.push((DENIED_ROW, "empty program", DENIED_BUDGET));
    for (path, baseline, budget) in rows {
        for &n in &counts {
            let target = format!("{path} <= {budget}x {baseline}, {n} policies{state}{note}");
            let Some(s) = stats::per_packet_ratio(f, n, path) else {
                let _ = writeln!(md, "| {target} | not measured | | |");
                continue;
            };
            let _ = writeln!(
                md,
                "| {target} | {:.2}x | {:.2} .. {:.2} ({} alternations) | {} |",
                s.median,
                s.min,
                s.max,
                s.n,
                budget_verdict(&s, budget)
            );
        }
    }
    let (Some(lo), Some(hi)) = (
        measured.iter().find(|&&n| n == 1),
        measured.iter().find(|&&n| n == 10_000),
    ) else {
        let _ = writeln!(
            md,
            "| per-packet unchanged from 1 to 10,000 policies{state} (ratio at 10,000 / ratio \
             at 1 within {:.1} .. {:.1}) | not measured: this run has {measured:?} | | |",
            FLAT.0, FLAT.1
        );
        return;
    };
    let mut cells = Vec::new();
    let mut flat = true;
    for path in stats::per_packet_paths(f) {
        let (Some(a), Some(b)) = (
            stats::per_packet_ratio(f, *lo, &path),
            stats::per_packet_ratio(f, *hi, &path),
        ) else {
            continue;
        };
        let change = b.median / a.median;
        flat &= (FLAT.0..=FLAT.1).contains(&change);
        cells.push(format!("{path} {change:.2}"));
    }
    let _ = writeln!(
        md,
        "| per-packet unchanged from 1 to 10,000 policies{state} (ratio at 10,000 / ratio at 1 \
         within {:.1} .. {:.1}, each row) | {} | medians | {} |",
        FLAT.0,
        FLAT.1,
        cells.join("; "),
        if flat { "met" } else { "missed" }
    );
}

/// A per-packet ratio against a budget (at most `budget` times the baseline).
pub(super) fn budget_verdict(s: &Spread, budget: f64) -> &'static str {
    if s.max <= budget {
        "met"
    } else if s.median <= budget {
        "met on the median, not in every alternation"
    } else if s.min <= budget {
        "missed on the median, met in some alternations"
    } else {
        "missed"
    }
}

/// A paired ratio against a least value.
pub(super) fn floor_verdict(i: &Interval, least: f64) -> &'static str {
    if i.lo >= least {
        "met"
    } else if i.estimate >= least {
        "met on the point estimate, CI overlaps"
    } else if i.hi >= least {
        "missed on the point estimate, CI overlaps"
    } else {
        "missed"
    }
}

fn netperf_targets(md: &mut String, f: &Value) {
    let counts = stats::counts(f);
    let max_n = counts.last().copied();
    let mut configs = vec![("allow-all", None, "Palisade allow-all".to_owned())];
    if let Some(n) = max_n {
        let note = if n == 10_000 {
            String::new()
        } else {
            " (the issue's 10,000 not measured in this run)".to_owned()
        };
        configs.push(("palisade", Some(n), format!("Palisade {n} policies{note}")));
    }
    for (test, least) in NETPERF_TARGETS {
        for (family, policies, name) in &configs {
            let target = format!("{test} >= {least:.2} of the floor, {name}");
            match stats::floor_ratio(f, family, *policies, test) {
                Some(FloorRatio::Paired(i)) => {
                    let _ = writeln!(
                        md,
                        "| {target} | {:.3} | {} | {} |",
                        i.estimate,
                        interval(&i),
                        floor_verdict(&i, least)
                    );
                }
                Some(FloorRatio::Medians(r)) => {
                    let verdict = if r >= least { "met" } else { "missed" };
                    let _ = writeln!(
                        md,
                        "| {target} | {r:.3} | medians, no pairs | {verdict} (no interval) |"
                    );
                }
                None => {
                    let _ = writeln!(md, "| {target} | not measured | | |");
                }
            }
        }
    }
    let mut cells = Vec::new();
    let mut clear = true;
    let mut ahead = true;
    for &n in counts.iter().filter(|&&n| n >= 100) {
        let Some(FloorRatio::Paired(pal)) = stats::floor_ratio(f, "palisade", Some(n), "TCP_CRR")
        else {
            continue;
        };
        for other in ["iptables", "nftables"] {
            let Some(FloorRatio::Paired(o)) = stats::floor_ratio(f, other, Some(n), "TCP_CRR")
            else {
                continue;
            };
            // A configuration that slowed the floor node too would be flattered by its ratio
            // (see the netperf section): Palisade must be ahead on the medians too.
            let medians = stats::netperf(f, "palisade", Some(n), "TCP_CRR")
                .zip(stats::netperf(f, other, Some(n), "TCP_CRR"))
                .map(|(p, o)| (p.median, o.median));
            let median_ahead = medians.is_some_and(|(p, o)| p > o);
            ahead &= pal.estimate > o.estimate && median_ahead;
            clear &= pal.lo > o.hi;
            let (pm, om) = medians.unwrap_or((f64::NAN, f64::NAN));
            cells.push(format!(
                "{n}: {:.3} vs {other} {:.3} (medians {} vs {})",
                pal.estimate,
                o.estimate,
                fmt_value(pm),
                fmt_value(om)
            ));
        }
    }
    if !cells.is_empty() {
        let verdict = match (ahead, clear) {
            (true, true) => "met",
            (true, false) => "met on the point estimates, CIs overlap",
            _ => "missed",
        };
        let _ = writeln!(
            md,
            "| Palisade ahead of iptables + ipset and nftables on TCP_CRR at every count >= 100 \
             | {} | ratios to the floor and medians; met only if the intervals are apart | \
             {verdict} |",
            cells.join("; ")
        );
    }
}

/// How sure the netperf figures are: the method's own check and the intervals' widths.
fn resolution(md: &mut String, f: &Value) {
    let mut checks = Vec::new();
    let mut widths: Vec<f64> = Vec::new();
    for test in stats::TESTS {
        if let Some(FloorRatio::Paired(i)) = stats::floor_ratio(f, "floor", None, test) {
            checks.push(format!("{test} {:.3} {}", i.estimate, interval(&i)));
        }
    }
    for s in f["netperf"].as_array().into_iter().flatten() {
        let (Some(family), Some(test)) = (s["family"].as_str(), s["test"].as_str()) else {
            continue;
        };
        if s["pair"].as_u64() != Some(0) || s["round"].as_u64() != Some(0) {
            continue;
        }
        if let Some(FloorRatio::Paired(i)) =
            stats::floor_ratio(f, family, s["policies"].as_u64(), test)
            && i.half_width_pct().is_finite()
        {
            widths.push(i.half_width_pct());
        }
    }
    if checks.is_empty() {
        return;
    }
    widths.sort_by(f64::total_cmp);
    let _ = writeln!(
        md,
        "How sure the netperf ratios are: the measured node with nothing installed against the \
         floor node (the method's own check; 1 should be inside every interval): {}. The 95% \
         intervals of all configurations are +/- {:.1}% wide at the median, {:.1}% .. {:.1}% \
         (half-widths).\n",
        checks.join(", "),
        stats::quantile(&widths, 0.5),
        widths.first().copied().unwrap_or(f64::NAN),
        widths.last().copied().unwrap_or(f64::NAN),
    );
}
