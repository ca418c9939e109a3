//! The netperf series: every configuration against the floor, in pairs.
//!
//! Two lab nodes: the measured node (`bench`), where the configuration is installed (Palisade's
//! agent, or iptables / nftables rules in its namespace) between the server and the client
//! pods, and the floor node (`floor`), which nothing is ever installed in, with a pair of pods
//! of its own wired the same way. Both servers pinned to CPU 0, both clients to CPU 1. Within
//! each configuration's install, each test runs in short pairs, one run through the measured
//! node and one through the floor node, alternating which goes first (ABBA): the ratio of a
//! pair's members compares two runs a second apart on the same cores, so the machine's slow
//! drifts (other work on it, frequency) cancel, where the medians of separate rounds carry
//! them. The configuration "floor" (nothing installed on the measured node either) is the
//! method's own check: its paired ratio must be 1 within its interval.
//!
//! After the pairs of each test, a Palisade configuration runs once more with the kernel's BPF
//! run-time statistics on (`bpf_stats.rs`), for its programs' nanoseconds per packet; that run
//! is kept out of the pairs, which so never pay for the accounting's clock reads.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    sync::Arc,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use indicatif::ProgressBar;
use palisade::{
    dataplane::Established,
    k8s::cluster::{Cluster, ObjectKey},
};
use palisade_lab::{
    netns::NetNs,
    node::{self, Interface},
    topology::{PodHandle, Topology},
};
use serde::Serialize;

use crate::{
    Config, Family, Plan,
    bpf_stats::{self, RunTimeStats},
    events::EventReader,
    filters::{self, Filter},
    netperf::{self, Length, Netserver},
    synth::{self, CLIENT, FLOOR_CLIENT, FLOOR_NODE, FLOOR_SERVER, NAMESPACE, NODE, SERVER, Scale},
};

/// One pair's member through the measured node, with its floor member.
#[derive(Serialize)]
pub struct Sample {
    family: Family,
    policies: Option<usize>,
    test: &'static str,
    round: usize,
    pair: usize,
    /// Whether the measured node's run came first in the pair.
    config_first: bool,
    /// Through the measured node, and through the floor node.
    value: Option<f64>,
    floor: Option<f64>,
    unit: String,
    error: Option<String>,
}

#[derive(Serialize)]
pub struct Setup {
    family: Family,
    policies: Option<usize>,
    seconds: f64,
}

/// The kernel's flow event counters over one configuration's tests, and the records named.
#[derive(Serialize)]
pub struct Events {
    family: Family,
    policies: Option<usize>,
    round: usize,
    sent: u64,
    suppressed: u64,
    lost: u64,
    named: u64,
}

/// One program's run-time statistics over one netperf run (the run's figure beside it).
#[derive(Serialize)]
pub struct ProgramRun {
    family: Family,
    policies: Option<usize>,
    test: &'static str,
    round: usize,
    program: &'static str,
    run_time_ns: u64,
    run_cnt: u64,
    value: Option<f64>,
}

/// What the series measured.
pub struct Series {
    pub samples: Vec<Sample>,
    pub setups: Vec<Setup>,
    pub events: Vec<Events>,
    pub programs: Vec<ProgramRun>,
    /// Transactions of each TCP_CRR run on the floor (calibrated to last about a run's time).
    pub crr_transactions: u64,
}

/// A client pod and the netserver it talks to.
struct Pods {
    client: PathBuf,
    server: Ipv4Addr,
}

