//! Per-packet cost of the pod programs with BPF_PROG_TEST_RUN, against the empty classifier,
//! on the same synthetic node as the netperf runs (the server's endpoint at loopback, where a
//! test run's skb sits, so `palisade_to_pod` runs as the server's ingress hook and
//! `palisade_from_pod` as its egress hook). The kernel reports the mean time per run.
//!
//! Every path is measured in [`ALTERNATIONS`] alternations with the empty program in the same
//! mode (empty, path, path, empty, ...), so each ratio path / empty compares two measurements
//! taken a moment apart; a row keeps every alternation's pair. The rows:
//!
//! - conntrack hit, TCP forward: an ACK client -> server of a connection whose handshake (SYN,
//!   SYN-ACK) the programs saw; TCP reply: an ACK server -> client of it, at the server's
//!   egress hook; UDP forward and reply: the same for a datagram flow opened by one
//!   client -> server datagram to netperf's UDP data port;
//! - new connection, denied: a SYN from a pod the server's rules name, to a port no rule opens,
//!   so nothing is tracked; denied, unknown peer: a SYN from an address no rule names to a port
//!   the rules open (the policy lookups stop at the port in the first, at the peer in the
//!   second);
//! - uplink ingress, from outside: the uplink's ingress program on a packet whose source is
//!   neither a local pod's nor the node's (two hash lookups and the strict-mode flag);
//! - later fragment, admitted datagram: a non-first fragment after its first was admitted (the
//!   fragment map's lookup);
//! - new connection, allowed: a SYN of a new flow, judged and tracked. Its second run would hit
//!   conntrack, so each flow (its own source port) runs once, beside a single run of the empty
//!   program (a single run's time includes the kernel's clock reads, which the comparison
//!   cancels); each alternation is the median of a block of such runs.
//!
//! Every state check bails when a verdict is not the one its row claims: a hit must pass and
//! move the conntrack-hit counter by one (so the SYN-ACK of the handshake, too), a denied SYN
//! must be dropped.

use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{Result, bail};
use palisade::{
    dataplane::{Dataplane, LOOPBACK_IFINDEX},
    k8s::cluster::ObjectKey,
    policy::{Compiler, NodeView},
};
use palisade_common::{
    MAP_CONNTRACK, PROG_EMPTY, PROG_FROM_POD, PROG_FROM_UPLINK, PROG_TO_POD, Stat,
};
use serde::Serialize;

use crate::synth::{self, CLIENT, NAMESPACE, NODE, SERVER, Scale, TCP_DATA_PORT, UDP_DATA_PORT};

const DROP: i32 = 2;
/// Alternations of the empty program and each path.
const ALTERNATIONS: u32 = 5;
/// The baselines rows are compared with.
const EMPTY: &str = "empty program";
const EMPTY_SINGLE: &str = "empty program, single runs";
/// The row of new allowed flows, single runs (also a name for `PROFILE_ENV`).
const ALLOWED: &str = "new connection, allowed (single runs)";

/// One path at one policy count.
#[derive(Serialize)]
pub struct PerPacket {
    pub policies: usize,
    pub path: &'static str,
    /// The median over the alternations, ns per run.
    pub ns: f64,
    /// Runs per measurement (per alternation, or per block of single runs).
    pub runs: u64,
    /// The row it is compared with (absent for the baselines themselves).
    pub baseline: Option<&'static str>,
    /// Each alternation's (baseline ns, path ns), in the order measured.
    pub pairs: Vec<[f64; 2]>,
}

/// How a path is judged in the kernel's test run.
/// Names a repeated row to run alone, for `PROFILE_SECONDS`, under a profiler.
const PROFILE_ENV: &str = "PALISADE_BENCH_PROFILE";
const PROFILE_SECONDS: u64 = 10;
/// Sizes the conntrack map for an analysis run (production's `MAX_CONNTRACK` otherwise).
const CT_ENTRIES_ENV: &str = "PALISADE_BENCH_CT_ENTRIES";

