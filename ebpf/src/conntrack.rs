//! Connection tracking: the one place that says whether a packet belongs to a flow already
//! admitted at this endpoint, and that records the flows the verdict admits (step 4 of the
//! precedence in `palisade_common::precedence`). In the spirit of Cilium's
//! `bpf/lib/conntrack.h`, every question about a flow's state has one answer here, a
//! [`CtState`]:
//!
//! - [`CtState::Established`]: the packet's flow is tracked at this endpoint, opened in the
//!   packet's direction;
//! - [`CtState::Reply`]: the packet's flow is tracked at this endpoint, opened the other way
//!   (by the hook of the same veth that admitted the request);
//! - [`CtState::Related`]: an ICMP error quoting a packet of a tracked flow ([`related`]; the
//!   quote is parsed by `icmp.rs`);
//! - [`CtState::New`]: none of these; the policy decides, and [`create`] remembers what it
//!   admits.
//!
//! Entries are keyed by the endpoint's ifindex as well as the addresses, so a flow admitted at
//! one pod's veth never admits a packet on another's, and by the endpoint's side first
//! (`CtKey::of`), so a packet and its reply find the same entry with one lookup. ICMP is keyed
//! by role (`CtKey::kind`): an echo request is never the reply of one. Every packet found tracked counts as one
//! [`Stat::CtHit`].
//!
//! An entry lives while its flow is active: it expires after the idle time of its state
//! (`CtTimeouts`, the agent's settings in `PAL_CT_CONFIG`), and TCP's state follows the flags
//! seen (a FIN or RST closes it, so it expires within the closing timeout). A TCP SYN opening
//! a connection is always judged by policy, whatever the map holds for its 5-tuple: a closed
//! or idle connection is never resurrected by a new one reusing its ports. Expired entries
//! are ignored here and removed by the agent's sweep, or by LRU eviction; the agent also
//! deletes those a new policy no longer admits (its `Established::Recheck` setting).

use aya_ebpf::programs::TcContext;
use palisade_common::{
    CT_F_LOCAL_OWN, CT_SEEN_GRANULARITY_NS, CT_TCP_CLOSING, CT_TCP_ESTABLISHED, CT_TCP_NONE,
    CT_TCP_SYN_SENT, CtKey, CtTimeouts, CtValue, DIR_EGRESS, PROTO_TCP, Stat, TCP_FIN, TCP_RST,
    ct_sides, tcp_opens, tcp_state_of_new,
};

use crate::{
    clock::now_ns,
    maps::{CT, CT_CONFIG, bump},
    parse::Packet,
    policy::own_source,
};

/// What conntrack knows about a packet's flow.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum CtState {
    New,
    Established,
    Reply,
    Related,
}

/// The key of `packet`'s flow at endpoint `ifindex`, seen by its hook of `direction`: the same
/// for the packet and its reply. [`CtKey::of`], from the sides the parse set apart
/// (`Packet::local`, `Packet::remote`) so that no address is chosen by a branch here.
#[inline(always)]
pub(crate) fn flow_of(packet: &Packet, direction: u8, ifindex: u32) -> CtKey {
    let (local_port, remote_port, kind) =
        ct_sides(packet.sport, packet.dport, packet.kind, direction);
    CtKey {
        local: packet.local,
        remote: packet.remote,
        local_port,
        remote_port,
        protocol: packet.protocol,
        kind,
        _pad: [0; 2],
        ifindex,
    }
}

/// [`CtState::Established`], [`CtState::Reply`] or [`CtState::New`] for the flow `flow` of a
/// packet going `direction` with TCP flags `tcp_flags`, refreshing the entry it finds (its
/// last-seen time and TCP state) when `refresh` is set. A SYN opening a connection is always
/// [`CtState::New`].
#[inline(always)]
pub(crate) fn lookup(flow: &CtKey, direction: u8, tcp_flags: u8, refresh: bool) -> CtState {
    match find(flow, direction, tcp_flags) {
        Some((value, state, now)) => {
            if refresh {
                touch(value, state, tcp_flags, now);
            } else {
                bump(Stat::CtHit as u32);
            }
            state
        }
        None => CtState::New,
    }
}

