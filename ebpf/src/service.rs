//! Egress policy of Service traffic (step 5 of the precedence in `palisade_common::precedence`).
//! An egress-isolated pod's new flow to a Service address cannot be judged where it is sent:
//! kube-proxy translates it after the pod's hook, and only then is the backend known. So the
//! pod's hook records the flow ([`defer`]), and whichever hook sees the translated packet -
//! the backend's on this node, or the uplink's ([`judge_uplink`]) when the backend is elsewhere -
//! judges it against the source's egress policy ([`judge_translated`]).
//!
//! Why there and not here: the upstream e2e suite expects egress policy to apply to the backend
//! pod behind a ClusterIP, and only after DNAT is the backend known; judging "all backends" at
//! the source would be wrong as soon as they differ. A Service whose backend is the node itself
//! (hostNetwork) is delivered locally without crossing another hook, and so escapes this egress
//! check: a known limit, written down in the README.
//!
//! The record belongs to one packet: [`defer`] marks the packet it records ([`SERVICE_MARK`],
//! which no pod can set: the kernel clears the mark when a packet leaves a network namespace),
//! and only a marked packet is judged by a record. A record that a packet never came back for
//! (dropped on the way, say for its TTL) is consumed by nothing else, and expires after
//! [`ORIGINAL_DST_LIFETIME_NS`]. A marked packet that finds no live record is dropped: its
//! egress cannot be judged. Nor is one whose record was contended: two packets of one source
//! port sent to different Service addresses within the record's life cannot be told apart
//! after translation, so both are dropped rather than one tracked under the other's address.

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use palisade_common::{
    Addr, Admission, AllowReason, CT_KIND_PLAIN, CtKey, DIR_EGRESS, DropReason, FLOW_ALLOWED,
    FLOW_AUDIT, FLOW_DENIED, FLOW_TRANSLATED, NO_CLASS, ORIGINAL_DST_LIFETIME_NS, OriginalKey,
    OriginalValue, SCRATCH_TRANSLATED, SERVICE_MARK, Stat,
};

use crate::{
    action::{DROP, PASS},
    conntrack,
    events::{Owed, audited, flush, owe},
    maps::{ENDPOINTS, ORIGINAL_DST, SERVICES, bump},
    parse::{Packet, copied, packet_slot, parse_into},
    policy::judge_policy,
};