struct Path {
    name: &'static str,
    program: &'static str,
    frame: Vec<u8>,
    claim: Claim,
}

/// What a row claims of its packet, checked before every alternation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// It passes as a packet of a tracked flow (the conntrack-hit counter moves by one).
    Hit,
    Passes,
    Dropped,
}

/// The paths at `policies` NetworkPolicies and `cluster_policies` ClusterNetworkPolicies
/// (`synth::cluster_policies`). `events`: with flow events on, at the agent's default budget
/// (100 per source per second; nothing reads the ring), as in the netperf runs; off otherwise
/// (the programs' maps as loaded).
pub fn measure(
    peers: usize,
    (policies, cluster_policies): (usize, usize),
    repeat: u32,
    singles: u16,
    events: bool,
) -> Result<Vec<PerPacket>> {
    let scale = Scale { peers, extra: 0 };
    let mut cluster = synth::cluster(&scale, &synth::policies(policies))?;
    for policy in synth::cluster_policies(cluster_policies)? {
        let name = policy.metadata.name.clone().unwrap_or_default();
        cluster
            .cluster_policies
            .insert(name, std::sync::Arc::new(policy));
    }
    let addrs = synth::node_addrs();
    let state = Compiler::new().compile(
        &cluster,
        &NodeView {
            name: NODE,
            addrs: &addrs,
        },
    );
    if !state.errors.is_empty() {
        bail!(
            "the synthetic policies do not compile cleanly: {:?}",
            state.errors
        );
    }
    // For the analysis of the allowed row (see `bench/ANALYSIS.md`): a smaller conntrack
    // table than production's, to see what of the insert is the table's size.
    let mut dataplane = match std::env::var(CT_ENTRIES_ENV) {
        Ok(entries) => {
            let entries: u32 = entries
                .parse()
                .map_err(|e| anyhow::anyhow!("{CT_ENTRIES_ENV}={entries:?}: {e}"))?;
            eprintln!("[bench] {MAP_CONNTRACK} with {entries} entries ({CT_ENTRIES_ENV})");
            Dataplane::load_with_max_entries(&[(MAP_CONNTRACK, entries)])?
        }
        Err(_) => Dataplane::load()?,
    };
    dataplane.load_empty_program()?;
    let ifindex: BTreeMap<ObjectKey, u32> = [
        (ObjectKey::new(NAMESPACE, "server"), LOOPBACK_IFINDEX),
        // Never run: any index other than loopback's.
        (ObjectKey::new(NAMESPACE, "client"), 1_000_000),
    ]
    .into();
    dataplane.sync(&state, &ifindex)?;
    if events {
        dataplane.set_flow_settings(palisade::dataplane::FlowSettings::default())?;
    }

    let run = |name, frame: &[u8], n| dataplane.test_run_repeat(name, frame, LOOPBACK_IFINDEX, n);
    let hits = || -> Result<u64> { Ok(dataplane.counters()?[Stat::CtHit as usize]) };
    let expect = |name: &str, program, frame: &[u8], claim: Claim| -> Result<()> {
        let before = hits()?;
        let dropped = run(program, frame, 1)?.action == DROP;
        let fault = match claim {
            Claim::Dropped if !dropped => Some("passed"),
            Claim::Passes | Claim::Hit if dropped => Some("dropped"),
            Claim::Hit if hits()? != before + 1 => Some("passed but not as a conntrack hit"),
            _ => None,
        };
        if let Some(fault) = fault {
            bail!("{name}: {fault} with {policies} policies: the synthetic state is wrong");
        }
        Ok(())
    };

    // The tracked flows: a TCP handshake and one UDP datagram, each through the hooks it
    // crosses.
    let (tcp_client, udp_client) = (40_000, 40_010);
    expect(
        "the probed connection's SYN",
        PROG_TO_POD,
        &tcp(CLIENT, SERVER, tcp_client, TCP_DATA_PORT, SYN, 0),
        Claim::Passes,
    )?;
    expect(
        "the probed connection's SYN-ACK",
        PROG_FROM_POD,
        &tcp(SERVER, CLIENT, TCP_DATA_PORT, tcp_client, SYN | ACK, 0),
        Claim::Hit,
    )?;
    expect(
        "the probed flow's first datagram",
        PROG_TO_POD,
        &udp(CLIENT, SERVER, udp_client, UDP_DATA_PORT),
        Claim::Passes,
    )?;
    let repeated = [
        Path {
            name: "conntrack hit, TCP forward",
            program: PROG_TO_POD,
            frame: tcp(CLIENT, SERVER, tcp_client, TCP_DATA_PORT, ACK, 0),
            claim: Claim::Hit,
        },
        Path {
            name: "conntrack hit, TCP reply",
            program: PROG_FROM_POD,
            frame: tcp(SERVER, CLIENT, TCP_DATA_PORT, tcp_client, ACK, 0),
            claim: Claim::Hit,
        },
        Path {
            name: "conntrack hit, UDP forward",
            program: PROG_TO_POD,
            frame: udp(CLIENT, SERVER, udp_client, UDP_DATA_PORT),
            claim: Claim::Hit,
        },
        Path {
            name: "conntrack hit, UDP reply",
            program: PROG_FROM_POD,
            frame: udp(SERVER, CLIENT, UDP_DATA_PORT, udp_client),
            claim: Claim::Hit,
        },
        Path {
            name: "new connection, denied",
            program: PROG_TO_POD,
            frame: tcp(CLIENT, SERVER, 40_001, 9, SYN, 0),
            claim: Claim::Dropped,
        },
        // Denied by its peer rather than its port: an address no rule names (nor any ipBlock
        // holds), to a port the server's rules open. The policy lookups stop at the peer here,
        // at the port in the row above (`palisade_common::precedence::admit`).
        Path {
            name: "new connection, denied, unknown peer",
            program: PROG_TO_POD,
            frame: tcp(OUTSIDE, SERVER, 40_004, TCP_DATA_PORT, SYN, 0),
            claim: Claim::Dropped,
        },
        // The checks #14 added beside the verdict: every packet entering the node from
        // outside (its source is neither a local pod's nor the node's).
        Path {
            name: "uplink ingress, from outside",
            program: PROG_FROM_UPLINK,
            frame: tcp(OUTSIDE, SERVER, 40_002, TCP_DATA_PORT, ACK, 0),
            claim: Claim::Passes,
        },
    ];

    // For a profiler (see `bench/ANALYSIS.md`): one row's path, run for `PROFILE_SECONDS`.
    if let Ok(name) = std::env::var(PROFILE_ENV) {
        if name == ALLOWED {
            // Single runs of new flows, each its own source port, as the row measures them.
            let until = std::time::Instant::now() + std::time::Duration::from_secs(PROFILE_SECONDS);
            let (mut runs, mut total_ns) = (0_u64, 0.0);
            while std::time::Instant::now() < until {
                for port in 1_024..u16::MAX {
                    let frame = tcp(CLIENT, SERVER, port, TCP_DATA_PORT, SYN, 0);
                    total_ns += nanos(run(PROG_TO_POD, &frame, 1)?);
                    runs += 1;
                }
            }
            eprintln!(
                "[bench] profiled {name:?} at {policies} policies: {:.1} ns per run over {runs} runs",
                total_ns / runs as f64
            );
            std::process::exit(0);
        }
        let Some(path) = repeated.iter().find(|p| p.name == name) else {
            let names: Vec<_> = repeated.iter().map(|p| p.name).collect();
            bail!("{PROFILE_ENV}={name:?}: not a repeated row; one of {names:?}");
        };
        expect(path.name, path.program, &path.frame, path.claim)?;
        let until = std::time::Instant::now() + std::time::Duration::from_secs(PROFILE_SECONDS);
        let mut runs = 0_u64;
        let mut total_ns = 0.0;
        while std::time::Instant::now() < until {
            total_ns += nanos(run(path.program, &path.frame, 1_000_000)?) * 1e6;
            runs += 1_000_000;
        }
        eprintln!(
            "[bench] profiled {name:?} at {policies} policies: {:.1} ns per run over {runs} runs",
            total_ns / runs as f64
        );
        std::process::exit(0);
    }

    let per_call = (repeat / ALTERNATIONS).max(1);
    let mut out = Vec::new();
    let mut empties = Vec::new();
    for path in &repeated {
        let mut pairs = Vec::new();
        for i in 0..ALTERNATIONS {
            expect(path.name, path.program, &path.frame, path.claim)?;
            let empty = || -> Result<f64> { Ok(nanos(run(PROG_EMPTY, &path.frame, per_call)?)) };
            let pair = if i % 2 == 0 {
                let e = empty()?;
                [e, nanos(run(path.program, &path.frame, per_call)?)]
            } else {
                let p = nanos(run(path.program, &path.frame, per_call)?);
                [empty()?, p]
            };
            empties.push(pair[0]);
            pairs.push(pair);
        }
        out.push(row(policies, path.name, per_call, EMPTY, pairs));
    }

    // A later fragment of a datagram whose first fragment was admitted, within the first
    // fragment's lifetime (1 s) from its run to the last: each alternation re-admits it.
    let first_fragment = tcp(CLIENT, SERVER, 40_003, TCP_DATA_PORT, SYN, MORE_FRAGMENTS);
    let later = later_fragment(CLIENT, 185);
    let fragment_call = per_call.min(20_000);
    let mut pairs = Vec::new();
    for _ in 0..ALTERNATIONS {
        expect(
            "an allowed first fragment",
            PROG_TO_POD,
            &first_fragment,
            Claim::Passes,
        )?;
        let e = nanos(run(PROG_EMPTY, &later, fragment_call)?);
        let fragment = run(PROG_TO_POD, &later, fragment_call)?;
        if fragment.action == DROP {
            bail!("a later fragment of an admitted datagram was dropped");
        }
        pairs.push([e, nanos(fragment)]);
    }
    out.push(row(
        policies,
        "later fragment, admitted datagram",
        fragment_call,
        EMPTY,
        pairs,
    ));
    out.insert(0, baseline(policies, EMPTY, per_call, &mut empties));

    // New allowed flows, one run each, in blocks beside as many single runs of the empty
    // program.
    let block = (singles / ALTERNATIONS as u16).max(1);
    let mut all_empty = Vec::new();
    let mut pairs = Vec::new();
    for b in 0..ALTERNATIONS as u16 {
        let mut empty = Vec::new();
        let mut allowed = Vec::new();
        for i in 0..block {
            let frame = tcp(CLIENT, SERVER, 1_024 + b * block + i, TCP_DATA_PORT, SYN, 0);
            empty.push(nanos(run(PROG_EMPTY, &frame, 1)?));
            let outcome = run(PROG_TO_POD, &frame, 1)?;
            if outcome.action == DROP {
                bail!("a new allowed flow was dropped with {policies} policies");
            }
            allowed.push(nanos(outcome));
        }
        all_empty.extend_from_slice(&empty);
        pairs.push([median(&mut empty), median(&mut allowed)]);
    }
    out.push(baseline(
        policies,
        EMPTY_SINGLE,
        u64::from(block),
        &mut all_empty,
    ));
    out.push(row(
        policies,
        ALLOWED,
        u32::from(block),
        EMPTY_SINGLE,
        pairs,
    ));
    Ok(out)
}

