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

/// The two-sided 95% quantile of Student's t with `df` degrees of freedom (`df` >= 1); past 30,
/// the value of the next tabulated `df` below, which errs on the wide side.
pub fn t975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df - 1],
        31..=39 => 2.042,
        40..=59 => 2.021,
        60..=119 => 2.000,
        120..=999 => 1.980,
        _ => 1.960,
    }
}

/// A ratio with its 95% confidence interval (`lo`, `hi` NaN with fewer than two samples).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub estimate: f64,
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
}

impl Interval {
    /// Half the interval's width relative to the estimate, in percent (NaN without one).
    pub fn half_width_pct(&self) -> f64 {
        100.0 * (self.hi - self.lo) / 2.0 / self.estimate
    }
}

/// The geometric mean of `ratios` with the t-interval of their logarithms, taken back: a
/// ratio's noise is multiplicative (a run 5% slow is 5% slow whatever the rate), and the
/// logarithm makes it additive and symmetric (1.05 and 1/1.05 weigh alike). None when empty
/// or when a ratio is not positive.
pub fn geometric_interval(ratios: &[f64]) -> Option<Interval> {
    if ratios.is_empty()
        || ratios
            .iter()
            .any(|r| r.is_nan() || *r <= 0.0 || r.is_infinite())
    {
        return None;
    }
    let n = ratios.len();
    let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
    let mean = logs.iter().sum::<f64>() / n as f64;
    let (lo, hi) = if n < 2 {
        (f64::NAN, f64::NAN)
    } else {
        let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let half = t975(n - 1) * (var / n as f64).sqrt();
        ((mean - half).exp(), (mean + half).exp())
    };
    Some(Interval {
        estimate: mean.exp(),
        lo,
        hi,
        n,
    })
}

/// A configuration's figure against the floor: from the pairs of this run's layout, or, for a
/// run without pairs (before the floor node), the ratio of the medians.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FloorRatio {
    Paired(Interval),
    Medians(f64),
}

impl FloorRatio {
    pub fn estimate(&self) -> f64 {
        match self {
            Self::Paired(i) => i.estimate,
            Self::Medians(r) => *r,
        }
    }
}

/// The ratios measured / floor of each complete pair of `family` (with `policies`) on `test`.
pub fn paired_ratios(figures: &Value, family: &str, policies: Option<u64>, test: &str) -> Vec<f64> {
    figures["netperf"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            s["family"] == family && s["policies"].as_u64() == policies && s["test"] == test
        })
        .filter_map(|s| Some(s["value"].as_f64()? / s["floor"].as_f64()?))
        .collect()
}

/// `family` against the floor on `test`: paired when the figures have pairs, else medians.
pub fn floor_ratio(
    figures: &Value,
    family: &str,
    policies: Option<u64>,
    test: &str,
) -> Option<FloorRatio> {
    let ratios = paired_ratios(figures, family, policies, test);
    if let Some(interval) = geometric_interval(&ratios) {
        return Some(FloorRatio::Paired(interval));
    }
    let measured = netperf(figures, family, policies, test)?;
    let floor = netperf(figures, "floor", None, test)?;
    Some(FloorRatio::Medians(measured.median / floor.median))
}

/// The floor node's members of the pairs on `test`, summarized: of every pair, or of those of
/// one configuration (`family`, `policies`).
pub fn floor_node(
    figures: &Value,
    test: &str,
    config: Option<(&str, Option<u64>)>,
) -> Option<Summary> {
    let samples: Vec<&Value> = figures["netperf"]
        .as_array()?
        .iter()
        .filter(|s| s["test"] == test && s.get("floor").is_some())
        .filter(|s| {
            config.is_none_or(|(family, policies)| {
                s["family"] == family && s["policies"].as_u64() == policies
            })
        })
        .collect();
    let mut values: Vec<f64> = samples.iter().filter_map(|s| s["floor"].as_f64()).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(Summary {
        median: quantile(&values, 0.5),
        min: values[0],
        max: values[values.len() - 1],
        q1: quantile(&values, 0.25),
        q3: quantile(&values, 0.75),
        n: values.len(),
        failed: samples.len() - values.len(),
        unit: samples
            .iter()
            .find_map(|s| s["unit"].as_str().filter(|u| !u.is_empty()))
            .unwrap_or("")
            .to_owned(),
    })
}

