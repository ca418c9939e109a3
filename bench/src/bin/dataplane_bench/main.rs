//! The dataplane benchmark (run by `cargo xtask bench`, as root): netperf between two lab pods
//! through the floor (no programs), Palisade, iptables + ipset and nftables at several policy
//! counts, each run paired with a run through a second node nothing is installed on
//! (`series.rs`), with the programs' run time per packet from the kernel's BPF statistics;
//! the programs' per-packet cost with BPF_PROG_TEST_RUN against the empty program; the control
//! plane against the kernel (compile, write, policy change to map write, map memory). Writes
//! the raw figures as JSON; `xtask/src/bench/` turns them into BENCHMARKS.md and plots.
//!
//! Usage: `dataplane_bench [--quick] [--per-packet-only [--flow-events]] --out FILE`
//!
//! `--per-packet-only` runs only the BPF_PROG_TEST_RUN phase, at 1 and 10,000 policies (the
//! counts issue #15's targets name), prints each path's ratio to its baseline, and writes those
//! rows alone: a minute or two, for working on the programs. `--quick` with it makes fewer runs
//! per alternation; `--flow-events` measures it with flow events on at the agent's default
//! budget (the full run measures it with them off).

mod bpf_stats;
mod control;
mod events;
mod filters;
mod netperf;
mod per_packet;
mod series;
mod synth;