/// The live entry of `flow` for a packet going `direction` with `tcp_flags`, how it relates to
/// the packet, and the time it was judged at; `None` for a new flow. One lookup whichever way
/// the packet goes: the key is the flow's, not the packet's.
#[inline(always)]
fn find(
    flow: &CtKey,
    direction: u8,
    tcp_flags: u8,
) -> Option<(&'static mut CtValue, CtState, u64)> {
    if flow.protocol == PROTO_TCP && tcp_opens(tcp_flags) {
        return None;
    }
    let entry = CT.get_ptr_mut(flow)?;
    // SAFETY: the map's value, plain data; a concurrent writer can only make a field stale.
    let value = unsafe { &mut *entry };
    let state = if value.direction == direction {
        CtState::Established
    } else {
        CtState::Reply
    };
    let now = now_ns();
    let lifetime = match CT_CONFIG.get(0) {
        Some(timeouts) => timeouts.lifetime_ns(flow.protocol, value.tcp),
        None => CtTimeouts::DEFAULT.lifetime_ns(flow.protocol, value.tcp),
    };
    if value.idle_past(now, lifetime) {
        bump(Stat::CtExpired as u32);
        return None;
    }
    Some((value, state, now))
}

/// Records a packet with `tcp_flags` of the flow of `value` (related to it as `state`) seen at
/// `now`: its TCP state, and its last-seen time at most once a second.
#[inline(always)]
fn touch(value: &mut CtValue, state: CtState, tcp_flags: u8, now: u64) {
    let tcp = next_tcp_state(value.tcp, tcp_flags, state == CtState::Reply);
    if tcp != value.tcp {
        value.tcp = tcp;
        value.seen_ns = now;
    } else if value.idle_past(now, CT_SEEN_GRANULARITY_NS) {
        value.seen_ns = now;
    }
    bump(Stat::CtHit as u32);
}

/// [`tracked`]'s answers: the packet belongs to a tracked flow (pass it); conntrack looked and
/// the flow is new (judge it, without looking again); or conntrack did not answer (the verdict
/// looks itself, in its order).
pub(crate) const TRACKED: u32 = 0;
pub(crate) const UNTRACKED: u32 = 1;
pub(crate) const UNANSWERED: u32 = 2;

/// The fast path: whether the parsed packet (the per-CPU slot) belongs to a flow tracked at
/// this endpoint, asked before anything else about it. Its budget, in the order it spends it:
///
/// 1. the packet, parsed once from the linear data (`parse::parse_into`, no helper calls);
/// 2. one `PAL_CT` lookup: the key is the flow's, so a reply finds its request's entry;
/// 3. the coarse clock and the state's timeout (an array read the verifier inlines);
/// 4. for a packet the pod sends on a flow whose local address was not checked yet
///    ([`CT_F_LOCAL_OWN`]), the source check of step 3 (`PAL_LOCAL_ADDRS`), once: a flow the
///    pod's ingress admitted gets the flag from its first reply (the verdict leaves the check
///    to it, so a new flow that is never answered never pays for it);
/// 5. the TCP state and the last-seen time written (at most once a second), one per-CPU
///    counter.
///
/// No fewer would do: the flow's entry is the only state a tracked packet needs. It needs no
/// `PAL_ENDPOINTS` lookup: the entry was made by this endpoint's own verdict (its ifindex is
/// in the key), policy changes keep established flows (or the agent deletes them, its
/// `Established::Recheck`), and the agent deletes the flows of an endpoint it switches off.
/// Nor a source check when the entry's local address was checked at admission: the key holds
/// it, so a packet with another source finds another key.
///
/// Fragments, neighbour discovery and Service packets back from kube-proxy's translation (the
/// mark) are the verdict's ([`UNANSWERED`]): each needs its own step first.
#[inline(always)]
pub(crate) fn tracked(ctx: &TcContext, packet: &Packet, direction: u8) -> u32 {
    if packet.fragment || packet.neighbour_discovery || crate::service::marked(ctx) {
        return UNANSWERED;
    }
    // A SYN opening a connection is never found ([`find`]): said before its key is built.
    if packet.protocol == PROTO_TCP && tcp_opens(packet.tcp_flags) {
        return UNTRACKED;
    }
    // SAFETY: `skb` is the context pointer the kernel handed to this program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let flow = flow_of(packet, direction, ifindex);
    let Some((value, state, now)) = find(&flow, direction, packet.tcp_flags) else {
        return UNTRACKED;
    };
    if direction == DIR_EGRESS && value.flags & CT_F_LOCAL_OWN == 0 {
        if !own_source(&packet.src, ifindex) {
            // The verdict drops it, as spoofed.
            return UNANSWERED;
        }
        // The packet's source is the key's local address: checked now, for the flow's life.
        value.flags |= CT_F_LOCAL_OWN;
    }
    touch(value, state, packet.tcp_flags, now);
    if packet.first_fragment {
        crate::fragments::remember(packet, direction, ifindex);
    }
    TRACKED
}

