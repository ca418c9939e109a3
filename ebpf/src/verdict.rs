//! The verdict: conntrack first, then the endpoint's policy, in the precedence documented in
//! `palisade_common`. Returns TC action codes; under TCX, `TC_ACT_UNSPEC` hands the packet to the
//! next program (another CNI's) rather than forcing a pass.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::bpf_ktime_get_ns,
    maps::lpm_trie::Key,
    programs::TcContext,
};
use palisade_common::{
    Addr, AllowReason, CtKey, CtValue, DIR_EGRESS, DIR_INGRESS, DropReason, EP_EGRESS_ISOLATED,
    EP_INGRESS_ISOLATED, EndpointInfo, FLOW_ALLOWED, FLOW_AUDIT, FLOW_DENIED, FLOW_TRANSLATED,
    IDENTITY_HOST, NO_CLASS, OriginalKey, OriginalValue, PORT_KEY_FIXED_BITS, PROTO_SCTP,
    PROTO_TCP, PROTO_UDP, PeerKey, PortKey, SCRATCH_MAIN, SCRATCH_TRANSLATED, STAT_DROP_BASE, Stat,
};

use crate::{
    events::{Owed, audited, flush, owe},
    maps::{
        CIDRS, CT, ENDPOINTS, LOCAL_ADDRS, ORIGINAL_DST, PEERS, POD_IDS, PORTS, SERVICES, bump,
    },
    parse::{Packet, parse},
};

/// [`allowed`]'s answer for ingress from the node itself.
const FROM_HOST: u8 = 0xfe;

const PASS: i32 = TC_ACT_UNSPEC;
const DROP: i32 = TC_ACT_SHOT as i32;

