//! The verdict of the pod hooks: the precedence of `palisade_common::precedence`, step by step,
//! each step's work done by its own module (`parse.rs`, `conntrack.rs`, `policy.rs`,
//! `service.rs`, `events.rs`), answered as a TC action (`action.rs`).
//!
//! The frames matter more than the shape here: [`try_judge`]'s is near the 512-byte BPF stack
//! limit, so what runs before it ([`parse`], [`conntrack::related`], the fast path
//! [`conntrack::tracked`]) and after it ([`flush`]) runs in frames of its own, and each drop
//! writes its event where it happens (see [`judge_new`]).

use aya_ebpf::programs::TcContext;
use palisade_common::{
    Admission, AllowReason, DIR_EGRESS, DIR_INGRESS, DropReason, FLOW_ALLOWED, FLOW_AUDIT,
    FLOW_DENIED, NO_CLASS, PROTO_ICMP, PROTO_ICMPV6, SCRATCH_MAIN, STAT_DROP_BASE, Stat,
};

use crate::{
    action::{DROP, PASS},
    conntrack::{self, CtState},
    events::{Owed, audited, flush, owe},
    fragments,
    maps::{ENDPOINTS, bump},
    parse::{packet_slot, parse_into},
    policy::{judge_policy, own_source},
    service,
};

#[inline(always)]
pub(crate) fn judge(ctx: &TcContext, direction: u8) -> i32 {
    let mut parsed = parse(ctx, direction);
    if parsed == PARSED_TRACKED {
        return PASS;
    }
    if parsed == PARSED_ICMP {
        if conntrack::related(ctx, direction) == CtState::Related {
            return PASS;
        }
        parsed = track_icmp(ctx, direction);
        if parsed == PARSED_TRACKED {
            return PASS;
        }
    }
    match try_judge(ctx, direction, parsed) {
        QUIET => PASS,
        OWED => {
            flush();
            PASS
        }
        dropped => {
            bump(STAT_DROP_BASE + (dropped & 0xff));
            flush();
            DROP
        }
    }
}

/// [`parse`]'s answers: not IP; IP (in the per-CPU packet slot) of a tracked flow, which
/// passes; IP conntrack looked up and found new, which the verdict judges without looking
/// again; IP conntrack left to the verdict (`conntrack::UNANSWERED`); ICMP or ICMPv6, which
/// may be an error about a tracked flow ([`conntrack::related`]) and is looked up after that;
/// not parsable.
const PARSED_NOT_IP: u32 = 0;
const PARSED_TRACKED: u32 = 1;
const PARSED_NEW: u32 = 2;
const PARSED_IP: u32 = 3;
const PARSED_ICMP: u32 = 4;
const PARSED_MALFORMED: u32 = 5;

/// Step 1, and step 4 for the packets of tracked flows (the fast path, `conntrack::tracked`):
/// parses the packet into the per-CPU slot, once for everything after it, and looks its flow
/// up. Not inlined: its frame is gone before [`try_judge`]'s is made.
#[inline(never)]
fn parse(ctx: &TcContext, direction: u8) -> u32 {
    let Some(packet) = packet_slot() else {
        return PARSED_MALFORMED;
    };
    match parse_into(ctx, packet, direction) {
        Ok(false) => PARSED_NOT_IP,
        Ok(true) if matches!(packet.protocol, PROTO_ICMP | PROTO_ICMPV6) => PARSED_ICMP,
        Ok(true) => tracked_answer(conntrack::tracked(ctx, packet, direction)),
        Err(_) => PARSED_MALFORMED,
    }
}

/// The fast path for ICMP, after [`conntrack::related`] (an error is about another flow).
#[inline(never)]
fn track_icmp(ctx: &TcContext, direction: u8) -> u32 {
    match packet_slot() {
        Some(packet) => tracked_answer(conntrack::tracked(ctx, packet, direction)),
        None => PARSED_MALFORMED,
    }
}

#[inline(always)]
fn tracked_answer(answer: u32) -> u32 {
    match answer {
        conntrack::TRACKED => PARSED_TRACKED,
        conntrack::UNTRACKED => PARSED_NEW,
        _ => PARSED_IP,
    }
}

/// Marks a reason in [`judge_new`]'s policy step as a drop's ([`DropReason`]), not an
/// admission's ([`AllowReason`]): both are small integers.
const DROPPED_BY_POLICY: u8 = 0x80;

/// [`try_judge`]'s answers: pass, pass owing an event, or drop (`DROPPED | reason`).
const QUIET: u32 = 0;
const OWED: u32 = 1;
const DROPPED: u32 = 0x100;