/// A per-packet path against its baseline: the median of the alternations' ratios and their
/// range (one ratio of the two medians for figures without alternations).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

/// The row's baseline in figures that do not name it.
fn default_baseline(path: &str) -> &'static str {
    if path.contains("single") {
        "empty program, single runs"
    } else {
        "empty program"
    }
}

/// `path` at `policies` against the empty program measured in the same mode.
pub fn per_packet_ratio(figures: &Value, policies: u64, path: &str) -> Option<Spread> {
    let row = figures["per_packet"]
        .as_array()?
        .iter()
        .find(|r| r["policies"].as_u64() == Some(policies) && r["path"] == path)?;
    let mut ratios: Vec<f64> = row["pairs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some(p[1].as_f64()? / p[0].as_f64()?))
        .collect();
    if ratios.is_empty() {
        let baseline = row["baseline"]
            .as_str()
            .unwrap_or_else(|| default_baseline(path));
        if baseline == path {
            return None;
        }
        let ratio = row["ns"].as_f64()? / per_packet(figures, policies, baseline)?;
        return Some(Spread {
            median: ratio,
            min: ratio,
            max: ratio,
            n: 1,
        });
    }
    ratios.sort_by(f64::total_cmp);
    Some(Spread {
        median: quantile(&ratios, 0.5),
        min: ratios[0],
        max: ratios[ratios.len() - 1],
        n: ratios.len(),
    })
}

/// A program's nanoseconds per run under netperf (`bpf_stats`), per round: median, min, max.
pub fn program_ns(
    figures: &Value,
    family: &str,
    policies: Option<u64>,
    test: &str,
    program: &str,
) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = figures["bpf_stats"]
        .as_array()?
        .iter()
        .filter(|r| {
            r["family"] == family
                && r["policies"].as_u64() == policies
                && r["test"] == test
                && r["program"] == program
        })
        .filter_map(|r| {
            let count = r["run_cnt"].as_f64().filter(|c| *c > 0.0)?;
            Some(r["run_time_ns"].as_f64()? / count)
        })
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some((quantile(&v, 0.5), v[0], v[v.len() - 1]))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-3
    }

    #[test]
    fn t_quantiles_match_the_table_and_err_wide_past_it() {
        assert!(t975(0).is_nan());
        assert!(close(t975(1), 12.706));
        assert!(close(t975(7), 2.365));
        assert!(close(t975(30), 2.042));
        assert!(close(t975(45), 2.021));
        assert!(close(t975(10_000), 1.960));
    }

    #[test]
    fn the_geometric_mean_of_reciprocal_ratios_is_one() {
        let i = geometric_interval(&[2.0, 0.5]).unwrap();
        assert!(close(i.estimate, 1.0));
        assert!(i.lo < 1.0 && i.hi > 1.0);
        assert_eq!(i.n, 2);
    }

    #[test]
    fn the_interval_is_the_t_interval_of_the_logarithms() {
        // logs 0, ln 1.1, ln 1.21: mean ln 1.1, sd ln 1.1, n 3, t 4.303.
        let i = geometric_interval(&[1.0, 1.1, 1.21]).unwrap();
        let half = 4.303 * 1.1f64.ln() / 3f64.sqrt();
        assert!(close(i.estimate, 1.1));
        assert!(close(i.lo, (1.1f64.ln() - half).exp()));
        assert!(close(i.hi, (1.1f64.ln() + half).exp()));
    }

    #[test]
    fn identical_ratios_have_a_zero_width_interval() {
        let i = geometric_interval(&[0.97; 8]).unwrap();
        assert!(close(i.lo, 0.97) && close(i.hi, 0.97));
        assert!(close(i.half_width_pct(), 0.0));
    }

    #[test]
    fn one_ratio_has_no_interval_and_none_or_a_bad_one_no_figure() {
        let i = geometric_interval(&[0.9]).unwrap();
        assert!(close(i.estimate, 0.9) && i.lo.is_nan() && i.hi.is_nan());
        assert!(geometric_interval(&[]).is_none());
        assert!(geometric_interval(&[1.0, 0.0]).is_none());
        assert!(geometric_interval(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn figures_without_pairs_compare_medians() {
        let f = json!({"netperf": [
            {"family": "floor", "policies": null, "test": "TCP_RR", "value": 100.0},
            {"family": "floor", "policies": null, "test": "TCP_RR", "value": 110.0},
            {"family": "floor", "policies": null, "test": "TCP_RR", "value": 90.0},
            {"family": "allow-all", "policies": null, "test": "TCP_RR", "value": 80.0},
        ]});
        assert_eq!(
            floor_ratio(&f, "allow-all", None, "TCP_RR"),
            Some(FloorRatio::Medians(0.8))
        );
    }

    #[test]
    fn pairs_are_judged_by_their_own_ratios() {
        let f = json!({"netperf": [
            {"family": "palisade", "policies": 1, "test": "TCP_RR", "value": 90.0, "floor": 100.0},
            {"family": "palisade", "policies": 1, "test": "TCP_RR", "value": 45.0, "floor": 50.0},
            {"family": "palisade", "policies": 1, "test": "TCP_RR", "value": null, "floor": 50.0},
        ]});
        let Some(FloorRatio::Paired(i)) = floor_ratio(&f, "palisade", Some(1), "TCP_RR") else {
            panic!("expected pairs");
        };
        assert!(close(i.estimate, 0.9) && close(i.lo, 0.9) && close(i.hi, 0.9));
        assert_eq!(i.n, 2);
        assert_eq!(floor_node(&f, "TCP_RR", None).unwrap().n, 3);
        assert_eq!(
            floor_node(&f, "TCP_RR", Some(("palisade", Some(1))))
                .unwrap()
                .n,
            3
        );
        assert!(floor_node(&f, "TCP_RR", Some(("palisade", Some(2)))).is_none());
    }

    #[test]
    fn per_packet_ratios_come_from_alternations_or_the_baseline_row() {
        let f = json!({"per_packet": [
            {"policies": 1, "path": "empty program", "ns": 40.0},
            {"policies": 1, "path": "conntrack hit", "ns": 400.0},
            {"policies": 1, "path": "conntrack hit, TCP forward", "ns": 120.0,
             "baseline": "empty program", "pairs": [[40.0, 120.0], [50.0, 100.0], [40.0, 160.0]]},
        ]});
        let old = per_packet_ratio(&f, 1, "conntrack hit").unwrap();
        assert!(close(old.median, 10.0) && old.n == 1);
        let new = per_packet_ratio(&f, 1, "conntrack hit, TCP forward").unwrap();
        assert!(close(new.median, 3.0) && close(new.min, 2.0) && close(new.max, 4.0));
        assert!(per_packet_ratio(&f, 1, "empty program").is_none());
    }

    #[test]
    fn program_cost_is_run_time_over_runs() {
        let f = json!({"bpf_stats": [
            {"family": "palisade", "policies": 1, "test": "TCP_RR", "program": "palisade_to_pod",
             "run_time_ns": 1000, "run_cnt": 10},
            {"family": "palisade", "policies": 1, "test": "TCP_RR", "program": "palisade_to_pod",
             "run_time_ns": 3000, "run_cnt": 10},
            {"family": "palisade", "policies": 1, "test": "TCP_RR", "program": "palisade_to_pod",
             "run_time_ns": 0, "run_cnt": 0},
        ]});
        let (median, lo, hi) =
            program_ns(&f, "palisade", Some(1), "TCP_RR", "palisade_to_pod").unwrap();
        assert!(close(median, 200.0) && close(lo, 100.0) && close(hi, 300.0));
    }
}
