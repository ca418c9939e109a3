//! The dataplane benchmark (run by `cargo xtask bench`, as root): netperf between two lab pods
//! through the floor (no programs), Palisade, iptables + ipset and nftables at several policy
//! counts, interleaved and repeated; the programs' per-packet cost with BPF_PROG_TEST_RUN; the
//! control plane against the kernel (compile, write, policy change to map write, map memory).
//! Writes the raw figures as JSON; `xtask/src/bench/` turns them into BENCHMARKS.md and plots.
//!
//! Usage: `dataplane_bench [--quick] --out FILE`

mod control;
mod events;
mod filters;
mod netperf;
mod per_packet;
mod synth;

use std::{
    collections::BTreeMap,
    env, fs,
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use palisade::{
    dataplane::Established,
    k8s::cluster::{Cluster, ObjectKey},
};
use palisade_lab::{
    node::{self, Interface},
    topology::{PodHandle, Topology},
};
use serde::Serialize;

use crate::{
    events::EventReader,
    filters::Filter,
    synth::{CLIENT, NAMESPACE, NODE, SERVER, Scale},
};

/// What one run measures.
struct Plan {
    /// Policy counts of the netperf and per-packet series.
    counts: &'static [usize],
    /// Peer pods the cluster knows besides the two local ones.
    peers: usize,
    rounds: usize,
    seconds: u32,
    /// Runs per BPF_PROG_TEST_RUN call, and single runs of the new-flow path.
    repeat: u32,
    singles: u16,
    /// (pods, policies) of the control-plane series.
    control: &'static [(usize, usize)],
    /// Local pods besides the server and the client, in the control-plane series.
    control_extra: usize,
}

const FULL: Plan = Plan {
    counts: &[1, 100, 1_000, 10_000],
    peers: 10_000,
    rounds: 5,
    seconds: 2,
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

const QUICK: Plan = Plan {
    counts: &[1_000],
    peers: 10_000,
    rounds: 1,
    seconds: 1,
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
struct Sample {
    family: Family,
    policies: Option<usize>,
    test: &'static str,
    round: usize,
    value: Option<f64>,
    unit: String,
    error: Option<String>,
}

#[derive(Serialize)]
struct Setup {
    family: Family,
    policies: Option<usize>,
    seconds: f64,
}

/// The kernel's flow event counters over one configuration's tests, and the records named.
#[derive(Serialize)]
struct Events {
    family: Family,
    policies: Option<usize>,
    round: usize,
    sent: u64,
    suppressed: u64,
    lost: u64,
    named: u64,
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
    seconds_per_test: u32,
    netperf: Vec<Sample>,
    setup: Vec<Setup>,
    events: Vec<Events>,
    per_packet: Vec<per_packet::PerPacket>,
    control: Vec<control::ControlPlane>,
    phase_seconds: BTreeMap<&'static str, f64>,
}

fn main() -> Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let (plan, out) = match args.as_slice() {
        [flag, out] if flag == "--out" => (&FULL, PathBuf::from(out)),
        [quick, flag, out] if quick == "--quick" && flag == "--out" => (&QUICK, PathBuf::from(out)),
        _ => bail!("usage: dataplane_bench [--quick] --out FILE"),
    };
    if !nix::unistd::Uid::effective().is_root() {
        bail!("run as root: the benchmark creates network namespaces and loads eBPF programs");
    }
    let loadavg_start = loadavg();
    let mut phases = BTreeMap::new();
    let configs = configs(plan.counts);
    let steps = plan.counts.len() + plan.control.len() + plan.rounds * configs.len();
    let bar = ProgressBar::new(u64::try_from(steps)?).with_style(ProgressStyle::with_template(
        "[bench] {bar:30} {pos}/{len} {elapsed_precise} {msg}",
    )?);
    bar.enable_steady_tick(Duration::from_millis(500));

    let start = Instant::now();
    let mut per_packet = Vec::new();
    for &n in plan.counts {
        bar.set_message(format!("BPF_PROG_TEST_RUN, {n} policies"));
        per_packet.extend(per_packet::measure(
            plan.peers,
            n,
            plan.repeat,
            plan.singles,
        )?);
        bar.inc(1);
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
    let (netperf, setup, events) = netperf_series(plan, &configs, &bar)?;
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
        seconds_per_test: plan.seconds,
        netperf,
        setup,
        events,
        per_packet,
        control,
        phase_seconds: phases,
    };
    fs::write(&out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("[bench] figures written to {}", out.display());
    Ok(())
}

/// The floor and Palisade allow-all once, then Palisade, iptables and nftables at each count.
fn configs(counts: &[usize]) -> Vec<Config> {
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
    if let Some(&n) = counts.last() {
        for family in [Family::EventsOff, Family::EventsAll] {
            out.push(Config {
                family,
                policies: Some(n),
            });
        }
    }
    out
}

/// What is in place during one configuration's tests; dropping it removes it.
enum Installed {
    Nothing,
    Agent(palisade::node::NodeWorker, EventReader),
    Filter(Filter, PathBuf),
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Self::Filter(filter, netns) = self
            && let Err(e) = filters::remove(*filter, netns)
        {
            eprintln!("[bench] warning: removing {filter:?} rules: {e:#}");
        }
    }
}

fn netperf_series(
    plan: &Plan,
    configs: &[Config],
    bar: &ProgressBar,
) -> Result<(Vec<Sample>, Vec<Setup>, Vec<Events>)> {
    // Every namespace goes with the topology, on every exit path.
    let mut topology = Topology::new()?;
    let node = topology.add_node(NODE, 1)?;
    let server = topology.add_pod(&node, &format!("{NAMESPACE}/server"), &[IpAddr::V4(SERVER)])?;
    let client = topology.add_pod(&node, &format!("{NAMESPACE}/client"), &[IpAddr::V4(CLIENT)])?;
    let interfaces: BTreeMap<ObjectKey, Interface> = [("server", &server), ("client", &client)]
        .into_iter()
        .map(|(name, pod): (&str, &PodHandle)| {
            (
                ObjectKey::new(NAMESPACE, name),
                Interface {
                    ifname: pod.host_ifname.clone(),
                    ifindex: pod.host_ifindex,
                },
            )
        })
        .collect();
    let _netserver = netperf::Netserver::start(server.netns.path())?;

    bar.set_message("synthesizing the clusters");
    let mut clusters: BTreeMap<usize, (Scale, Vec<synth::PolicySpec>, Cluster)> = BTreeMap::new();
    for &n in plan.counts.iter().chain(&[0]) {
        let scale = Scale {
            peers: plan.peers,
            extra: 0,
        };
        let specs = synth::policies(n);
        let cluster = synth::cluster(&scale, &specs)?;
        clusters.insert(n, (scale, specs, cluster));
    }

    let mut samples = Vec::new();
    let mut setups = Vec::new();
    let mut events = Vec::new();
    for round in 0..plan.rounds {
        // ABC..CBA: every configuration sees early and late positions alike.
        let order: Vec<&Config> = if round % 2 == 0 {
            configs.iter().collect()
        } else {
            configs.iter().rev().collect()
        };
        for config in order {
            let label = match config.policies {
                Some(n) => format!("{:?} {n}", config.family),
                None => format!("{:?}", config.family),
            };
            bar.set_message(format!(
                "round {}/{}: netperf, {label}",
                round + 1,
                plan.rounds
            ));
            let start = Instant::now();
            let n = config.policies.unwrap_or(0);
            let (scale, specs, cluster) = clusters
                .get(&n)
                .context("a policy count without its cluster")?;
            let mut installed = match config.family {
                Family::Floor => Installed::Nothing,
                Family::AllowAll | Family::Palisade | Family::EventsOff | Family::EventsAll => {
                    let defaults = palisade::dataplane::FlowSettings::default();
                    let flows = match config.family {
                        Family::EventsOff => palisade::dataplane::FlowSettings {
                            events: false,
                            ..defaults
                        },
                        Family::EventsAll => palisade::dataplane::FlowSettings {
                            events_per_second: u32::MAX,
                            ..defaults
                        },
                        _ => defaults,
                    };
                    let agent = node::start_with_flows(&node, &[], None, Established::Keep, flows)?;
                    let outcome = agent.sync(cluster, interfaces.clone(), Vec::new())?;
                    if !outcome.errors.is_empty() || !outcome.report.failures.is_empty() {
                        bail!(
                            "{label}: the sync reported {:?} {:?}",
                            outcome.errors,
                            outcome.report.failures
                        );
                    }
                    let reader = EventReader::start(&agent)?;
                    Installed::Agent(agent, reader)
                }
                Family::Iptables | Family::Nftables => {
                    let filter = if config.family == Family::Iptables {
                        Filter::Iptables
                    } else {
                        Filter::Nftables
                    };
                    let netns = node.netns.path().to_owned();
                    // Removed by the drop of `Installed`, even if installing failed half-way.
                    let installed = Installed::Filter(filter, netns.clone());
                    filters::install(filter, &netns, scale, specs)?;
                    installed
                }
            };
            setups.push(Setup {
                family: config.family,
                policies: config.policies,
                seconds: start.elapsed().as_secs_f64(),
            });
            for &(test, port) in netperf::TESTS {
                let (value, unit, error) =
                    match netperf::run(client.netns.path(), test, port, plan.seconds) {
                        Ok((value, unit)) => (Some(value), unit, None),
                        Err(e) => (None, String::new(), Some(format!("{e:#}"))),
                    };
                samples.push(Sample {
                    family: config.family,
                    policies: config.policies,
                    test,
                    round,
                    value,
                    unit,
                    error,
                });
            }
            if let Installed::Agent(agent, reader) = &mut installed {
                // The probed flows were allowed: nothing of them may have been dropped.
                let drops: u64 = agent.drops()?.iter().map(|(_, n)| n).sum();
                if drops > 0 {
                    eprintln!("[bench] warning: {label}: Palisade dropped {drops} packets");
                }
                let counters = agent.counters()?;
                let count =
                    |stat: palisade_common::Stat| counters.get(stat as usize).copied().unwrap_or(0);
                events.push(Events {
                    family: config.family,
                    policies: config.policies,
                    round,
                    sent: count(palisade_common::Stat::EventsSent),
                    suppressed: count(palisade_common::Stat::EventsSuppressed),
                    lost: count(palisade_common::Stat::EventsLost),
                    named: reader.finish(),
                });
            }
            drop(installed);
            bar.inc(1);
        }
    }
    Ok((samples, setups, events))
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
