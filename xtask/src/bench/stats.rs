//! Medians and spreads of the raw figures `dataplane_bench` wrote.

use serde_json::Value;

/// The netperf tests, in the order of the tables.
pub const TESTS: &[&str] = &["TCP_RR", "TCP_CRR", "TCP_STREAM", "UDP_RR"];

/// The families compared at each policy count.
pub const FAMILIES: &[&str] = &["palisade", "iptables", "nftables"];

/// Samples of one configuration and test, summarized.
#[derive(Clone, Debug)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub q1: f64,
    pub q3: f64,
    pub n: usize,
    pub failed: usize,
    pub unit: String,
}

impl Summary {
    /// (max - min) / median, in percent.
    pub fn spread_pct(&self) -> f64 {
        100.0 * (self.max - self.min) / self.median
    }

    /// Whether the two min..max ranges overlap: the difference is within what this machine's
    /// noise produced.
    pub fn overlaps(&self, other: &Summary) -> bool {
        self.min <= other.max && other.min <= self.max
    }
}

/// The summary of `family` (with `policies`, if any) on `test`.
pub fn netperf(
    figures: &Value,
    family: &str,
    policies: Option<u64>,
    test: &str,
) -> Option<Summary> {
    let samples: Vec<&Value> = figures["netperf"]
        .as_array()?
        .iter()
        .filter(|s| {
            s["family"] == family && s["policies"].as_u64() == policies && s["test"] == test
        })
        .collect();
    let mut values: Vec<f64> = samples.iter().filter_map(|s| s["value"].as_f64()).collect();
    let failed = samples.len() - values.len();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let unit = samples
        .iter()
        .find_map(|s| s["unit"].as_str().filter(|u| !u.is_empty()))
        .unwrap_or("")
        .to_owned();
    Some(Summary {
        median: quantile(&values, 0.5),
        min: values[0],
        max: values[values.len() - 1],
        q1: quantile(&values, 0.25),
        q3: quantile(&values, 0.75),
        n: values.len(),
        failed,
        unit,
    })
}

/// Linear interpolation between closest ranks, on sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The policy counts measured, ascending.
pub fn counts(figures: &Value) -> Vec<u64> {
    let mut out: Vec<u64> = figures["netperf"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["policies"].as_u64())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Per-packet nanoseconds of `path` at `policies`.
pub fn per_packet(figures: &Value, policies: u64, path: &str) -> Option<f64> {
    figures["per_packet"]
        .as_array()?
        .iter()
        .find(|r| r["policies"].as_u64() == Some(policies) && r["path"] == path)
        .and_then(|r| r["ns"].as_f64())
}

/// The per-packet paths, in the order measured.
pub fn per_packet_paths(figures: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in figures["per_packet"].as_array().into_iter().flatten() {
        if let Some(path) = r["path"].as_str()
            && !out.iter().any(|p| p == path)
        {
            out.push(path.to_owned());
        }
    }
    out
}

/// The policy counts of the per-packet series.
pub fn per_packet_counts(figures: &Value) -> Vec<u64> {
    let mut out: Vec<u64> = figures["per_packet"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["policies"].as_u64())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}