impl Pods {
    fn run(&self, test: &str, port: u16, length: Length) -> Result<(f64, String)> {
        netperf::run(&self.client, self.server, test, port, length)
    }
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

pub fn run(plan: &Plan, configs: &[Config], bar: &ProgressBar) -> Result<Series> {
    // Every namespace goes with the topology, on every exit path.
    let mut topology = Topology::new()?;
    let node = topology.add_node(NODE, 1)?;
    let floor_node = topology.add_node(FLOOR_NODE, 2)?;
    let server = topology.add_pod(&node, &format!("{NAMESPACE}/server"), &[IpAddr::V4(SERVER)])?;
    let client = topology.add_pod(&node, &format!("{NAMESPACE}/client"), &[IpAddr::V4(CLIENT)])?;
    let floor_server =
        topology.add_pod(&floor_node, "floor/server", &[IpAddr::V4(FLOOR_SERVER)])?;
    let floor_client =
        topology.add_pod(&floor_node, "floor/client", &[IpAddr::V4(FLOOR_CLIENT)])?;
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
    let measured_ifnames = vec![server.host_ifname.clone(), client.host_ifname.clone()];
    let floor_ifnames = vec![
        floor_server.host_ifname.clone(),
        floor_client.host_ifname.clone(),
    ];
    let _netserver = Netserver::start(server.netns.path(), SERVER)?;
    let _floor_netserver = Netserver::start(floor_server.netns.path(), FLOOR_SERVER)?;
    let measured = Pods {
        client: client.netns.path().to_owned(),
        server: SERVER,
    };
    let floor = Pods {
        client: floor_client.netns.path().to_owned(),
        server: FLOOR_SERVER,
    };

    bar.set_message("calibrating TCP_CRR on the floor");
    let crr_transactions = calibrate_crr(&floor, plan.seconds)?;

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

    let mut series = Series {
        samples: Vec::new(),
        setups: Vec::new(),
        events: Vec::new(),
        programs: Vec::new(),
        crr_transactions,
    };
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
            series.setups.push(Setup {
                family: config.family,
                policies: config.policies,
                seconds: start.elapsed().as_secs_f64(),
            });
            // The floor stays the floor: nothing of any configuration on its node's veths.
            let on_floor = bpf_stats::attached_names(&floor_node.netns, &floor_ifnames)?;
            if !on_floor.is_empty() {
                bail!("{label}: programs attached on the floor node's veths: {on_floor:?}");
            }
            let agent = matches!(installed, Installed::Agent(..));
            // And nothing of an earlier install is left on the measured node's veths.
            let on_measured = bpf_stats::attached_names(&node.netns, &measured_ifnames)?;
            if !agent && !on_measured.is_empty() {
                bail!("{label}: programs still attached on the measured veths: {on_measured:?}");
            }
            for &(test, port) in netperf::TESTS {
                let (length, floor_length) = if test == "TCP_CRR" {
                    let measured_count = crr_count(&measured, plan.seconds, crr_transactions);
                    (
                        Length::Transactions(measured_count),
                        Length::Transactions(crr_transactions),
                    )
                } else {
                    (Length::Seconds(plan.seconds), Length::Seconds(plan.seconds))
                };
                for pair in 0..plan.pairs {
                    let config_first = (pair + round) % 2 == 0;
                    let (value, floor_value) = if config_first {
                        let value = measured.run(test, port, length);
                        (value, floor.run(test, port, floor_length))
                    } else {
                        let floor_value = floor.run(test, port, floor_length);
                        (measured.run(test, port, length), floor_value)
                    };
                    series.samples.push(Sample::of_pair(
                        config,
                        test,
                        round,
                        pair,
                        config_first,
                        value,
                        floor_value,
                    ));
                }
                if agent {
                    series.programs.extend(program_costs(
                        config,
                        test,
                        round,
                        &node.netns,
                        &measured_ifnames,
                        || measured.run(test, port, length),
                    )?);
                }
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
                series.events.push(Events {
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
    Ok(series)
}

impl Sample {
    fn of_pair(
        config: &Config,
        test: &'static str,
        round: usize,
        pair: usize,
        config_first: bool,
        value: Result<(f64, String)>,
        floor: Result<(f64, String)>,
    ) -> Self {
        let mut errors = Vec::new();
        let mut unit = String::new();
        let mut keep = |result: Result<(f64, String)>, which: &str| match result {
            Ok((v, u)) => {
                unit = u;
                Some(v)
            }
            Err(e) => {
                errors.push(format!("{which}: {e:#}"));
                None
            }
        };
        let value = keep(value, "measured");
        let floor = keep(floor, "floor");
        Self {
            family: config.family,
            policies: config.policies,
            test,
            round,
            pair,
            config_first,
            value,
            floor,
            unit,
            error: (!errors.is_empty()).then(|| errors.join("; ")),
        }
    }
}

/// TCP_CRR transactions that take about `seconds` on the floor (at least 500).
fn calibrate_crr(floor: &Pods, seconds: u32) -> Result<u64> {
    let (rate, _) = floor
        .run("TCP_CRR", synth::TCP_DATA_PORT, Length::Transactions(2_000))
        .context("calibrating TCP_CRR on the floor")?;
    Ok(((rate * f64::from(seconds)).round() as u64).max(500))
}

/// TCP_CRR transactions that take about `seconds` through the measured node as installed now:
/// as many as on the floor, fewer where connections are slow (iptables with 10,000 policies
/// opens under a hundred a second), probed with a short run. A rate is a rate whatever the
/// count, so the pair's members need not run the same number.
fn crr_count(measured: &Pods, seconds: u32, floor_count: u64) -> u64 {
    const PROBE: u64 = 200;
    match measured.run("TCP_CRR", synth::TCP_DATA_PORT, Length::Transactions(PROBE)) {
        Ok((rate, _)) => ((rate * f64::from(seconds)).round() as u64).clamp(PROBE, floor_count),
        // The pairs will fail and say why.
        Err(_) => floor_count,
    }
}

/// One more run of the measured pair (`measure`) with run-time statistics on, and what each
/// Palisade program on the measured veths spent over it.
fn program_costs(
    config: &Config,
    test: &'static str,
    round: usize,
    netns: &Arc<NetNs>,
    ifnames: &[String],
    measure: impl FnOnce() -> Result<(f64, String)>,
) -> Result<Vec<ProgramRun>> {
    let stats = RunTimeStats::enable()?;
    let before = bpf_stats::snapshot(netns, ifnames)?;
    let value = measure().ok().map(|(v, _)| v);
    let after = bpf_stats::snapshot(netns, ifnames)?;
    drop(stats);
    let mut out = Vec::new();
    for program in bpf_stats::PROGRAMS {
        let (Some(&a), Some(&b)) = (after.get(program), before.get(program)) else {
            bail!("{program} is not attached to the measured pods' veths ({ifnames:?})");
        };
        let delta = a.since(b);
        out.push(ProgramRun {
            family: config.family,
            policies: config.policies,
            test,
            round,
            program,
            run_time_ns: delta.run_time_ns,
            run_cnt: delta.run_cnt,
            value,
        });
    }
    Ok(out)
}
