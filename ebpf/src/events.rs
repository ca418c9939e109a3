//! Flow events: what a verdict owes the agent, and how it is sent.
//!
//! A verdict that decides a new flow (or drops a packet) writes the event it owes into a per-CPU
//! scratch slot ([`owe`]); the judging frame has no stack left for a 64-byte event. Once the
//! verdict has returned, [`flush`] sends what is owed through the ring buffer, within the
//! source's budget: at most `events_per_window` events per source address per second, the rest
//! counted and reported in that source's next event. Packets of tracked flows owe nothing and
//! never reach this code.
//!
//! A sender far over its budget (a pod scanning closed ports, a host sweeping the node) is the
//! case the budget exists for, and the one that must cost least: each CPU remembers the last
//! budgets it found spent and until when ([`EventMemo`], a few slots by sender), and [`owe`] counts such a sender's
//! events there, before anything is written or looked up. The counts come home before the
//! sender's next event is sent: the budget's entry says a memo holds it
//! ([`EVENT_LIMIT_MEMOIZED`]), and [`gather`] adds every CPU's count for it.

use aya_ebpf::{cty::c_void, helpers::bpf_map_lookup_percpu_elem};
use palisade_common::{
    Addr, CFG_AUDIT_ALL, CFG_EVENTS, DIR_EGRESS, EP_AUDIT, EVENT_LIMIT_MEMOIZED, EVENT_WINDOW_NS,
    EndpointInfo, EventLimit, EventMemo, FlowConfig, SCRATCH_MAIN, SCRATCH_TRANSLATED, Stat,
};

use crate::{
    clock::now_ns,
    maps::{EVENT_LIMITS, EVENT_MEMO, EVENT_SCRATCH, EVENTS, FLOW_CONFIG, bump},
    parse::{Packet, copied},
};

/// The CPUs [`gather`] reads the memos of. A CPU beyond them adds its count to the budget when
/// it next remembers another ([`memoize`]).
const GATHERED_CPUS: u32 = 1024;

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
    if spent_here(packet, owed.direction, owed.ifindex) {
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
    let now = now_ns();
    event.time_ns = now;
    // The budget is per sender, so one flooding pod (or host) cannot use up another's: a local
    // pod's by its endpoint (the address it claims may be another's, which its spoofed packets
    // would otherwise spend), anyone else's by source address. Counts race between CPUs; a
    // budget is approximate, never unbounded.
    let budget = if by_endpoint(event.direction, event.ifindex) {
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
                limit.sent &= EVENT_LIMIT_MEMOIZED;
            }
            if limit.sent & !EVENT_LIMIT_MEMOIZED >= config.events_per_window {
                limit.suppressed = limit.suppressed.saturating_add(1);
                bump(Stat::EventsSuppressed as u32);
                memoize(&budget, limit, now);
                return;
            }
            if limit.sent & EVENT_LIMIT_MEMOIZED != 0 {
                limit.sent &= !EVENT_LIMIT_MEMOIZED;
                gather(&budget, limit);
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

/// Whether this CPU's memo holds the budget of the sender of an event owed for `packet`
/// (judged in `direction` at endpoint `ifindex`), spent for a while yet: the event is then
/// counted there, and neither written nor sent. The same sender as [`send`]'s budget key names,
/// compared a word at a time without building the key.
#[inline(always)]
fn spent_here(packet: &Packet, direction: u8, ifindex: u32) -> bool {
    let endpoint = by_endpoint(direction, ifindex);
    let slot = if endpoint {
        EventMemo::slot_of(&endpoint_budget(ifindex))
    } else {
        EventMemo::slot_of(&packet.src)
    };
    let Some(memo) = EVENT_MEMO.get_ptr_mut(slot) else {
        return false;
    };
    // SAFETY: a per-CPU slot; only this program run on this CPU writes it (`gather` aside,
    // whose races can only make a count approximate).
    let memo = unsafe { &mut *memo };
    let same = if endpoint {
        same_words(&memo.budget, &endpoint_budget(ifindex))
    } else {
        same_words(&memo.budget, &packet.src)
    };
    if !same || now_ns() >= memo.until_ns {
        return false;
    }
    memo.suppressed = memo.suppressed.saturating_add(1);
    bump(Stat::EventsSuppressed as u32);
    true
}

/// Remembers in this CPU's memo that `budget` (its entry `limit`) is spent until its window
/// ends, unless the memo holds another sender's counts whose window has not ended: that sender
/// keeps it, and this one is looked up as before. An ended one's counts are added to its own
/// budget first.
#[inline(always)]
fn memoize(budget: &Addr, limit: &mut EventLimit, now: u64) {
    let Some(memo) = EVENT_MEMO.get_ptr_mut(EventMemo::slot_of(budget)) else {
        return;
    };
    // SAFETY: as in `spent_here`.
    let memo = unsafe { &mut *memo };
    if memo.suppressed != 0 && !same_words(&memo.budget, budget) {
        if now < memo.until_ns {
            return;
        }
        // SAFETY: a map value; concurrent updates can only make the counts approximate.
        if let Some(other) = EVENT_LIMITS.get_ptr_mut(&memo.budget) {
            let other = unsafe { &mut *other };
            other.suppressed = other.suppressed.saturating_add(memo.suppressed);
        }
        memo.suppressed = 0;
    }
    memo.budget = copied(budget);
    memo.until_ns = limit.window_ns.wrapping_add(EVENT_WINDOW_NS);
    limit.sent |= EVENT_LIMIT_MEMOIZED;
}

/// Adds to `limit` (the entry of `budget`) the events every CPU's memo counted for it, before
/// its sender's next event carries the total. Runs once per window of a sender that went over
/// its budget, when its next event is sent.
#[inline(always)]
fn gather(budget: &Addr, limit: &mut EventLimit) {
    let index = EventMemo::slot_of(budget);
    for cpu in 0..GATHERED_CPUS {
        // SAFETY: the memo map and a key on the stack; the helper returns null past the last
        // possible CPU.
        let memo = unsafe {
            bpf_map_lookup_percpu_elem(
                core::ptr::addr_of!(EVENT_MEMO) as *mut c_void,
                core::ptr::addr_of!(index) as *const c_void,
                cpu,
            )
        } as *mut EventMemo;
        if memo.is_null() {
            break;
        }
        // SAFETY: another CPU's slot: a race with its program can only lose a count.
        let memo = unsafe { &mut *memo };
        if memo.suppressed != 0 && same_words(&memo.budget, budget) {
            limit.suppressed = limit.suppressed.saturating_add(memo.suppressed);
            memo.suppressed = 0;
        }
    }
}

/// Whether the budget of an event judged in `direction` at endpoint `ifindex` is the pod's
/// endpoint's ([`endpoint_budget`]) rather than its source address's: what a local pod sends.
/// [`send`] and [`spent_here`] name the same sender by it.
#[inline(always)]
fn by_endpoint(direction: u8, ifindex: u32) -> bool {
    direction == DIR_EGRESS && ifindex != 0
}

/// Whether two addresses are equal, a word at a time.
#[inline(always)]
fn same_words(a: &Addr, b: &Addr) -> bool {
    a.words[0] == b.words[0]
        && a.words[1] == b.words[1]
        && a.words[2] == b.words[2]
        && a.words[3] == b.words[3]
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