/// TCP's state after a packet with `flags` of a tracked flow (`reply` when it goes the other
/// way): FIN or RST close it; the first reply establishes it.
#[inline(always)]
fn next_tcp_state(state: u8, flags: u8, reply: bool) -> u8 {
    if state == CT_TCP_NONE {
        CT_TCP_NONE
    } else if flags & (TCP_FIN | TCP_RST) != 0 {
        CT_TCP_CLOSING
    } else if state == CT_TCP_SYN_SENT && reply {
        CT_TCP_ESTABLISHED
    } else {
        state
    }
}

/// [`CtState::Related`] when the packet is an ICMP error quoting a flow tracked at this
/// endpoint (see `icmp.rs` for which errors, and for the checks the quote must pass first),
/// [`CtState::New`] otherwise: the verdict then judges the packet like any other.
///
/// The quoted packet went the other way through this endpoint; its flow's key is the same
/// whichever way the flow was opened.
///
/// Not inlined, and called only for ICMP: it has its own parse of the quote, and BPF-to-BPF
/// calls made one after the other share no frame, where the verdict's is near the 512-byte
/// limit.
#[inline(never)]
pub(crate) fn related(ctx: &TcContext, direction: u8) -> CtState {
    let Some(quoted) = crate::icmp::quoted_flow(ctx, direction) else {
        return CtState::New;
    };
    // An error says nothing of the flow's state: the entry is read, not refreshed.
    match lookup(&quoted, direction ^ 1, 0, false) {
        CtState::New => CtState::New,
        _ => CtState::Related,
    }
}

/// Tracks the flow of `packet`, admitted at endpoint `ifindex` (its id `endpoint`) in
/// `direction`: [`create`] with the key [`flow_of`] the packet, built in this frame rather than
/// the verdict's, and only for a flow that is admitted.
#[inline(never)]
pub(crate) fn track(packet: &Packet, direction: u8, ifindex: u32, endpoint: u32, local_own: bool) {
    create(
        &flow_of(packet, direction, ifindex),
        direction,
        endpoint,
        packet.tcp_flags,
        local_own,
    );
}

/// Tracks `flow`, opened in `direction` and admitted by endpoint `endpoint` (its id) on a
/// packet with TCP flags `tcp_flags`; `local_own` when the key's local address is known to be
/// the endpoint's ([`CT_F_LOCAL_OWN`]). A full map only costs the flow its replies, which are
/// then judged as new flows ([`Stat::CtInsertFailed`]).
///
/// Not inlined: the value is built in a frame of its own, not the verdict's.
#[inline(never)]
pub(crate) fn create(flow: &CtKey, direction: u8, endpoint: u32, tcp_flags: u8, local_own: bool) {
    let now = now_ns();
    let entry = CtValue {
        created_ns: now,
        seen_ns: now,
        endpoint,
        tcp: if flow.protocol == PROTO_TCP {
            tcp_state_of_new(tcp_flags)
        } else {
            CT_TCP_NONE
        },
        direction,
        flags: if local_own { CT_F_LOCAL_OWN } else { 0 },
        _pad: 0,
    };
    if CT.insert(flow, &entry, 0).is_err() {
        bump(Stat::CtInsertFailed as u32);
    }
}
