//! The targets section of BENCHMARKS.md: each target with the figure that meets or misses it.

use std::fmt::Write as _;

use serde_json::Value;

use super::{
    format::{SMALL_CONSTANT_NS, fmt_value, pct},
    stats::{self, TESTS},
};

pub(super) fn targets(md: &mut String, f: &Value) {
    let counts = stats::counts(f);
    let Some(&max_n) = counts.last() else {
        return;
    };
    let _ = writeln!(
        md,
        "## Targets\n\nWhat the benchmark issue aims for, against this run. \"Within noise\" means \
         the min..max ranges of the rounds overlap.\n\n| target | measured | |\n|---|---|---|"
    );
    for (test, tolerance) in [("TCP_RR", 0.03), ("TCP_CRR", 0.05)] {
        let floor = stats::netperf(f, "floor", None, test);
        let pal = stats::netperf(f, "palisade", Some(max_n), test);
        let row = match (floor, pal) {
            (Some(floor), Some(pal)) => {
                let ratio = pal.median / floor.median;
                let verdict = if ratio >= 1.0 - tolerance {
                    "met".to_owned()
                } else if pal.overlaps(&floor) {
                    format!(
                        "missed on the medians, within noise (the floor's own spread is {:.0}%)",
                        floor.spread_pct()
                    )
                } else {
                    "missed".to_owned()
                };
                format!(
                    "| Palisade within {:.0}% of the floor on {test}, {max_n} policies | {} of the floor's {} {} | {verdict} |",
                    tolerance * 100.0,
                    pct(ratio),
                    fmt_value(floor.median),
                    floor.unit
                )
            }
            _ => format!(
                "| Palisade within {:.0}% of the floor on {test} | not measured | |",
                tolerance * 100.0
            ),
        };
        let _ = writeln!(md, "{row}");
    }
    if let (Some(&lo), true) = (counts.first(), counts.len() > 1) {
        let mut cells = Vec::new();
        let mut flat = true;
        for test in TESTS {
            if let (Some(a), Some(b)) = (
                stats::netperf(f, "palisade", Some(lo), test),
                stats::netperf(f, "palisade", Some(max_n), test),
            ) {
                let within = a.overlaps(&b);
                flat &= within;
                cells.push(format!(
                    "{test} {}{}",
                    pct(b.median / a.median),
                    if within { "" } else { " (outside noise)" }
                ));
            }
        }
        let _ = writeln!(
            md,
            "| Palisade flat from {lo} to {max_n} policies | {} | {} |",
            cells.join(", "),
            if flat { "met" } else { "missed" }
        );
    }
    let mut behind = Vec::new();
    let mut compared = 0;
    for test in TESTS {
        for &n in counts.iter().filter(|&&n| n >= 100) {
            let Some(pal) = stats::netperf(f, "palisade", Some(n), test) else {
                continue;
            };
            for other in ["iptables", "nftables"] {
                let Some(o) = stats::netperf(f, other, Some(n), test) else {
                    continue;
                };
                compared += 1;
                if pal.median <= o.median {
                    let noise = if pal.overlaps(&o) {
                        ", within noise"
                    } else {
                        ""
                    };
                    behind.push(format!(
                        "{test} at {n} behind {other} ({}{noise})",
                        pct(pal.median / o.median)
                    ));
                }
            }
        }
    }
    if compared > 0 {
        let _ = writeln!(
            md,
            "| Palisade ahead of iptables and nftables at every policy count >= 100 | {} | {} |",
            if behind.is_empty() {
                format!("ahead in all {compared} comparisons (medians)")
            } else {
                format!(
                    "behind in {} of {compared}: {}",
                    behind.len(),
                    behind.join("; ")
                )
            },
            if behind.is_empty() { "met" } else { "missed" }
        );
    }
    let pp = stats::per_packet_counts(f);
    let diffs: Vec<(u64, f64)> = pp
        .iter()
        .filter_map(|&n| {
            let hit = stats::per_packet(f, n, "conntrack hit")?;
            let empty = stats::per_packet(f, n, "empty program")?;
            Some((n, hit - empty))
        })
        .collect();
    if !diffs.is_empty() {
        let worst = diffs.iter().map(|d| d.1).fold(f64::MIN, f64::max);
        let cells: Vec<String> = diffs
            .iter()
            .map(|(n, d)| format!("{d:+.0} ns at {n}"))
            .collect();
        let _ = writeln!(
            md,
            "| Conntrack-hit path within a small constant (taken as {SMALL_CONSTANT_NS:.0} ns) of an empty program | {} | {} |",
            cells.join(", "),
            if worst <= SMALL_CONSTANT_NS {
                "met"
            } else {
                "missed"
            }
        );
    }
    md.push('\n');
}
