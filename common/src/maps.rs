//! Names and sizes: the programs, the maps (by the names the object declares them under, which
//! the agent checks on load), their capacities, and the ABI version pinned state is tagged with.

#[cfg(doc)]
use crate::{
    Addr, EndpointInfo, EndpointKey, EventLimit, FlowConfig, FlowEvent, OriginalKey, OriginalValue,
    SCRATCH_MAIN, SCRATCH_TRANSLATED, Stat,
};

/// Bumped whenever a layout in this crate changes; pinned state of another ABI is never re-adopted.
pub const ABI_VERSION: u32 = 7;

/// TC ingress on the pod's host-side veth: packets the pod sends (its egress policy).
pub const PROG_FROM_POD: &str = "palisade_from_pod";
/// TC egress on the pod's host-side veth: packets delivered to the pod (its ingress policy).
pub const PROG_TO_POD: &str = "palisade_to_pod";
/// TC egress on the node's other interfaces (links to other nodes and to the outside): judges
/// the egress policy of Service traffic that kube-proxy sent off the node (see
/// [`MAP_ORIGINAL_DST`]).
pub const PROG_UPLINK: &str = "palisade_uplink";
/// TC ingress on the node's other interfaces: drops what arrives from outside the node carrying
/// the source address of one of its pods or of the node itself (see `SECURITY.md`), and in
/// strict mode ([`FlowConfig`]'s `CFG_STRICT_UPLINK`) any pod address the route back does not
/// lead out of the same interface.
pub const PROG_FROM_UPLINK: &str = "palisade_from_uplink";
/// A classifier that passes every packet on (`TC_ACT_UNSPEC`) and does nothing else: the baseline `cargo xtask bench`
/// measures the programs' per-packet cost against (BPF_PROG_TEST_RUN). Never attached; loaded
/// only on request ([`PROG_UPLINK`] and the pod programs are loaded by every agent).
pub const PROG_EMPTY: &str = "palisade_empty";

pub const MAP_ENDPOINTS: &str = "PAL_ENDPOINTS";
pub const MAP_POD_IDENTITIES: &str = "PAL_POD_IDS";
pub const MAP_CIDRS: &str = "PAL_CIDRS";
pub const MAP_PEERS: &str = "PAL_PEERS";
pub const MAP_PORTS: &str = "PAL_PORTS";
pub const MAP_CONNTRACK: &str = "PAL_CT";
pub const MAP_STATS: &str = "PAL_STATS";
/// LPM trie of the cluster's Service address ranges (ClusterIPs), keyed like [`MAP_CIDRS`],
/// value `u32` (unused, 1). Egress towards them is judged after kube-proxy's translation.
pub const MAP_SERVICES: &str = "PAL_SERVICES";
/// LRU hash [`OriginalKey`] -> [`OriginalValue`]: a new flow from an egress-isolated pod to a
/// Service address, recorded by [`PROG_FROM_POD`] before kube-proxy translates it, and judged by
/// whichever hook sees it after translation ([`PROG_TO_POD`] of the backend, or
/// [`PROG_UPLINK`]) against the real destination. The source address and port survive DNAT,
/// so they find the record again; only the packet the record was made for, which carries
/// [`SERVICE_MARK`](crate::SERVICE_MARK), is judged by it, within
/// [`ORIGINAL_DST_LIFETIME_NS`](crate::ORIGINAL_DST_LIFETIME_NS).
pub const MAP_ORIGINAL_DST: &str = "PAL_ORIG_DST";
/// Hash [`Addr`] -> [`EndpointKey`]: every address of every local pod, with the ifindex of the
/// pod's host-side veth. [`PROG_FROM_POD`] drops what a pod sends from any other address
/// (precedence step 3). Written before the endpoint's [`EndpointInfo`], removed after it.
pub const MAP_LOCAL_ADDRS: &str = "PAL_LOCAL_ADDRS";

