//! Flow events: what a verdict owes the agent, and how it is sent.
//!
//! A verdict that decides a new flow (or drops a packet) writes the event it owes into a per-CPU
//! scratch slot ([`owe`]); the judging frame has no stack left for a 64-byte event. Once the
//! verdict has returned, [`flush`] sends what is owed through the ring buffer, within the
//! source's budget: at most `events_per_window` events per source address per second, the rest
//! counted and reported in that source's next event. Packets of tracked flows owe nothing and
//! never reach this code.

use palisade_common::{
    Addr, CFG_AUDIT_ALL, CFG_EVENTS, DIR_EGRESS, EP_AUDIT, EVENT_WINDOW_NS, EndpointInfo,
    EventLimit, FlowConfig, SCRATCH_MAIN, SCRATCH_TRANSLATED, Stat,
};

use crate::{
    maps::{EVENT_LIMITS, EVENT_SCRATCH, EVENTS, FLOW_CONFIG, bump},
    parse::{Packet, copied},
};

/// What an event says beyond the packet: who judged it and how.
pub(crate) struct Owed {
    pub ifindex: u32,
    pub direction: u8,
    pub verdict: u8,
    pub reason: u8,
    pub class: u8,
    pub flags: u8,
}

impl Owed {
    /// The event of a verdict at endpoint `ifindex` in `direction`, without flags.
    #[inline(always)]
    pub(crate) fn new(ifindex: u32, direction: u8, verdict: u8, reason: u8, class: u8) -> Self {
        Self {
            ifindex,
            direction,
            verdict,
            reason,
            class,
            flags: 0,
        }
    }
}

/// Records the event owed for `packet` in scratch `slot` ([`SCRATCH_MAIN`] or
/// [`SCRATCH_TRANSLATED`]); [`flush`] sends it.
#[inline(always)]
pub(crate) fn owe(slot: u32, packet: &Packet, owed: Owed) {
    // Events off: nothing is owed, nor written ([`send`] would drop it unsent).
    if !FLOW_CONFIG
        .get(0)
        .is_some_and(|config| config.flags & CFG_EVENTS != 0)
    {
        return;
    }
    let Some(event) = EVENT_SCRATCH.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: a per-CPU slot; only this program run on this CPU uses it until `flush`.
    let event = unsafe { &mut *event };
    event.saddr = copied(&packet.src);
    event.daddr = copied(&packet.dst);
    event.sport = packet.sport;
    event.dport = packet.dport;
    event.protocol = packet.protocol;
    event.ifindex = owed.ifindex;
    event.direction = owed.direction;
    event.verdict = owed.verdict;
    event.reason = owed.reason;
    event.class = owed.class;
    event.flags = owed.flags;
    event.pending = 1;
}

/// Whether a policy drop at `endpoint` is only reported (audit mode, per endpoint or for the
/// whole node). Read on the drop path only.
#[inline(always)]
pub(crate) fn audited(endpoint: &EndpointInfo) -> bool {
    endpoint.flags & EP_AUDIT != 0
        || FLOW_CONFIG
            .get(0)
            .is_some_and(|config| config.flags & CFG_AUDIT_ALL != 0)
}

/// Sends every owed event. Not inlined: it runs after the verdict's frame is gone.
///
/// With flow events off nothing is owed ([`owe`] writes nothing), so the slots are not even
/// read. An event owed in the instant before events were switched off stays owed until the
/// next flush with them on: sent late, never false.
#[inline(never)]
pub(crate) fn flush() {
    let Some(config) = FLOW_CONFIG.get(0) else {
        return;
    };
    if config.flags & CFG_EVENTS == 0 {
        return;
    }
    send(SCRATCH_TRANSLATED, config);
    send(SCRATCH_MAIN, config);
}

#[inline(always)]
fn send(slot: u32, config: &FlowConfig) {
    let Some(event) = EVENT_SCRATCH.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: as in `owe`.
    let event = unsafe { &mut *event };
    if event.pending == 0 {
        return;
    }
    event.pending = 0;
    let now = crate::clock::now_ns();
    event.time_ns = now;
    // The budget is per sender, so one flooding pod (or host) cannot use up another's: a local
    // pod's by its endpoint (the address it claims may be another's, which its spoofed packets
    // would otherwise spend), anyone else's by source address. Counts race between CPUs; a
    // budget is approximate, never unbounded.
    let budget = if event.direction == DIR_EGRESS && event.ifindex != 0 {
        endpoint_budget(event.ifindex)
    } else {
        event.saddr
    };
    // SAFETY: plain-data values.
    match EVENT_LIMITS.get_ptr_mut(&budget) {
        Some(limit) => {
            // SAFETY: a map value; concurrent updates can only make the counts approximate.
            let limit = unsafe { &mut *limit };
            if now.wrapping_sub(limit.window_ns) >= EVENT_WINDOW_NS {
                limit.window_ns = now;
                limit.sent = 0;
            }
            if limit.sent >= config.events_per_window {
                limit.suppressed = limit.suppressed.saturating_add(1);
                bump(Stat::EventsSuppressed as u32);
                return;
            }
            limit.sent += 1;
            event.suppressed = limit.suppressed;
            limit.suppressed = 0;
        }
        None => {
            if config.events_per_window == 0 {
                bump(Stat::EventsSuppressed as u32);
                return;
            }
            let fresh = EventLimit {
                window_ns: now,
                sent: 1,
                suppressed: 0,
            };
            // A full LRU evicts the least recent source; an error only loses the budget.
            let _ = EVENT_LIMITS.insert(&budget, &fresh, 0);
            event.suppressed = 0;
        }
    }
    if EVENTS
        .output::<palisade_common::FlowEvent>(&*event, 0)
        .is_ok()
    {
        bump(Stat::EventsSent as u32);
    } else {
        bump(Stat::EventsLost as u32);
    }
}

/// The budget key of the pod behind endpoint `ifindex`: an address in `ff00::/16` (reserved
/// multicast, never a packet's source), so it meets no real sender's.
#[inline(always)]
fn endpoint_budget(ifindex: u32) -> Addr {
    let i = ifindex.to_be_bytes();
    Addr::from_v6([
        0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, i[0], i[1], i[2], i[3],
    ])
}
