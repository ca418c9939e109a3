//! Flow events: what the programs report about each verdict on a new flow (and each drop)
//! through [`MAP_EVENTS`], and the node-wide settings that govern them ([`MAP_FLOW_CONFIG`]).

use bytemuck::{Pod, Zeroable};

use crate::{Addr, EVENT_MEMO_SLOTS};
#[cfg(doc)]
use crate::{
    AllowReason, DIR_EGRESS, DIR_INGRESS, DropReason, EP_AUDIT, EVENT_WINDOW_NS, MAP_ENDPOINTS,
    MAP_EVENT_LIMITS, MAP_EVENT_MEMO, MAP_EVENT_SCRATCH, MAP_EVENTS, MAP_FLOW_CONFIG,
    MAP_ORIGINAL_DST,
};

/// [`FlowEvent::verdict`]: the flow was admitted ([`FlowEvent::reason`] is an [`AllowReason`]).
pub const FLOW_ALLOWED: u8 = 0;
/// [`FlowEvent::verdict`]: the packet was dropped ([`FlowEvent::reason`] is a [`DropReason`]).
pub const FLOW_DENIED: u8 = 1;
/// [`FlowEvent::verdict`]: policy would have dropped the flow; it passed in audit mode
/// ([`FlowEvent::reason`] is the [`DropReason`] it would have had).
pub const FLOW_AUDIT: u8 = 2;

/// [`FlowEvent::class`] when no class decided (not isolated, from the node, or denied).
pub const NO_CLASS: u8 = 0xff;

/// [`FlowEvent::flags`]: judged after kube-proxy's translation (a Service flow, see
/// [`MAP_ORIGINAL_DST`]); the destination is the backend.
pub const FLOW_TRANSLATED: u8 = 1 << 0;

/// One verdict on one new flow, as [`MAP_EVENTS`] carries it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowEvent {
    /// `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC, coarse) at the verdict.
    pub time_ns: u64,
    /// The packet's source and destination as judged (after translation, for a Service flow).
    pub saddr: Addr,
    pub daddr: Addr,
    /// Host byte order; 0 for protocols without ports.
    pub sport: u16,
    pub dport: u16,
    /// The endpoint whose policy judged the flow ([`MAP_ENDPOINTS`] key); 0 for none.
    pub ifindex: u32,
    /// Events of the same source not sent since its previous one (over budget).
    pub suppressed: u32,
    pub protocol: u8,
    /// The judging endpoint's direction ([`DIR_INGRESS`] or [`DIR_EGRESS`]).
    pub direction: u8,
    /// [`FLOW_ALLOWED`], [`FLOW_DENIED`] or [`FLOW_AUDIT`].
    pub verdict: u8,
    /// An [`AllowReason`] or a [`DropReason`], by verdict.
    pub reason: u8,
    /// The deciding class of an allowed flow, or [`NO_CLASS`].
    pub class: u8,
    /// `FLOW_*` flags.
    pub flags: u8,
    /// Scratch bookkeeping: non-zero while the event is owed (never read by the agent).
    pub pending: u8,
    pub _pad: [u8; 5],
}

/// [`FlowConfig::flags`]: send flow events.
pub const CFG_EVENTS: u32 = 1 << 0;
/// [`FlowConfig::flags`]: every endpoint of the node is in audit mode ([`EP_AUDIT`]).
pub const CFG_AUDIT_ALL: u32 = 1 << 1;
/// [`FlowConfig::flags`]: strict uplinks. A packet arriving on an uplink whose source is a
/// cluster pod's address passes only when the node's route back to that address leaves
/// through the same interface (an eBPF reverse-path check; see `SECURITY.md`).
pub const CFG_STRICT_UPLINK: u32 = 1 << 2;

/// [`MAP_FLOW_CONFIG`]'s one value. All zero (no events, enforce) until the agent writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowConfig {
    /// `CFG_*` flags.
    pub flags: u32,
    /// Events each source address may cause per [`EVENT_WINDOW_NS`]; the rest are suppressed
    /// and counted.
    pub events_per_window: u32,
}

/// [`MAP_EVENT_LIMITS`] value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct EventLimit {
    /// When the current window began (`bpf_ktime_get_coarse_ns()`).
    pub window_ns: u64,
    /// Events sent in the current window, and [`EVENT_LIMIT_MEMOIZED`].
    pub sent: u32,
    /// Events suppressed since the last one sent (besides those CPUs still hold in their
    /// [`EventMemo`]s, added to it before the next event is sent).
    pub suppressed: u32,
}

/// [`EventLimit::sent`]: some CPU's [`EventMemo`] has held this budget since the last event of
/// its sender was sent, so the memos' counts are gathered before the next one is.
pub const EVENT_LIMIT_MEMOIZED: u32 = 1 << 31;

/// [`MAP_EVENT_MEMO`]'s one value per CPU: the budget this CPU last found spent, so that a
/// sender far over its budget costs a comparison per packet rather than a lookup in
/// [`MAP_EVENT_LIMITS`] (and the event it owes is not even written).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct EventMemo {
    /// The spent budget's [`MAP_EVENT_LIMITS`] key.
    pub budget: Addr,
    /// When its window ends (`bpf_ktime_get_coarse_ns()`): until then, its events are
    /// suppressed here (a budget the agent raises meanwhile applies to this sender from the
    /// next window).
    pub until_ns: u64,
    /// Events suppressed here and not yet added to the budget's [`EventLimit::suppressed`].
    pub suppressed: u32,
    pub _pad: u32,
}

impl EventMemo {
    /// The slot (of [`EVENT_MEMO_SLOTS`]) that holds `budget`'s memo: a fold of its words, so
    /// that a few senders over their budgets at once on one CPU (a scan from a pod and one from
    /// outside) each keep theirs. Two senders in one slot cost what a sender without a memo
    /// does: a [`MAP_EVENT_LIMITS`] lookup.
    #[inline(always)]
    pub const fn slot_of(budget: &Addr) -> u32 {
        let w = &budget.words;
        let mut x = w[0] ^ w[1] ^ w[2] ^ w[3];
        x ^= x >> 16;
        x ^= x >> 8;
        x & (EVENT_MEMO_SLOTS - 1)
    }
}

/// [`MAP_EVENT_SCRATCH`] slots.
pub const SCRATCH_MAIN: u32 = 0;
pub const SCRATCH_TRANSLATED: u32 = 1;

const _: () = {
    assert!(core::mem::size_of::<FlowEvent>() == 64);
    assert!(core::mem::size_of::<FlowConfig>() == 8);
    assert!(core::mem::size_of::<EventLimit>() == 16);
    assert!(core::mem::size_of::<EventMemo>() == 32);
};
