//! The before-and-after section of BENCHMARKS.md: this run's ratios beside the previous full
//! run's (`bench/figures-2026-11-30.json`), for the per-packet rows and the netperf
//! configurations both have. Ratios only: absolute nanoseconds and transaction rates differ
//! between runs and machines, a ratio to a baseline measured in the same run does not.

use std::fmt::Write as _;

use serde_json::Value;

use super::{
    format::interval,
    stats::{self, FAMILIES, FloorRatio, TESTS},
};

/// The file the previous run's figures are kept in, under `bench/`.
pub(super) const BEFORE_FILE: &str = "figures-2026-11-30.json";

/// Rows renamed since: (name in the previous figures, name now).
const RENAMED: [(&str, &str); 1] = [("conntrack hit", "conntrack hit, TCP forward")];

pub(super) fn before_and_after(md: &mut String, before: &Value, after: &Value) {
    let _ = writeln!(
        md,
        "## Before and after\n\nThe previous full run (`bench/{BEFORE_FILE}`) beside this one, \
         ratios only. The previous run had no pairs: its netperf ratio is the ratio of the \
         medians (its floor on the same node, measured in separate rounds), this run's the \
         paired geometric mean with its 95% interval. Its per-packet ratios are of single \
         measurements, this run's the median over alternations.\n"
    );
    per_packet(md, before, after);
    netperf(md, before, after);
}

fn per_packet(md: &mut String, before: &Value, after: &Value) {
    let counts: Vec<u64> = stats::per_packet_counts(after)
        .into_iter()
        .filter(|n| stats::per_packet_counts(before).contains(n))
        .collect();
    let mut rows = Vec::new();
    for path in stats::per_packet_paths(after) {
        let old = RENAMED
            .iter()
            .find(|(_, now)| *now == path)
            .map_or(path.as_str(), |(old, _)| old);
        for &n in &counts {
            if let (Some(b), Some(a)) = (
                stats::per_packet_ratio(before, n, old),
                stats::per_packet_ratio(after, n, &path),
            ) {
                rows.push(format!(
                    "| {path} | {n} | {:.2}x | {:.2}x ({:.2} .. {:.2}) |",
                    b.median, a.median, a.min, a.max
                ));
            }
        }
    }
    if rows.is_empty() {
        let _ = writeln!(
            md,
            "No per-packet row at a policy count both runs measured.\n"
        );
        return;
    }
    let _ = writeln!(
        md,
        "### Per-packet, times the empty program\n\n| path | policies | before | after |\n\
         |---|---|---|---|\n{}\n",
        rows.join("\n")
    );
}

fn netperf(md: &mut String, before: &Value, after: &Value) {
    let mut configs: Vec<(&str, Option<u64>, String)> =
        vec![("allow-all", None, "Palisade, allow-all".to_owned())];
    for n in stats::counts(after) {
        for family in FAMILIES {
            configs.push((*family, Some(n), format!("{family}, {n} policies")));
        }
    }
    let mut rows = Vec::new();
    for test in TESTS {
        for (family, n, name) in &configs {
            let (Some(b), Some(a)) = (
                stats::floor_ratio(before, family, *n, test),
                stats::floor_ratio(after, family, *n, test),
            ) else {
                continue;
            };
            let after_cell = match a {
                FloorRatio::Paired(i) => format!("{:.3} ({})", i.estimate, interval(&i)),
                FloorRatio::Medians(r) => format!("{r:.3} (medians)"),
            };
            rows.push(format!(
                "| {test} | {name} | {:.3} | {after_cell} |",
                b.estimate()
            ));
        }
    }
    if rows.is_empty() {
        let _ = writeln!(md, "No netperf configuration both runs measured.\n");
        return;
    }
    let _ = writeln!(
        md,
        "### netperf, ratio to the floor\n\n| test | configuration | before (medians) | after \
         (paired, 95% CI) |\n|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
}