/// TC egress of the node's other interfaces: only Service flows of local pods, translated
/// towards another node, are judged here; everything else is not ours and passes untouched
/// (unparsable packets included: this hook sees the node's own traffic too).
#[inline(always)]
pub(crate) fn judge_uplink(ctx: &TcContext) -> i32 {
    let Some(packet) = packet_slot() else {
        return PASS;
    };
    if parse_into(ctx, packet, DIR_EGRESS) != Ok(true) {
        return PASS;
    }
    let packet = &*packet;
    match judge_translated(ctx, packet) {
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

/// Whether `addr` is a Service address (in [`SERVICES`]).
#[inline(always)]
pub(crate) fn is_service(addr: &Addr) -> bool {
    SERVICES.get(Key::new(128, *addr)).is_some()
}

/// The first half: an egress-isolated pod opens a flow to a Service address. The verdict is
/// left to the hook that sees the real destination; nothing is tracked yet, so every packet
/// comes back here until one is judged. The packet is marked ([`SERVICE_MARK`]) as the one
/// the record is for.
#[inline(always)]
pub(crate) fn defer(ctx: &TcContext, packet: &Packet, ifindex: u32) -> Result<(), DropReason> {
    let key = OriginalKey {
        saddr: copied(&packet.src),
        sport: packet.sport,
        protocol: packet.protocol,
        _pad: 0,
    };
    let now = crate::clock::now_ns();
    // Two packets of one source port on their way to different Service addresses at once:
    // whichever translation comes back first would be judged, and tracked, as the other's.
    // SAFETY: plain-data values, read in place.
    let contended = unsafe { ORIGINAL_DST.get(&key) }.is_some_and(|waiting| {
        now >= waiting.recorded_ns
            && now - waiting.recorded_ns <= ORIGINAL_DST_LIFETIME_NS
            && (waiting.daddr != packet.dst || waiting.dport != packet.dport)
    });
    let value = OriginalValue {
        daddr: copied(&packet.dst),
        dport: packet.dport,
        tcp_flags: packet.tcp_flags,
        contended: u8::from(contended),
        ifindex,
        recorded_ns: now,
    };
    // Without the record no later hook would judge the flow: fail closed.
    ORIGINAL_DST
        .insert(&key, &value, 0)
        .map_err(|_| DropReason::TrackingFull)?;
    set_mark(ctx, mark(ctx) | service_mark());
    bump(Stat::EgressDeferred as u32);
    Ok(())
}

/// The Service mark bit ([`palisade_common::GLOBAL_SERVICE_MARK`]), set by the agent at load.
#[unsafe(no_mangle)]
static PAL_SERVICE_MARK: u32 = SERVICE_MARK;

#[inline(always)]
fn service_mark() -> u32 {
    // SAFETY: a read-only global; volatile, so the compiler keeps the load the loader's value
    // lands in rather than folding the default.
    unsafe { core::ptr::read_volatile(&PAL_SERVICE_MARK) }
}

/// Whether the packet carries the Service mark: a packet [`defer`] recorded, back from
/// kube-proxy's translation.
#[inline(always)]
pub(crate) fn marked(ctx: &TcContext) -> bool {
    mark(ctx) & service_mark() != 0
}

#[inline(always)]
fn mark(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` is the context pointer the kernel handed to this program.
    unsafe { (*ctx.skb.skb).mark }
}

#[inline(always)]
fn set_mark(ctx: &TcContext, mark: u32) {
    // SAFETY: as above; TC programs may write `mark`.
    unsafe { (*ctx.skb.skb).mark = mark };
}

/// The second half: a packet whose source recorded a Service flow ([`defer`]) is judged by that
/// source's egress policy against the address it is now sent to. When allowed, the flow is
/// tracked under its original destination and the source's endpoint, so the replies
/// (un-translated by kube-proxy before they reach the source) pass the source's ingress hook.
/// `Ok(true)` when a flow was judged (its event is owed in [`SCRATCH_TRANSLATED`]).
#[inline(always)]
pub(crate) fn judge_translated(ctx: &TcContext, packet: &Packet) -> Result<bool, DropReason> {
    let (marked, bit) = (mark(ctx), service_mark());
    if marked & bit == 0 {
        return Ok(false);
    }
    // Judged once, here: the next hook (and the next node) sees an ordinary packet.
    set_mark(ctx, marked & !bit);
    let key = OriginalKey {
        saddr: copied(&packet.src),
        sport: packet.sport,
        protocol: packet.protocol,
        _pad: 0,
    };
    // SAFETY: plain-data values.
    let original = (unsafe { ORIGINAL_DST.get(&key) }).copied();
    let _ = ORIGINAL_DST.remove(&key);
    let now = crate::clock::now_ns();
    let Some(original) = original.filter(|o| {
        o.contended == 0 && now >= o.recorded_ns && now - o.recorded_ns <= ORIGINAL_DST_LIFETIME_NS
    }) else {
        let reason = DropReason::ServiceUnjudged;
        let mut owed = Owed::new(0, DIR_EGRESS, FLOW_DENIED, reason as u8, NO_CLASS);
        owed.flags = FLOW_TRANSLATED;
        owe(SCRATCH_TRANSLATED, packet, owed);
        return Err(reason);
    };
    bump(Stat::EgressJudgedAfterNat as u32);
    let owe_translated = |verdict: u8, reason: u8, class: u8| {
        let mut owed = Owed::new(original.ifindex, DIR_EGRESS, verdict, reason, class);
        owed.flags = FLOW_TRANSLATED;
        owe(SCRATCH_TRANSLATED, packet, owed);
    };
    // SAFETY: plain-data values.
    let Some(source) = (unsafe { ENDPOINTS.get(&original.ifindex) }) else {
        owe_translated(FLOW_DENIED, DropReason::NoEndpoint as u8, NO_CLASS);
        return Err(DropReason::NoEndpoint);
    };
    match judge_policy(source, DIR_EGRESS, &packet.dst, packet) {
        Admission::Denied if audited(source) => {
            bump(Stat::AuditPassed as u32);
            owe_translated(FLOW_AUDIT, DropReason::PolicyEgress as u8, NO_CLASS);
        }
        Admission::TierDenied(class) if audited(source) => {
            bump(Stat::AuditPassed as u32);
            owe_translated(FLOW_AUDIT, DropReason::TierEgress as u8, class);
        }
        Admission::Denied => {
            owe_translated(FLOW_DENIED, DropReason::PolicyEgress as u8, NO_CLASS);
            return Err(DropReason::PolicyEgress);
        }
        Admission::TierDenied(class) => {
            owe_translated(FLOW_DENIED, DropReason::TierEgress as u8, class);
            return Err(DropReason::TierEgress);
        }
        // Never on egress (step 6 is ingress only); said as the pod hooks would say it.
        Admission::FromHost => {
            owe_translated(FLOW_ALLOWED, AllowReason::FromHost as u8, NO_CLASS);
        }
        Admission::Class(class) => {
            owe_translated(FLOW_ALLOWED, AllowReason::Policy as u8, class);
        }
        Admission::NoRule => {
            owe_translated(FLOW_ALLOWED, AllowReason::NotIsolated as u8, NO_CLASS);
        }
    }
    let flow = CtKey::of(
        copied(&packet.src),
        copied(&original.daddr),
        packet.sport,
        original.dport,
        packet.protocol,
        CT_KIND_PLAIN,
        DIR_EGRESS,
        // The client's endpoint, where its later packets and the replies are looked up.
        original.ifindex,
    );
    // The source passed the client's source check (step 3) before its hook recorded it.
    conntrack::create(&flow, DIR_EGRESS, source.id, original.tcp_flags, true);
    Ok(true)
}