/// One line for a terminal: the row's median ns and, against its baseline, the median of the
/// alternations' ratios and their range (as `xtask`'s report computes them).
pub fn summary(row: &PerPacket, rows: &[PerPacket]) -> String {
    let Some(name) = row.baseline else {
        return format!(
            "{:>6} policies  {:<40} {:>8.1} ns",
            row.policies, row.path, row.ns
        );
    };
    let mut ratios: Vec<f64> = row.pairs.iter().map(|[b, p]| p / b).collect();
    ratios.sort_by(f64::total_cmp);
    let base = rows
        .iter()
        .find(|r| r.policies == row.policies && r.path == name)
        .map_or(f64::NAN, |r| r.ns);
    format!(
        "{:>6} policies  {:<40} {:>8.1} ns  {:>5.2}x ({:.2} .. {:.2}) of {name} ({base:.1} ns)",
        row.policies,
        row.path,
        row.ns,
        median(&mut ratios.clone()),
        ratios.first().copied().unwrap_or(f64::NAN),
        ratios.last().copied().unwrap_or(f64::NAN),
    )
}

fn row(
    policies: usize,
    path: &'static str,
    runs: u32,
    baseline: &'static str,
    pairs: Vec<[f64; 2]>,
) -> PerPacket {
    let mut ns: Vec<f64> = pairs.iter().map(|p| p[1]).collect();
    PerPacket {
        policies,
        path,
        ns: median(&mut ns),
        runs: u64::from(runs),
        baseline: Some(baseline),
        pairs,
    }
}