#[inline(always)]
pub(crate) fn judge(ctx: &TcContext, direction: u8) -> i32 {
    if crate::icmp::related_to_tracked_flow(ctx, direction) {
        return PASS;
    }
    match try_judge(ctx, direction) {
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

/// [`try_judge`]'s answers: pass, pass owing an event, or drop (`DROPPED | reason`).
const QUIET: u32 = 0;
const OWED: u32 = 1;
const DROPPED: u32 = 0x100;

/// The event a verdict on `packet` at endpoint `ifindex` owes (see `events.rs`).
#[inline(always)]
fn owed(ifindex: u32, direction: u8, verdict: u8, reason: u8, class: u8) -> Owed {
    Owed {
        ifindex,
        direction,
        verdict,
        reason,
        class,
        flags: 0,
    }
}

/// The packet passes (`Ok`, true when an event is owed: a new flow) or is dropped (`Err`; an
/// event is owed unless the packet could not be parsed). Not inlined: called after
/// [`crate::icmp::related_to_tracked_flow`], the two frames never add up against the 512-byte
/// stack limit; [`flush`] runs after it returns, for the same reason.
///
/// The answer is a plain integer: LLVM once folded a `Result` built from a map lookup into
/// shifts of the lookup's pointer, which the verifier refuses.
#[inline(never)]
fn try_judge(ctx: &TcContext, direction: u8) -> u32 {
    match judge_new(ctx, direction) {
        Ok(false) => QUIET,
        Ok(true) => OWED,
        Err(reason) => DROPPED | reason as u32,
    }
}

#[inline(always)]
fn judge_new(ctx: &TcContext, direction: u8) -> Result<bool, DropReason> {
    let Some(packet) = parse(ctx)? else {
        bump(Stat::NotIp as u32);
        return Ok(false);
    };
    // SAFETY: `skb` is the context pointer the kernel handed to this program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: endpoint values are plain data; a concurrent update can only swap whole values.
    // Each drop below writes its event where it happens: folding them into one closure made
    // LLVM keep more of this frame alive, 528 bytes with the caller's, over the 512 limit.
    let Some(endpoint) = (unsafe { ENDPOINTS.get(&ifindex) }).copied() else {
        let reason = DropReason::NoEndpoint;
        owe(
            SCRATCH_MAIN,
            &packet,
            owed(ifindex, direction, FLOW_DENIED, reason as u8, NO_CLASS),
        );
        return Err(reason);
    };
    if packet.neighbour_discovery {
        return Ok(false);
    }
    if direction == DIR_EGRESS && !own_source(&packet.src, ifindex) {
        let reason = DropReason::SpoofedSource;
        owe(
            SCRATCH_MAIN,
            &packet,
            owed(ifindex, direction, FLOW_DENIED, reason as u8, NO_CLASS),
        );
        return Err(reason);
    }
    let translated = direction == DIR_INGRESS && judge_translated(&packet)?;

    // One key, turned around for the reply and back: two would not fit the 512-byte stack.
    let mut flow = CtKey {
        saddr: packet.src,
        daddr: packet.dst,
        sport: packet.sport,
        dport: packet.dport,
        protocol: packet.protocol,
        direction,
        _pad: [0; 2],
        ifindex,
    };
    let mut tracked = CT.get_ptr(&flow).is_some();
    if !tracked {
        turn_around(&mut flow);
        tracked = CT.get_ptr(&flow).is_some();
        turn_around(&mut flow);
    }
    if tracked {
        bump(Stat::CtHit as u32);
        return Ok(translated);
    }

    let (isolated_flag, policy_drop, peer) = if direction == DIR_INGRESS {
        (EP_INGRESS_ISOLATED, DropReason::PolicyIngress, packet.src)
    } else {
        (EP_EGRESS_ISOLATED, DropReason::PolicyEgress, packet.dst)
    };
    let owe_main = |verdict: u8, reason: u8, class: u8| {
        owe(
            SCRATCH_MAIN,
            &packet,
            owed(ifindex, direction, verdict, reason, class),
        );
    };
    if endpoint.flags & isolated_flag != 0 {
        let unjudgeable = if packet.fragment {
            Some(DropReason::Fragment)
        } else if packet.ext_headers {
            Some(DropReason::Ipv6ExtensionHeader)
        } else {
            None
        };
        if let Some(reason) = unjudgeable {
            owe_main(FLOW_DENIED, reason as u8, NO_CLASS);
            return Err(reason);
        }
        if direction == DIR_EGRESS && SERVICES.get(Key::new(128, packet.dst)).is_some() {
            if let Err(reason) = defer(&packet, ifindex) {
                owe_main(FLOW_DENIED, reason as u8, NO_CLASS);
                return Err(reason);
            }
            // The event is owed by the hook that judges the translated flow.
            return Ok(translated);
        }
        match allowed(&endpoint, direction, &peer, &packet) {
            NO_CLASS if audited(&endpoint) => {
                bump(Stat::AuditPassed as u32);
                owe_main(FLOW_AUDIT, policy_drop as u8, NO_CLASS);
            }
            NO_CLASS => {
                owe_main(FLOW_DENIED, policy_drop as u8, NO_CLASS);
                return Err(policy_drop);
            }
            FROM_HOST => owe_main(FLOW_ALLOWED, AllowReason::FromHost as u8, NO_CLASS),
            class => owe_main(FLOW_ALLOWED, AllowReason::Policy as u8, class),
        }
    } else if packet.fragment {
        // Nothing to track without ports; an open endpoint lets it through.
        return Ok(translated);
    } else {
        owe_main(FLOW_ALLOWED, AllowReason::NotIsolated as u8, NO_CLASS);
    }

    let entry = CtValue {
        // SAFETY: a helper without arguments.
        created_ns: unsafe { bpf_ktime_get_ns() },
        endpoint: endpoint.id,
        _pad: 0,
    };
    if CT.insert(&flow, &entry, 0).is_err() {
        bump(Stat::CtInsertFailed as u32);
    }
    bump(Stat::NewFlowAllowed as u32);
    Ok(true)
}

/// The key of the reply to `key`'s flow: the other direction, at the same endpoint.
#[inline(always)]
fn turn_around(key: &mut CtKey) {
    core::mem::swap(&mut key.saddr, &mut key.daddr);
    core::mem::swap(&mut key.sport, &mut key.dport);
    key.direction ^= 1;
}

/// TC egress of the node's other interfaces: only Service flows of local pods, translated
/// towards another node, are judged here; everything else is not ours and passes untouched
/// (unparsable packets included: this hook sees the node's own traffic too).
#[inline(always)]
pub(crate) fn judge_uplink(ctx: &TcContext) -> i32 {
    let Ok(Some(packet)) = parse(ctx) else {
        return PASS;
    };
    match judge_translated(&packet) {
        Ok(false) => PASS,
        Ok(true) => {
            flush();
            PASS
        }
        Err(reason) => {
            bump(reason.stat_index());
            flush();
            DROP
        }
    }
}

/// Step 5a, first half: an egress-isolated pod opens a flow to a Service address. kube-proxy
/// translates it after this hook (PREROUTING DNAT), so the verdict is left to the hook that sees
/// the real destination: the backend's [`judge`] on this node, or [`judge_uplink`] when the
/// backend is elsewhere. Nothing is tracked yet, so every packet comes back here until one is
/// judged.
///
/// Why there and not here: the upstream e2e suite expects egress policy to apply to the backend
/// pod behind a ClusterIP, and only after DNAT is the backend known; judging "all backends"
/// here would be wrong as soon as they differ. A Service whose backend is the node itself
/// (hostNetwork) is delivered locally without crossing another hook, and so escapes this
/// egress check: a known limit, written down in the README.
#[inline(always)]
fn defer(packet: &Packet, ifindex: u32) -> Result<(), DropReason> {
    let key = OriginalKey {
        saddr: packet.src,
        sport: packet.sport,
        protocol: packet.protocol,
        _pad: 0,
    };
    let value = OriginalValue {
        daddr: packet.dst,
        dport: packet.dport,
        _pad: 0,
        ifindex,
    };
    // Without the record no later hook would judge the flow: fail closed.
    ORIGINAL_DST
        .insert(&key, &value, 0)
        .map_err(|_| DropReason::TrackingFull)?;
    bump(Stat::EgressDeferred as u32);
    Ok(())
}

/// Step 5a, second half: a packet whose source recorded a Service flow ([`defer`]) is judged by
/// that source's egress policy against the address it is now sent to. When allowed, the flow is
/// tracked under its original destination and the source's endpoint, so the replies
/// (un-translated by kube-proxy before they reach the source) pass the source's ingress hook.
/// `Ok(true)` when a flow was judged (its event is owed in [`SCRATCH_TRANSLATED`]).
#[inline(always)]
fn judge_translated(packet: &Packet) -> Result<bool, DropReason> {
    let key = OriginalKey {
        saddr: packet.src,
        sport: packet.sport,
        protocol: packet.protocol,
        _pad: 0,
    };
    // SAFETY: plain-data values.
    let Some(original) = (unsafe { ORIGINAL_DST.get(&key) }).copied() else {
        return Ok(false);
    };
    let _ = ORIGINAL_DST.remove(&key);
    bump(Stat::EgressJudgedAfterNat as u32);
    let owe_translated = |verdict: u8, reason: u8, class: u8| {
        let mut owed = owed(original.ifindex, DIR_EGRESS, verdict, reason, class);
        owed.flags = FLOW_TRANSLATED;
        owe(SCRATCH_TRANSLATED, packet, owed);
    };
    // SAFETY: plain-data values.
    let Some(source) = (unsafe { ENDPOINTS.get(&original.ifindex) }).copied() else {
        owe_translated(FLOW_DENIED, DropReason::NoEndpoint as u8, NO_CLASS);
        return Err(DropReason::NoEndpoint);
    };
    match allowed(&source, DIR_EGRESS, &packet.dst, packet) {
        NO_CLASS if audited(&source) => {
            bump(Stat::AuditPassed as u32);
            owe_translated(FLOW_AUDIT, DropReason::PolicyEgress as u8, NO_CLASS);
        }
        NO_CLASS => {
            owe_translated(FLOW_DENIED, DropReason::PolicyEgress as u8, NO_CLASS);
            return Err(DropReason::PolicyEgress);
        }
        class => owe_translated(FLOW_ALLOWED, AllowReason::Policy as u8, class),
    }
    let flow = CtKey {
        saddr: packet.src,
        daddr: original.daddr,
        sport: packet.sport,
        dport: original.dport,
        protocol: packet.protocol,
        direction: DIR_EGRESS,
        _pad: [0; 2],
        // The client's endpoint, where its later packets and the replies are looked up.
        ifindex: original.ifindex,
    };
    let entry = CtValue {
        // SAFETY: a helper without arguments.
        created_ns: unsafe { bpf_ktime_get_ns() },
        endpoint: source.id,
        _pad: 0,
    };
    if CT.insert(&flow, &entry, 0).is_err() {
        bump(Stat::CtInsertFailed as u32);
    }
    Ok(true)
}

/// Step 3 of the precedence: a pod sends only from its own addresses, or from an IPv6
/// link-local one (never routed off the veth).
#[inline(always)]
fn own_source(src: &Addr, ifindex: u32) -> bool {
    let link_local = src.bytes[0] == 0xfe && src.bytes[1] & 0xc0 == 0x80;
    // SAFETY: plain-data values.
    link_local || unsafe { LOCAL_ADDRS.get(src) }.is_some_and(|owner| *owner == ifindex)
}

/// Steps 6-8 of the precedence: the node, then peer classes against port classes. The lowest
/// class that admits the flow, [`FROM_HOST`], or [`NO_CLASS`] when nothing does.
#[inline(always)]
fn allowed(endpoint: &EndpointInfo, direction: u8, peer: &Addr, packet: &Packet) -> u8 {
    let (mut peer_mask, mut port_mask) = if direction == DIR_EGRESS {
        (endpoint.any_peer[1], endpoint.any_port[1])
    } else {
        (endpoint.any_peer[0], endpoint.any_port[0])
    };
    // SAFETY: plain-data values.
    if let Some(identity) = unsafe { POD_IDS.get(peer) } {
        let identity = identity.identity;
        if identity == IDENTITY_HOST && direction == DIR_INGRESS {
            return FROM_HOST;
        }
        let key = PeerKey {
            endpoint: endpoint.id,
            peer: identity,
            direction,
            _pad: [0; 3],
        };
        // SAFETY: plain-data values.
        if let Some(mask) = unsafe { PEERS.get(&key) } {
            peer_mask |= *mask;
        }
    }
    if let Some(cidr) = CIDRS.get(Key::new(128, *peer)) {
        let key = PeerKey {
            endpoint: endpoint.id,
            peer: cidr.identity,
            direction,
            _pad: [0; 3],
        };
        // SAFETY: plain-data values.
        if let Some(mask) = unsafe { PEERS.get(&key) } {
            peer_mask |= *mask;
        }
    }
    if peer_mask == 0 {
        return NO_CLASS;
    }
    if matches!(packet.protocol, PROTO_TCP | PROTO_UDP | PROTO_SCTP) {
        let key = PortKey {
            endpoint: endpoint.id,
            direction,
            protocol: packet.protocol,
            port_be: packet.dport.to_be_bytes(),
        };
        if let Some(mask) = PORTS.get(Key::new(PORT_KEY_FIXED_BITS + 16, key)) {
            port_mask |= *mask;
        }
    }
    let admitting = peer_mask & port_mask;
    if admitting == 0 {
        NO_CLASS
    } else {
        admitting.trailing_zeros() as u8
    }
}
