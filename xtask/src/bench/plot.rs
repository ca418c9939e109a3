//! SVG plots, rendered with plotters (no fonts needed): each netperf figure against the policy
//! count for Palisade, iptables and nftables, the floor as a line, medians joined and min..max
//! as bars; and the programs' per-packet cost (times the empty program) against the policy
//! count.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use serde_json::Value;

use super::stats::{self, FAMILIES, TESTS};

const COLORS: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// Renders every plot into `dir`; returns the files written.
pub fn all(figures: &Value, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let counts = stats::counts(figures);
    if !counts.is_empty() {
        for test in TESTS {
            let path = dir.join(format!("{}.svg", test.to_lowercase()));
            netperf(figures, test, &counts, &path)?;
            out.push(path);
        }
    }
    let pp_counts = stats::per_packet_counts(figures);
    if !pp_counts.is_empty() {
        let path = dir.join("per_packet.svg");
        per_packet(figures, &pp_counts, &path)?;
        out.push(path);
    }
    Ok(out)
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plotting: {e}")
}

/// The x range of a log axis over the policy counts, with a margin either side.
fn x_range(counts: &[u64]) -> std::ops::Range<f64> {
    let lo = counts.first().copied().unwrap_or(1).max(1) as f64;
    let hi = counts.last().copied().unwrap_or(10).max(2) as f64;
    (lo / 2.0)..(hi * 2.0)
}

fn netperf(figures: &Value, test: &str, counts: &[u64], path: &Path) -> Result<()> {
    let floor = stats::netperf(figures, "floor", None, test);
    let series: Vec<(&str, Vec<(f64, stats::Summary)>)> = FAMILIES
        .iter()
        .map(|family| {
            let points = counts
                .iter()
                .filter_map(|&n| {
                    stats::netperf(figures, family, Some(n), test).map(|s| (n as f64, s))
                })
                .collect();
            (*family, points)
        })
        .collect();
    let unit = floor
        .as_ref()
        .map(|s| s.unit.clone())
        .or_else(|| {
            series
                .iter()
                .flat_map(|(_, p)| p)
                .map(|(_, s)| s.unit.clone())
                .next()
        })
        .unwrap_or_default();
    let top = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, s)| s.max))
        .chain(floor.iter().map(|s| s.max))
        .fold(0.0, f64::max)
        * 1.1;

    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("netperf {test} between two lab pods"),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range(counts).log_scale(), 0.0..top.max(1.0))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("NetworkPolicies (log scale)")
        .y_desc(format!("{unit}, median and min..max"))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(err)?;
    let range = x_range(counts);
    if let Some(floor) = &floor {
        let color = COLORS[3];
        chart
            .draw_series(LineSeries::new(
                [(range.start, floor.median), (range.end, floor.median)],
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label("floor (no programs)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    if let Some(allow) = stats::netperf(figures, "allow-all", None, test) {
        let color = COLORS[4];
        chart
            .draw_series(LineSeries::new(
                [(range.start, allow.median), (range.end, allow.median)],
                color.stroke_width(1),
            ))
            .map_err(err)?
            .label("Palisade, allow-all")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(1)));
    }
    for (i, (family, points)) in series.iter().enumerate() {
        let color = COLORS[i];
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|(x, s)| (*x, s.median)),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(*family)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(
                points
                    .iter()
                    .map(|(x, s)| Circle::new((*x, s.median), 4, color.filled())),
            )
            .map_err(err)?;
        chart
            .draw_series(
                points.iter().map(|(x, s)| {
                    PathElement::new([(*x, s.min), (*x, s.max)], color.stroke_width(1))
                }),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn per_packet(figures: &Value, counts: &[u64], path: &Path) -> Result<()> {
    // The baselines themselves (ratio 1) are not drawn.
    let paths: Vec<String> = stats::per_packet_paths(figures)
        .into_iter()
        .filter(|p| {
            counts
                .iter()
                .any(|&n| stats::per_packet_ratio(figures, n, p).is_some())
        })
        .collect();
    let ratio = |n: u64, p: &str| stats::per_packet_ratio(figures, n, p).map(|r| r.median);
    let top = paths
        .iter()
        .flat_map(|p| counts.iter().filter_map(|&n| ratio(n, p)))
        .fold(0.0, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Per-packet cost against the empty program, BPF_PROG_TEST_RUN",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range(counts).log_scale(), 0.0..top.max(1.0))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("NetworkPolicies (log scale)")
        .y_desc("times the empty program (median)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(err)?;
    for (i, name) in paths.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = counts
            .iter()
            .filter_map(|&n| ratio(n, name).map(|r| (n as f64, r)))
            .collect();
        let dashed = name.contains("single");
        let width = if dashed { 1 } else { 2 };
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(width)))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], color.stroke_width(width))
            });
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