fn baseline(
    policies: usize,
    path: &'static str,
    runs: impl Into<u64>,
    ns: &mut [f64],
) -> PerPacket {
    PerPacket {
        policies,
        path,
        ns: median(ns),
        runs: runs.into(),
        baseline: None,
        pairs: Vec::new(),
    }
}

fn nanos(outcome: palisade::dataplane::TestRunOutcome) -> f64 {
    outcome.duration.as_secs_f64() * 1e9
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// TCP flags.
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
/// A host outside the cluster (TEST-NET-1).
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// IPv4 flags: more fragments.
const MORE_FRAGMENTS: u16 = 0x2000;
const TCP: u8 = 6;
const UDP: u8 = 17;

/// Ethernet + IPv4 headers (checksums zero: the programs never read them) for a `payload`.
fn ipv4(from: Ipv4Addr, to: Ipv4Addr, protocol: u8, frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00];
    let total = u16::try_from(20 + payload.len()).unwrap_or(u16::MAX);
    f.extend([0x45, 0]);
    f.extend(total.to_be_bytes());
    f.extend([0x12, 0x34]);
    f.extend(frag.to_be_bytes());
    f.extend([64, protocol, 0, 0]);
    f.extend(from.octets());
    f.extend(to.octets());
    f.extend(payload);
    f
}