/// The packet passes (`Ok`, true when an event is owed: a new flow) or is dropped (`Err`; an
/// event is owed unless the packet could not be parsed). Not inlined: called after
/// [`conntrack::related`], the two frames never add up against the 512-byte stack limit;
/// [`flush`] runs after it returns, for the same reason.
///
/// The answer is a plain integer: LLVM once folded a `Result` built from a map lookup into
/// shifts of the lookup's pointer, which the verifier refuses.
#[inline(never)]
fn try_judge(ctx: &TcContext, direction: u8, parsed: u32) -> u32 {
    match judge_new(ctx, direction, parsed) {
        Ok(false) => QUIET,
        Ok(true) => OWED,
        Err(reason) => DROPPED | reason as u32,
    }
}

/// Steps 1-8 for one packet (conntrack's RELATED answer aside, see [`judge`]).
///
/// The new flow's budget (a TCP SYN, or the first packet of a UDP flow, at a judged endpoint;
/// the tracked packet's is `conntrack::tracked`'s), in the order it is spent:
///
/// 1. the parse from the linear data ([`parse`], no helper calls), the fast path's cheap checks
///    (fragment, neighbour discovery, the Service mark), and for anything but a TCP SYN one
///    `PAL_CT` lookup that misses (a SYN opening a connection is never found: it is answered
///    before its key is even built);
/// 2. `PAL_ENDPOINTS` (hash, 4-byte key): step 2, which fails closed, and the endpoint's flags
///    and masks for the rest;
/// 3. egress only: `PAL_LOCAL_ADDRS` (hash), step 3;
/// 4. the policy (`palisade_common::precedence::admit`): `PAL_POD_IDS` (hash); for a known pod
///    `PAL_PORTS` (LPM), then `PAL_PEERS` (hash) only if the port has classes, then its CIDR
///    class (`PAL_CIDRS`, LPM, and `PAL_PEERS`) only if classes of the port are still
///    missing; for an unknown address `PAL_CIDRS` (and `PAL_PEERS`), then `PAL_PORTS` only if
///    some class holds the peer. A SYN from a known pod to a closed port: two lookups here;
/// 5. denied: a per-CPU counter, and with flow events on the event: a sender this CPU already
///    found over its budget is counted in the CPU's memo (`PAL_EVENT_MEMO`, one compare and
///    the coarse clock, nothing written); any other's is written into a per-CPU slot and sent
///    by [`flush`] within its sender's budget (`PAL_EVENT_LIMITS`, one lookup);
/// 6. allowed: a per-CPU counter, the event as above, and [`conntrack::track`]: the coarse
///    clock and one `PAL_CT` insert. That insert (an LRU update writing an element and a bucket
///    of a 262,144-entry table, cold in a single run) is most of this path: in the benchmark's
///    allowed row (single runs, 2026-12-07), about 220 of its 336 ns, where everything else
///    together, the test run's own 40 ns included, took 113-116 ns with the insert left out.
///    About 130 ns of it is the table's size, not its instructions: with 16,384 entries (a
///    table that fits a core's L2) the same path is 4.4x the empty program's single run, from
///    65,536 entries up 7.4-8x (`bench/ANALYSIS.md`, "The full run after the event memo").
///
/// Why no fewer: the endpoint entry is both the fail-closed check and the rules' masks; the
/// peer's identity decides step 6 and names its classes; the port's and the peer's classes are
/// the rules themselves, and a lookup is skipped as soon as it can no longer change their
/// intersection; the conntrack entry is what lets the flow's later packets and replies pass
/// without any of this. What the path no longer pays: the conntrack key for a SYN, the source
/// check of an ingress flow's local address (made once by the flow's first reply, see
/// `conntrack::tracked`), the event with flow events off.
#[inline(always)]
fn judge_new(ctx: &TcContext, direction: u8, parsed: u32) -> Result<bool, DropReason> {
    // Step 1, parsed by [`parse`].
    if parsed == PARSED_NOT_IP {
        bump(Stat::NotIp as u32);
        return Ok(false);
    }
    let Some(packet) = packet_slot().filter(|_| parsed != PARSED_MALFORMED) else {
        return Err(DropReason::Malformed);
    };
    let packet = &*packet;
    // SAFETY: `skb` is the context pointer the kernel handed to this program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // Step 2.
    // SAFETY: endpoint values are plain data; a concurrent update can only swap whole values.
    // Each drop below writes its event where it happens: folding them into one closure made
    // LLVM keep more of this frame alive, 528 bytes with the caller's, over the 512 limit.
    // A reference into the map, not a copy: the 104 bytes have no room in this frame. An
    // update of a hash map never writes the element a reader holds: it links a new element and
    // unlinks the old one, which is reused only by a later update. So the entry read here is
    // the old value or the new one, whole, unless two updates land while this program runs
    // (the same window the 40-byte copy had).
    let Some(endpoint) = (unsafe { ENDPOINTS.get(&ifindex) }) else {
        let reason = DropReason::NoEndpoint;
        owe(
            SCRATCH_MAIN,
            packet,
            Owed::new(ifindex, direction, FLOW_DENIED, reason as u8, NO_CLASS),
        );
        return Err(reason);
    };
    if packet.neighbour_discovery {
        return Ok(false);
    }
    // Step 3.
    if direction == DIR_EGRESS && !own_source(&packet.src, ifindex) {
        let reason = DropReason::SpoofedSource;
        owe(
            SCRATCH_MAIN,
            packet,
            Owed::new(ifindex, direction, FLOW_DENIED, reason as u8, NO_CLASS),
        );
        return Err(reason);
    }
    // Step 5's second half, for a Service flow whose backend is this pod: judged by the
    // client's egress policy before the backend's own hook judges it below.
    let translated = direction == DIR_INGRESS && service::judge_translated(ctx, packet)?;

    // A later fragment: no ports, its datagram's verdict (`fragments.rs`).
    if packet.fragment {
        if !endpoint.judged(direction) || fragments::follows_first(packet, direction, ifindex) {
            return Ok(translated);
        }
        let reason = DropReason::Fragment;
        owe(
            SCRATCH_MAIN,
            packet,
            Owed::new(ifindex, direction, FLOW_DENIED, reason as u8, NO_CLASS),
        );
        return Err(reason);
    }

    // Step 4, unless `conntrack::tracked` looked already and found nothing (the common case:
    // the key is then built again only for a flow that is admitted, by `conntrack::track`).
    if parsed != PARSED_NEW
        && conntrack::lookup(
            &conntrack::flow_of(packet, direction, ifindex),
            direction,
            packet.tcp_flags,
            true,
        ) != CtState::New
    {
        if packet.first_fragment {
            fragments::remember(packet, direction, ifindex);
        }
        return Ok(translated);
    }

    // Step 5.
    let (policy_drop, tier_drop, peer) = if direction == DIR_INGRESS {
        (
            DropReason::PolicyIngress,
            DropReason::TierIngress,
            &packet.src,
        )
    } else {
        (
            DropReason::PolicyEgress,
            DropReason::TierEgress,
            &packet.dst,
        )
    };
    let owe_main = |verdict: u8, reason: u8, class: u8| {
        owe(
            SCRATCH_MAIN,
            packet,
            Owed::new(ifindex, direction, verdict, reason, class),
        );
    };
    if endpoint.judged(direction) {
        if packet.ext_headers {
            let reason = DropReason::Ipv6ExtensionHeader;
            owe_main(FLOW_DENIED, reason as u8, NO_CLASS);
            return Err(reason);
        }
        if direction == DIR_EGRESS && service::is_service(&packet.dst) {
            if let Err(reason) = service::defer(ctx, packet, ifindex) {
                owe_main(FLOW_DENIED, reason as u8, NO_CLASS);
                return Err(reason);
            }
            // Its later fragments follow it to the translation (the node reassembles them
            // for the NAT, and the mark rides on the first fragment's buffer).
            if packet.first_fragment {
                fragments::remember(packet, direction, ifindex);
            }
            // The event is owed by the hook that judges the translated flow.
            return Ok(translated);
        }
        // Steps 6-9.
        let (reason, class) = match judge_policy(endpoint, direction, peer, packet) {
            Admission::FromHost => (AllowReason::FromHost as u8, NO_CLASS),
            Admission::Class(class) => (AllowReason::Policy as u8, class),
            Admission::NoRule => (AllowReason::NotIsolated as u8, NO_CLASS),
            Admission::Denied => (DROPPED_BY_POLICY | policy_drop as u8, NO_CLASS),
            Admission::TierDenied(class) => (DROPPED_BY_POLICY | tier_drop as u8, class),
        };
        if reason & DROPPED_BY_POLICY == 0 {
            owe_main(FLOW_ALLOWED, reason, class);
        } else if audited(endpoint) {
            bump(Stat::AuditPassed as u32);
            owe_main(FLOW_AUDIT, reason & !DROPPED_BY_POLICY, class);
        } else {
            let dropped = reason & !DROPPED_BY_POLICY;
            owe_main(FLOW_DENIED, dropped, class);
            return Err(if dropped == tier_drop as u8 {
                tier_drop
            } else {
                policy_drop
            });
        }
    } else {
        owe_main(FLOW_ALLOWED, AllowReason::NotIsolated as u8, NO_CLASS);
    }

    // The local address of what the pod sends passed step 3. Of what it receives, it is checked
    // by the first packet the pod sends on the flow (`conntrack::tracked`, which then sets
    // `CT_F_LOCAL_OWN`), not here: the same one lookup per flow, off the new flow's path, and
    // none for a flow that is never answered.
    conntrack::track(
        packet,
        direction,
        ifindex,
        endpoint.id,
        direction == DIR_EGRESS,
    );
    if packet.first_fragment {
        fragments::remember(packet, direction, ifindex);
    }
    bump(Stat::NewFlowAllowed as u32);
    Ok(true)
}
