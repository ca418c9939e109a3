//! Connection tracking: the one place that says whether a packet belongs to a flow already
//! admitted at this endpoint, and that records the flows the verdict admits (step 4 of the
//! precedence in `palisade_common::precedence`). In the spirit of Cilium's
//! `bpf/lib/conntrack.h`, every question about a flow's state has one answer here, a
//! [`CtState`]:
//!
//! - [`CtState::Established`]: the packet's own flow is tracked at this endpoint, in this
//!   direction;
//! - [`CtState::Reply`]: the reverse flow is tracked at this endpoint, in the other direction
//!   (the hook of the same veth that admitted the request);
//! - [`CtState::Related`]: an ICMP error quoting a packet of a tracked flow ([`related`]; the
//!   quote is parsed by `icmp.rs`);
//! - [`CtState::New`]: none of these; the policy decides, and [`create`] remembers what it
//!   admits.
//!
//! Entries are keyed by the endpoint's ifindex as well as the addresses, so a flow admitted at
//! one pod's veth never admits a packet on another's. Every packet found tracked counts as one
//! [`Stat::CtHit`]. Entries leave by LRU eviction, or when the agent deletes those a new policy
//! no longer admits (its `Established::Recheck` setting); the programs never delete one.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use palisade_common::{CtKey, CtValue, Stat};

use crate::{
    maps::{CT, bump},
    parse::Packet,
};

/// What conntrack knows about a packet's flow.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum CtState {
    New,
    Established,
    Reply,
    Related,
}

/// The key of `packet`'s flow as the hook of endpoint `ifindex` in `direction` sees it.
#[inline(always)]
pub(crate) fn flow_of(packet: &Packet, direction: u8, ifindex: u32) -> CtKey {
    CtKey {
        saddr: packet.src,
        daddr: packet.dst,
        sport: packet.sport,
        dport: packet.dport,
        protocol: packet.protocol,
        direction,
        _pad: [0; 2],
        ifindex,
    }
}

/// [`CtState::Established`], [`CtState::Reply`] or [`CtState::New`] for the flow `flow`.
///
/// One key, turned around for the reply and back (so the caller can still [`create`] it): two
/// would not fit the verdict's 512-byte stack.
#[inline(always)]
pub(crate) fn lookup(flow: &mut CtKey) -> CtState {
    let state = if CT.get_ptr(&*flow).is_some() {
        CtState::Established
    } else {
        turn_around(flow);
        let reply = CT.get_ptr(&*flow).is_some();
        turn_around(flow);
        if reply { CtState::Reply } else { CtState::New }
    };
    if state != CtState::New {
        bump(Stat::CtHit as u32);
    }
    state
}

/// [`CtState::Related`] when the packet is an ICMP error quoting a flow tracked at this
/// endpoint (see `icmp.rs` for which errors, and for the checks the quote must pass first),
/// [`CtState::New`] otherwise: the verdict then judges the packet like any other.
///
/// The quoted packet went the other way through this endpoint, so its flow is looked up in the
/// other direction: as a tracked flow there, or as the reply of one tracked here.
///
/// Not inlined, and called before the verdict: it has its own parse, and BPF-to-BPF calls made
/// one after the other share no frame, where the verdict's is near the 512-byte limit.
#[inline(never)]
pub(crate) fn related(ctx: &TcContext, direction: u8) -> CtState {
    let Some(mut quoted) = crate::icmp::quoted_flow(ctx, direction) else {
        return CtState::New;
    };
    match lookup(&mut quoted) {
        CtState::New => CtState::New,
        _ => CtState::Related,
    }
}

/// Tracks `flow`, admitted by endpoint `endpoint` (its id). A full map only costs the flow its
/// replies, which are then judged as new flows ([`Stat::CtInsertFailed`]).
#[inline(always)]
pub(crate) fn create(flow: &CtKey, endpoint: u32) {
    let entry = CtValue {
        // SAFETY: a helper without arguments.
        created_ns: unsafe { bpf_ktime_get_ns() },
        endpoint,
        _pad: 0,
    };
    if CT.insert(flow, &entry, 0).is_err() {
        bump(Stat::CtInsertFailed as u32);
    }
}

/// The key of the reply to `key`'s flow: the other direction, at the same endpoint.
#[inline(always)]
fn turn_around(key: &mut CtKey) {
    core::mem::swap(&mut key.saddr, &mut key.daddr);
    core::mem::swap(&mut key.sport, &mut key.dport);
    key.direction ^= 1;
}