/// A TCP segment with `flags` (a SYN is judged by policy every time, whatever conntrack holds,
/// so the tracked path is measured with the ACKs that follow it).
fn tcp(from: Ipv4Addr, to: Ipv4Addr, sport: u16, dport: u16, flags: u8, frag: u16) -> Vec<u8> {
    let mut segment = [0u8; 20];
    segment[0..2].copy_from_slice(&sport.to_be_bytes());
    segment[2..4].copy_from_slice(&dport.to_be_bytes());
    segment[12] = 5 << 4;
    segment[13] = flags;
    ipv4(from, to, TCP, frag, &segment)
}

/// A UDP datagram with a 4-byte payload.
fn udp(from: Ipv4Addr, to: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut datagram = [0u8; 12];
    datagram[0..2].copy_from_slice(&sport.to_be_bytes());
    datagram[2..4].copy_from_slice(&dport.to_be_bytes());
    datagram[4..6].copy_from_slice(&12u16.to_be_bytes());
    ipv4(from, to, UDP, 0, &datagram)
}

/// A non-first fragment (offset `offset` eight-byte units) of datagram 0x1234 from `from`.
fn later_fragment(from: Ipv4Addr, offset: u16) -> Vec<u8> {
    ipv4(from, SERVER, TCP, offset, &[0u8; 8])
}
