//! Per-packet cost of the pod programs with BPF_PROG_TEST_RUN, against the empty classifier,
//! on the same synthetic node as the netperf runs (the server's endpoint at loopback, where a
//! test run's skb sits). The kernel reports the mean time per run over `repeat` runs.
//!
//! - conntrack hit: a packet (an ACK) of a flow already tracked (`repeat` runs in one
//!   syscall): the lookup, the expiry check and at most one last-seen write a second;
//! - new connection, denied: a SYN no rule allows, so every lookup is made and nothing is
//!   tracked (`repeat` runs);
//! - uplink ingress, from outside: the uplink's ingress program on a packet whose source is
//!   neither a local pod's nor the node's (two hash lookups and the strict-mode flag);
//! - later fragment, admitted datagram: a non-first fragment after its first was admitted (the
//!   fragment map's lookup);
//! - new connection, allowed: a SYN of a new flow, judged and tracked. Its second run would hit
//!   conntrack, so each flow (its own source port) runs once, and the figure is the median of
//!   `singles` such runs, beside the empty program measured the same way (a single run's time
//!   includes the kernel's clock reads, which the comparison cancels).

use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{Result, bail};
use palisade::{
    dataplane::{Dataplane, LOOPBACK_IFINDEX},
    k8s::cluster::ObjectKey,
    policy::{Compiler, NodeView},
};
use palisade_common::{PROG_EMPTY, PROG_FROM_UPLINK, PROG_TO_POD};
use serde::Serialize;

use crate::synth::{self, CLIENT, NAMESPACE, NODE, SERVER, Scale, TCP_DATA_PORT};

const DROP: i32 = 2;

#[derive(Serialize)]
pub struct PerPacket {
    pub policies: usize,
    pub path: &'static str,
    pub ns: f64,
    pub runs: u64,
}

pub fn measure(peers: usize, policies: usize, repeat: u32, singles: u16) -> Result<Vec<PerPacket>> {
    let scale = Scale { peers, extra: 0 };
    let cluster = synth::cluster(&scale, &synth::policies(policies))?;
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
    let mut dataplane = Dataplane::load()?;
    dataplane.load_empty_program()?;
    let ifindex: BTreeMap<ObjectKey, u32> = [
        (ObjectKey::new(NAMESPACE, "server"), LOOPBACK_IFINDEX),
        // Never run: any index other than loopback's.
        (ObjectKey::new(NAMESPACE, "client"), 1_000_000),
    ]
    .into();
    dataplane.sync(&state, &ifindex)?;

    let run = |name, frame: &[u8], n| dataplane.test_run_repeat(name, frame, LOOPBACK_IFINDEX, n);
    let mut out = Vec::new();
    let mut row = |path, ns: f64, runs: u64| {
        out.push(PerPacket {
            policies,
            path,
            ns,
            runs,
        });
    };

    let opening = syn(40_000, TCP_DATA_PORT);
    let first = run(PROG_TO_POD, &opening, 1)?;
    let tracked = ack(40_000, TCP_DATA_PORT);
    if first.action == DROP {
        bail!("the probed flow is dropped with {policies} policies: the synthetic state is wrong");
    }
    let empty = run(PROG_EMPTY, &tracked, repeat)?;
    row("empty program", nanos(empty.duration), u64::from(repeat));
    let hit = run(PROG_TO_POD, &tracked, repeat)?;
    row("conntrack hit", nanos(hit.duration), u64::from(repeat));
    let denied = run(PROG_TO_POD, &syn(40_001, 9), repeat)?;
    if denied.action != DROP {
        bail!("a SYN to port 9 passed with {policies} policies: the synthetic state is wrong");
    }
    row(
        "new connection, denied",
        nanos(denied.duration),
        u64::from(repeat),
    );

    // The checks #14 added beside the verdict: every packet entering the node from outside
    // (its source is neither a local pod's nor the node's), and a later fragment of a datagram
    // whose first fragment was admitted.
    let outside = segment_from(OUTSIDE, 40_002, TCP_DATA_PORT, 0x10, 0);
    let uplink = run(PROG_FROM_UPLINK, &outside, repeat)?;
    row(
        "uplink ingress, from outside",
        nanos(uplink.duration),
        u64::from(repeat),
    );
    let first_fragment = segment_from(CLIENT, 40_003, TCP_DATA_PORT, 0x02, MORE_FRAGMENTS);
    if run(PROG_TO_POD, &first_fragment, 1)?.action == DROP {
        bail!("an allowed first fragment was dropped with {policies} policies");
    }
    let later = later_fragment(CLIENT, 185);
    // Within the first fragment's lifetime (1 s) from the first run to the last.
    let fragment_repeat = repeat.min(100_000);
    let fragment = run(PROG_TO_POD, &later, fragment_repeat)?;
    if fragment.action == DROP {
        bail!("a later fragment of an admitted datagram was dropped");
    }
    row(
        "later fragment, admitted datagram",
        nanos(fragment.duration),
        u64::from(fragment_repeat),
    );

    let mut empty_single = Vec::new();
    let mut allowed = Vec::new();
    for i in 0..singles {
        let frame = syn(1_024 + i, TCP_DATA_PORT);
        empty_single.push(nanos(run(PROG_EMPTY, &frame, 1)?.duration));
        let outcome = run(PROG_TO_POD, &frame, 1)?;
        if outcome.action == DROP {
            bail!("a new allowed flow was dropped with {policies} policies");
        }
        allowed.push(nanos(outcome.duration));
    }
    row(
        "empty program, single runs",
        median(&mut empty_single),
        u64::from(singles),
    );
    row(
        "new connection, allowed (single runs)",
        median(&mut allowed),
        u64::from(singles),
    );
    Ok(out)
}

fn nanos(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// An Ethernet + IPv4 + TCP SYN frame from the client to the server (checksums zero: the
/// programs never read them).
fn syn(sport: u16, dport: u16) -> Vec<u8> {
    segment(sport, dport, 0x02)
}

/// A segment of an open connection (ACK): a SYN is judged by policy every time, whatever
/// conntrack holds, so the tracked path is measured with what follows it.
fn ack(sport: u16, dport: u16) -> Vec<u8> {
    segment(sport, dport, 0x10)
}

fn segment(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    segment_from(CLIENT, sport, dport, flags, 0)
}

/// A host outside the cluster (TEST-NET-1).
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// IPv4 flags: more fragments.
const MORE_FRAGMENTS: u16 = 0x2000;

/// A non-first fragment (offset `offset` eight-byte units) of datagram 0x1234 from `from`.
fn later_fragment(from: Ipv4Addr, offset: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00];
    f.extend([0x45, 0, 0, 28, 0x12, 0x34]);
    f.extend(offset.to_be_bytes());
    f.extend([64, 6, 0, 0]);
    f.extend(from.octets());
    f.extend(SERVER.octets());
    f.extend([0u8; 8]);
    f
}

fn segment_from(from: Ipv4Addr, sport: u16, dport: u16, flags: u8, frag: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00];
    f.extend([0x45, 0, 0, 40, 0x12, 0x34]);
    f.extend(frag.to_be_bytes());
    f.extend([64, 6, 0, 0]);
    f.extend(from.octets());
    f.extend(SERVER.octets());
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    f.extend(tcp);
    f
}