use std::{
    collections::BTreeMap,
    env, fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// What one run measures.
/// ClusterNetworkPolicies measured beside the largest NetworkPolicy count.
const CLUSTER_POLICIES: usize = 1_000;

struct Plan {
    /// Policy counts of the netperf and per-packet series.
    counts: &'static [usize],
    /// Peer pods the cluster knows besides the two local ones.
    peers: usize,
    /// Each configuration is installed once per round; within an install, each test runs
    /// `pairs` pairs (measured node, floor node) of `seconds` each.
    rounds: usize,
    pairs: usize,
    seconds: u32,
    /// Whether the flow events configurations are measured.
    flow_events: bool,
    /// Runs of each repeated path in all, split over its alternations with the empty program,
    /// and single runs of the new-flow path.
    repeat: u32,
    singles: u16,
    /// (pods, policies) of the control-plane series.
    control: &'static [(usize, usize)],
    /// Local pods besides the server and the client, in the control-plane series.
    control_extra: usize,
}

/// The netperf phase: 16 configurations x 4 rounds x 4 tests x 2 pairs of 1 s (8 pairs per
/// configuration and test), plus one run per test with BPF statistics on for the 6 Palisade
/// configurations: about 1,200 netperf runs, 22 minutes on two cores.
const FULL: Plan = Plan {
    counts: &[1, 100, 1_000, 10_000],
    peers: 10_000,
    rounds: 4,
    pairs: 2,
    seconds: 1,
    flow_events: true,
    repeat: 5_000_000,
    singles: 20_000,
    control: &[
        (1_000, 100),
        (1_000, 1_000),
        (1_000, 10_000),
        (10_000, 100),
        (10_000, 1_000),
        (10_000, 10_000),
        (50_000, 100),
        (50_000, 1_000),
        (50_000, 10_000),
    ],
    control_extra: 8,
};

/// 5 configurations at 1,000 policies, one round of 3 pairs: about two minutes of netperf.
const QUICK: Plan = Plan {
    counts: &[1_000],
    peers: 10_000,
    rounds: 1,
    pairs: 3,
    seconds: 1,
    flow_events: false,
    repeat: 1_000_000,
    singles: 2_000,
    control: &[(1_000, 100)],
    control_extra: 8,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Family {
    Floor,
    AllowAll,
    Palisade,
    Iptables,
    Nftables,
    /// Palisade with flow events off in the kernel (the others have them on, read and named
    /// by a thread as the agent would, within the default budget of 100 per source per second).
    EventsOff,
    /// Palisade with flow events on and no budget: every new connection sent and named.
    EventsAll,
}

#[derive(Clone, Copy, Debug, Serialize)]
struct Config {
    family: Family,
    policies: Option<usize>,
}

#[derive(Serialize)]
struct Machine {
    cpu: String,
    cpus: usize,
    kernel: String,
    loadavg_start: String,
    loadavg_end: String,
}

#[derive(Serialize)]
struct Report {
    quick: bool,
    machine: Machine,
    peers: usize,
    rounds: usize,
    pairs: usize,
    seconds_per_test: u32,
    crr_transactions: u64,
    netperf: Vec<series::Sample>,
    setup: Vec<series::Setup>,
    events: Vec<series::Events>,
    bpf_stats: Vec<series::ProgramRun>,
    per_packet: Vec<per_packet::PerPacket>,
    /// The per-packet paths at the largest policy count with [`CLUSTER_POLICIES`]
    /// ClusterNetworkPolicies beside them.
    per_packet_tiers: Vec<per_packet::PerPacket>,
    /// The per-packet paths with flow events on at the agent's default budget, as the netperf
    /// runs have them (the `per_packet` rows have them off), at the least and largest count.
    per_packet_events: Vec<per_packet::PerPacket>,
    control: Vec<control::ControlPlane>,
    phase_seconds: BTreeMap<&'static str, f64>,
}

fn main() -> Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let usage = "usage: dataplane_bench [--quick] [--per-packet-only [--flow-events]] --out FILE";
    let (mut quick, mut per_packet_only, mut events, mut out) = (false, false, false, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--per-packet-only" => per_packet_only = true,
            "--flow-events" => events = true,
            "--out" => out = args.next().map(PathBuf::from),
            _ => bail!("{usage}"),
        }
    }
    let Some(out) = out else {
        bail!("{usage}");
    };
    let plan = if quick { &QUICK } else { &FULL };
    if !nix::unistd::Uid::effective().is_root() {
        bail!("run as root: the benchmark creates network namespaces and loads eBPF programs");
    }
    if per_packet_only {
        return per_packet_only_run(plan, events, &out);
    }
    if events {
        bail!("{usage}");
    }
    let loadavg_start = loadavg();
    let mut phases = BTreeMap::new();
    let configs = configs(plan);
    let steps = plan.counts.len() + 1 + plan.control.len() + plan.rounds * configs.len();
    let bar = ProgressBar::new(u64::try_from(steps)?).with_style(ProgressStyle::with_template(
        "[bench] {bar:30} {pos}/{len} {elapsed_precise} {msg}",
    )?);
    bar.enable_steady_tick(Duration::from_millis(500));

    let start = Instant::now();
    // The paths at `policies` NetworkPolicies and `cluster_policies` ClusterNetworkPolicies,
    // flow events on or off.
    let measure = |policies, cluster_policies, events| {
        per_packet::measure(
            plan.peers,
            (policies, cluster_policies),
            plan.repeat,
            plan.singles,
            events,
        )
    };
    let mut per_packet = Vec::new();
    for &n in plan.counts {
        bar.set_message(format!("BPF_PROG_TEST_RUN, {n} policies"));
        per_packet.extend(measure(n, 0, false)?);
        bar.inc(1);
    }
    // The largest count again with 1,000 ClusterNetworkPolicies beside it, measured right
    // after it.
    let most = plan.counts.iter().copied().max().unwrap_or(1);
    bar.set_message(format!(
        "BPF_PROG_TEST_RUN, {most} policies and {CLUSTER_POLICIES} ClusterNetworkPolicies"
    ));
    let per_packet_tiers = measure(most, CLUSTER_POLICIES, false)?;
    bar.inc(1);
    let mut per_packet_events = Vec::new();
    if plan.flow_events {
        let least = plan.counts.iter().copied().min().unwrap_or(1);
        let mut counts = vec![least, most];
        counts.dedup();
        for n in counts {
            bar.set_message(format!("BPF_PROG_TEST_RUN, {n} policies, flow events on"));
            per_packet_events.extend(measure(n, 0, true)?);
        }
    }
    phases.insert("per-packet", start.elapsed().as_secs_f64());

    let start = Instant::now();
    let mut control = Vec::new();
    for &(pods, policies) in plan.control {
        bar.set_message(format!("control plane, {pods} pods x {policies} policies"));
        control.push(control::measure(pods, policies, plan.control_extra)?);
        bar.inc(1);
    }
    phases.insert("control plane", start.elapsed().as_secs_f64());

    let start = Instant::now();
    let series = series::run(plan, &configs, &bar)?;
    phases.insert("netperf", start.elapsed().as_secs_f64());
    bar.finish_and_clear();

    let report = Report {
        quick: plan.rounds == QUICK.rounds && plan.counts == QUICK.counts,
        machine: Machine {
            cpu: cpu_model(),
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            loadavg_start,
            loadavg_end: loadavg(),
        },
        peers: plan.peers,
        rounds: plan.rounds,
        pairs: plan.pairs,
        seconds_per_test: plan.seconds,
        crr_transactions: series.crr_transactions,
        netperf: series.samples,
        setup: series.setups,
        events: series.events,
        bpf_stats: series.programs,
        per_packet,
        per_packet_tiers,
        per_packet_events,
        control,
        phase_seconds: phases,
    };
    fs::write(&out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("[bench] figures written to {}", out.display());
    Ok(())
}

/// The policy counts of `--per-packet-only`: those issue #15's targets name.
const PER_PACKET_ONLY_COUNTS: [usize; 2] = [1, 10_000];

/// `--per-packet-only`: the BPF_PROG_TEST_RUN phase alone, its ratios printed, its rows
/// written (`per_packet` only, in the full report's shape).
fn per_packet_only_run(plan: &Plan, events: bool, out: &std::path::Path) -> Result<()> {
    let start = Instant::now();
    let mut rows = Vec::new();
    for n in PER_PACKET_ONLY_COUNTS {
        eprintln!("[bench] BPF_PROG_TEST_RUN, {n} policies");
        rows.extend(per_packet::measure(
            plan.peers,
            (n, 0),
            plan.repeat,
            plan.singles,
            events,
        )?);
    }
    eprintln!(
        "[bench] per-packet phase: {:.1} s, load average {}",
        start.elapsed().as_secs_f64(),
        loadavg()
    );
    for row in &rows {
        eprintln!("{}", per_packet::summary(row, &rows));
    }
    let report = serde_json::json!({
        "quick": plan.rounds == QUICK.rounds,
        "per_packet_only": true,
        "flow_events": events,
        "per_packet": rows,
    });
    fs::write(out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("[bench] figures written to {}", out.display());
    Ok(())
}

/// The floor (nothing installed on the measured node either: the pairs' own check) and
/// Palisade allow-all once, then Palisade, iptables and nftables at each count.
fn configs(plan: &Plan) -> Vec<Config> {
    let counts = plan.counts;
    let mut out = vec![
        Config {
            family: Family::Floor,
            policies: None,
        },
        Config {
            family: Family::AllowAll,
            policies: None,
        },
    ];
    for &n in counts {
        for family in [Family::Palisade, Family::Iptables, Family::Nftables] {
            out.push(Config {
                family,
                policies: Some(n),
            });
        }
    }
    // The cost of flow events, at the largest count.
    if let Some(&n) = counts.last().filter(|_| plan.flow_events) {
        for family in [Family::EventsOff, Family::EventsAll] {
            out.push(Config {
                family,
                policies: Some(n),
            });
        }
    }
    out
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into())
}