/// Ring buffer of [`FlowEvent`]s: every denied packet and every new allowed (or audited)
/// connection, never a packet of an established flow. Rate-limited per source address
/// ([`MAP_EVENT_LIMITS`]); when the agent falls behind and the buffer is full, events are lost
/// and counted ([`Stat::EventsLost`]).
pub const MAP_EVENTS: &str = "PAL_EVENTS";
/// LRU hash [`Addr`] -> [`EventLimit`]: the per-sender event budget of the current window. A
/// local pod's events (egress verdicts) are budgeted by its endpoint, under `ff00::<ifindex>`
/// (its claimed source may be another's address); anyone else's by source address.
pub const MAP_EVENT_LIMITS: &str = "PAL_EVENT_LIMITS";
/// Per-CPU array of [`EVENT_MEMO_SLOTS`] [`EventMemo`](crate::EventMemo)s: budgets the CPU
/// last found spent (a slot per sender, by a fold of its address), checked before an event is
/// even written.
pub const MAP_EVENT_MEMO: &str = "PAL_EVENT_MEMO";
/// Per-CPU array of two [`FlowEvent`]s: where a verdict writes the event it owes while the
/// packet is being judged, emitted once the verdict returns (the judging frame has no stack to
/// spare). Slot [`SCRATCH_TRANSLATED`] holds the egress verdict of a Service flow judged after
/// translation, slot [`SCRATCH_MAIN`] the hook's own.
pub const MAP_EVENT_SCRATCH: &str = "PAL_EVENT_SCRATCH";
/// Array of one [`FlowConfig`], written by the agent; read only when an event is owed or a
/// packet would be dropped, so it costs nothing on established flows.
pub const MAP_FLOW_CONFIG: &str = "PAL_FLOW_CONFIG";

/// Array of one [`CtTimeouts`](crate::CtTimeouts), written by the agent: how long idle flows
/// stay tracked. The agent also removes expired entries (the programs ignore them).
pub const MAP_CT_CONFIG: &str = "PAL_CT_CONFIG";
/// LRU hash [`FragKey`](crate::FragKey) -> [`FragValue`](crate::FragValue): datagrams whose
/// first fragment passed at an endpoint, so their later fragments (which carry no ports) get
/// its verdict for [`FRAGMENT_LIFETIME_NS`](crate::FRAGMENT_LIFETIME_NS).
pub const MAP_FRAGMENTS: &str = "PAL_FRAGS";

/// Every map, for the agent's checks that the object and this crate agree.
pub const ALL_MAPS: [&str; 17] = [
    MAP_ENDPOINTS,
    MAP_POD_IDENTITIES,
    MAP_CIDRS,
    MAP_PEERS,
    MAP_PORTS,
    MAP_CONNTRACK,
    MAP_STATS,
    MAP_SERVICES,
    MAP_ORIGINAL_DST,
    MAP_LOCAL_ADDRS,
    MAP_EVENTS,
    MAP_EVENT_LIMITS,
    MAP_EVENT_MEMO,
    MAP_EVENT_SCRATCH,
    MAP_FLOW_CONFIG,
    MAP_CT_CONFIG,
    MAP_FRAGMENTS,
];

pub const MAX_ENDPOINTS: u32 = 4096;
pub const MAX_POD_IDENTITIES: u32 = 262_144;
pub const MAX_CIDRS: u32 = 65_536;
pub const MAX_PEERS: u32 = 524_288;
pub const MAX_PORTS: u32 = 262_144;
pub const MAX_CONNTRACK: u32 = 262_144;
pub const MAX_SERVICE_RANGES: u32 = 64;
pub const MAX_ORIGINAL_DST: u32 = 65_536;
pub const MAX_FRAGMENTS: u32 = 16_384;
/// Room for every endpoint to be dual-stack, with slack.
pub const MAX_LOCAL_ADDRS: u32 = 4 * MAX_ENDPOINTS;
/// [`MAP_EVENTS`] size in bytes (a power-of-two number of pages): 14,563 events of 64 bytes and
/// their 8-byte record headers.
pub const EVENTS_RING_BYTES: u32 = 1 << 20;
/// Sources whose event budget is remembered at once ([`MAP_EVENT_LIMITS`]).
pub const MAX_EVENT_LIMITS: u32 = 16_384;
/// Slots of [`MAP_EVENT_MEMO`] per CPU (a power of two).
pub const EVENT_MEMO_SLOTS: u32 = 16;
/// The window of the per-source event budget ([`FlowConfig::events_per_window`]).
pub const EVENT_WINDOW_NS: u64 = 1_000_000_000;

/// Rules of one endpoint and direction are grouped into at most this many classes (rules with
/// the same peers, or the same port set, share one; see [`crate::precedence`]).
pub const MAX_CLASSES: usize = 64;
