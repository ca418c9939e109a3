//! The contract between Palisade's eBPF programs and its agent: map names, key and value
//! layouts, reserved identities and drop reasons. Everything here is `#[repr(C)]`, padded
//! explicitly and `bytemuck::Pod`, so a layout mistake is a compile error, and the sizes are
//! asserted below.
//!
//! # How a packet is judged
//!
//! Programs sit on the node side of each pod's veth: [`PROG_FROM_POD`] on TC ingress (what the
//! pod sends: the pod's *egress* policy) and [`PROG_TO_POD`] on TC egress (what the pod receives:
//! its *ingress* policy). The interface index names the endpoint ([`MAP_ENDPOINTS`]).
//!
//! A policy rule is `peers x ports`. Per endpoint and direction the agent groups rules by their
//! port set; each distinct port set is a *class* (a bit in a [`ClassMask`], at most
//! [`MAX_CLASSES`]). A peer gets the bits of the classes of every rule that lists it; a
//! (protocol, port) gets the bits of every class whose port set contains it. A new connection is
//! allowed when the two masks share a bit. Entries therefore grow as peers + ports, never as
//! peers x ports, and an `endPort` range costs at most 30 port prefixes.
//!
//! Lookup precedence for a packet at endpoint E, direction D, peer address A, protocol P, port N:
//!
//! 1. not IP (ARP, ...): pass; malformed or truncated IP: drop ([`DropReason::Malformed`]).
//! 2. [`MAP_ENDPOINTS`]\[ifindex\] missing: drop ([`DropReason::NoEndpoint`]) - a program is never
//!    attached before its endpoint is written, so a missing entry means we lost track: fail closed.
//!    IPv6 neighbour discovery then passes, uncounted (it must work for every pod).
//! 3. D is egress (the pod sends) and the source address is not E's own:
//!    [`MAP_LOCAL_ADDRS`]\[source\] != ifindex: drop ([`DropReason::SpoofedSource`]), whether or
//!    not E is isolated. Without this a pod could borrow a peer's address and be admitted by
//!    another pod's ingress policy as that peer. IPv6 link-local sources (`fe80::/10`) pass the
//!    check: they are never routed off the link, and a pod's kernel uses them (router
//!    solicitations, MLD). The unspecified source (`::`, `0.0.0.0`) does not: DAD's neighbour
//!    solicitation already passed at 2, and pods get their address without DHCP.
//! 4. [`MAP_CONNTRACK`] holds the packet's flow at this endpoint (ifindex) in this direction, or
//!    the reverse flow at this endpoint in the other direction (a reply): pass. Established
//!    flows are kept across policy changes. Entries are per endpoint, so a flow admitted at one
//!    pod's veth never admits a packet on another pod's veth, whatever addresses it carries.
//! 5. E not isolated for D: pass (and track the flow). Otherwise, when D is egress and A is in
//!    [`MAP_SERVICES`], the verdict waits for kube-proxy's translation ([`MAP_ORIGINAL_DST`]):
//!    the hook that sees the translated packet applies 6-8 to the real destination and tracks
//!    the flow under its original destination, at the sending pod's endpoint.
//! 6. D is ingress and A is the node itself ([`IDENTITY_HOST`]): pass (kubelet probes).
//! 7. peer mask = `any_peer[D]` | [`MAP_PEERS`]\[(E, identity(A), D)\] | [`MAP_PEERS`]\[(E, cidr(A), D)\]
//!    where identity(A) comes from [`MAP_POD_IDENTITIES`] (exact address) and cidr(A) from the
//!    longest match in [`MAP_CIDRS`];
//!    port mask = `any_port[D]` | longest match in [`MAP_PORTS`] for (E, D, P, N).
//! 8. peer mask & port mask != 0: pass and track; otherwise drop
//!    ([`DropReason::PolicyIngress`] / [`DropReason::PolicyEgress`]), unless the endpoint is in
//!    audit mode ([`EP_AUDIT`], or [`CFG_AUDIT_ALL`] for the node): then pass and track.
//!
//! Every drop after parsing and every new flow (5-8) owes a [`FlowEvent`] to [`MAP_EVENTS`],
//! within the source address's budget; packets of tracked flows (4) owe none.
//!
//! Addresses are 16 bytes everywhere; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`) so one
//! trie serves both families and an IPv4 prefix /n is stored as /(96+n).
#![no_std]

use bytemuck::{Pod, Zeroable};

/// Bumped whenever a layout below changes; pinned state of another ABI is never re-adopted.
pub const ABI_VERSION: u32 = 4;

/// TC ingress on the pod's host-side veth: packets the pod sends (its egress policy).
pub const PROG_FROM_POD: &str = "palisade_from_pod";
/// TC egress on the pod's host-side veth: packets delivered to the pod (its ingress policy).
pub const PROG_TO_POD: &str = "palisade_to_pod";
/// TC egress on the node's other interfaces (links to other nodes and to the outside): judges
/// the egress policy of Service traffic that kube-proxy sent off the node (see
/// [`MAP_ORIGINAL_DST`]).
pub const PROG_UPLINK: &str = "palisade_uplink";
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
/// so they find the record again.
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
/// LRU hash [`Addr`] -> [`EventLimit`]: the per-source event budget of the current window.
pub const MAP_EVENT_LIMITS: &str = "PAL_EVENT_LIMITS";
/// Per-CPU array of two [`FlowEvent`]s: where a verdict writes the event it owes while the
/// packet is being judged, emitted once the verdict returns (the judging frame has no stack to
/// spare). Slot [`SCRATCH_TRANSLATED`] holds the egress verdict of a Service flow judged after
/// translation, slot [`SCRATCH_MAIN`] the hook's own.
pub const MAP_EVENT_SCRATCH: &str = "PAL_EVENT_SCRATCH";
/// Array of one [`FlowConfig`], written by the agent; read only when an event is owed or a
/// packet would be dropped, so it costs nothing on established flows.
pub const MAP_FLOW_CONFIG: &str = "PAL_FLOW_CONFIG";

/// Every map, for the agent's checks that the object and this crate agree.
pub const ALL_MAPS: [&str; 14] = [
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
    MAP_EVENT_SCRATCH,
    MAP_FLOW_CONFIG,
];

pub const MAX_ENDPOINTS: u32 = 4096;
pub const MAX_POD_IDENTITIES: u32 = 262_144;
pub const MAX_CIDRS: u32 = 65_536;
pub const MAX_PEERS: u32 = 524_288;
pub const MAX_PORTS: u32 = 262_144;
pub const MAX_CONNTRACK: u32 = 262_144;
pub const MAX_SERVICE_RANGES: u32 = 64;
pub const MAX_ORIGINAL_DST: u32 = 65_536;
/// Room for every endpoint to be dual-stack, with slack.
pub const MAX_LOCAL_ADDRS: u32 = 4 * MAX_ENDPOINTS;
/// [`MAP_EVENTS`] size in bytes (a power-of-two number of pages): 14,563 events of 64 bytes and
/// their 8-byte record headers.
pub const EVENTS_RING_BYTES: u32 = 1 << 20;
/// Sources whose event budget is remembered at once ([`MAP_EVENT_LIMITS`]).
pub const MAX_EVENT_LIMITS: u32 = 16_384;
/// The window of the per-source event budget ([`FlowConfig::events_per_window`]).
pub const EVENT_WINDOW_NS: u64 = 1_000_000_000;

/// Rules of one endpoint and direction are grouped into at most this many port-set classes.
pub const MAX_CLASSES: usize = 64;

/// Direction, from the endpoint's point of view.
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

/// No identity: an address that is not a known pod or node.
pub const IDENTITY_UNKNOWN: u32 = 0;
/// The node itself (its own addresses). Ingress from it is always allowed.
pub const IDENTITY_HOST: u32 = 1;
/// First identity handed to pods (label-set identities).
pub const IDENTITY_FIRST_POD: u32 = 256;
/// CIDR classes live in their own half of the identity space, so a pod identity and a CIDR
/// class never share a [`PeerKey`].
pub const IDENTITY_CIDR_FLAG: u32 = 0x8000_0000;

/// [`EndpointInfo::flags`]: ingress is isolated (some policy selects the pod for Ingress).
pub const EP_INGRESS_ISOLATED: u32 = 1 << 0;
/// [`EndpointInfo::flags`]: egress is isolated.
pub const EP_EGRESS_ISOLATED: u32 = 1 << 1;
/// [`EndpointInfo::flags`]: audit mode. A new flow that the endpoint's policy would drop passes
/// (and is tracked) and is reported with [`FLOW_AUDIT`]. Only policy verdicts are audited: a
/// spoofed source, a missing endpoint or an unjudgeable packet is still dropped.
pub const EP_AUDIT: u32 = 1 << 2;

/// A set of port-set classes of one endpoint and direction: bit `c` is class `c`.
pub type ClassMask = u64;

/// An address, IPv4 mapped into IPv6, network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct Addr {
    pub bytes: [u8; 16],
}

impl Addr {
    pub const fn from_v4(octets: [u8; 4]) -> Self {
        let [a, b, c, d] = octets;
        Self {
            bytes: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d],
        }
    }

    pub const fn from_v6(bytes: [u8; 16]) -> Self {
        Self { bytes }
    }

    pub const fn is_v4(&self) -> bool {
        let b = &self.bytes;
        b[0] == 0
            && b[1] == 0
            && b[2] == 0
            && b[3] == 0
            && b[4] == 0
            && b[5] == 0
            && b[6] == 0
            && b[7] == 0
            && b[8] == 0
            && b[9] == 0
            && b[10] == 0xff
            && b[11] == 0xff
    }
}

/// Bits of an IPv4 prefix length once mapped into the 128-bit space.
pub const V4_MAPPED_PREFIX_BITS: u32 = 96;

/// [`MAP_ENDPOINTS`] key: the ifindex of the pod's host-side veth (in the node's netns).
pub type EndpointKey = u32;

/// [`MAP_ENDPOINTS`] value: one local pod.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct EndpointInfo {
    /// The endpoint id used in [`PeerKey`] and [`PortKey`]; stable for the pod's lifetime.
    pub id: u32,
    /// `EP_*` flags.
    pub flags: u32,
    /// Classes whose rules admit every peer (`from`/`to` empty), by direction.
    pub any_peer: [ClassMask; 2],
    /// Classes whose rules admit every port and protocol (`ports` empty), by direction.
    pub any_port: [ClassMask; 2],
}

/// [`MAP_POD_IDENTITIES`] key is an [`Addr`]; the value the identity.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct IdentityValue {
    pub identity: u32,
}

/// [`MAP_CIDRS`] is an LPM trie keyed by `(prefix_len, Addr)` with an [`IdentityValue`] whose
/// identity has [`IDENTITY_CIDR_FLAG`] set. Every `cidr` and `except` of every ipBlock is
/// inserted, so the longest match alone determines which ipBlock peers hold an address: for the
/// longest matching prefix P, an address lies in a block B iff P lies inside B.
pub type CidrKeyData = Addr;

/// [`MAP_PEERS`] key. Value: [`ClassMask`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct PeerKey {
    pub endpoint: u32,
    /// A pod identity, [`IDENTITY_HOST`], or a CIDR class.
    pub peer: u32,
    pub direction: u8,
    pub _pad: [u8; 3],
}

/// [`MAP_PORTS`] LPM key data (after the 32-bit prefix length). Endpoint, direction and protocol
/// always match in full ([`PORT_KEY_FIXED_BITS`]); the port is big-endian so that a port range
/// is a handful of prefixes over its bits. Value: [`ClassMask`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct PortKey {
    pub endpoint: u32,
    pub direction: u8,
    pub protocol: u8,
    pub port_be: [u8; 2],
}

/// Bits of [`PortKey`] before the port.
pub const PORT_KEY_FIXED_BITS: u32 = 48;

/// [`MAP_CONNTRACK`] key: a flow as seen at one hook. `direction` is the hook's policy direction,
/// so the two hooks one pod-to-pod flow crosses on a node keep separate entries. `ifindex` is
/// the endpoint's ([`MAP_ENDPOINTS`] key): the map is shared by every pod of the node, and
/// without it a pod could send a packet matching the reply key of another pod's flow. Both hooks
/// of one veth share the ifindex, so a reply is found where its request was admitted.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct CtKey {
    pub saddr: Addr,
    pub daddr: Addr,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    pub direction: u8,
    pub _pad: [u8; 2],
    pub ifindex: EndpointKey,
}

/// [`MAP_ORIGINAL_DST`] key: the source side of a flow, which DNAT leaves alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct OriginalKey {
    pub saddr: Addr,
    pub sport: u16,
    pub protocol: u8,
    pub _pad: u8,
}

/// [`MAP_ORIGINAL_DST`] value: where the pod sent the flow, and which endpoint sent it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct OriginalValue {
    pub daddr: Addr,
    pub dport: u16,
    pub _pad: u16,
    /// [`MAP_ENDPOINTS`] key of the sending pod.
    pub ifindex: u32,
}

/// [`MAP_CONNTRACK`] value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct CtValue {
    /// `bpf_ktime_get_ns()` when the flow was admitted.
    pub created_ns: u64,
    /// The endpoint that admitted it.
    pub endpoint: u32,
    pub _pad: u32,
}

/// Indices of [`MAP_STATS`], a per-CPU array of `u64` counters.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// A packet of a tracked flow (forward or reply) passed.
    CtHit = 0,
    /// A new flow was admitted by policy (or the endpoint is not isolated).
    NewFlowAllowed = 1,
    /// A packet that is not IP passed.
    NotIp = 2,
    /// Conntrack insert failed (the flow still passes; its replies are judged as new flows).
    CtInsertFailed = 3,
    /// A new flow to a Service address left for judgement after translation.
    EgressDeferred = 4,
    /// A deferred flow was judged after translation (allowed or dropped).
    EgressJudgedAfterNat = 5,
    /// A flow event was sent to [`MAP_EVENTS`].
    EventsSent = 6,
    /// A flow event was over its source's budget and not sent (counted in the source's next
    /// event, [`FlowEvent::suppressed`]).
    EventsSuppressed = 7,
    /// A flow event was lost: the ring buffer was full (the agent is behind).
    EventsLost = 8,
    /// A flow that policy would drop passed because its endpoint is in audit mode.
    AuditPassed = 9,
}

/// Why a packet was dropped; the index of its counter in [`MAP_STATS`] is
/// `STAT_DROP_BASE + reason`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The destination pod's ingress policy does not admit the flow.
    PolicyIngress = 0,
    /// The source pod's egress policy does not admit the flow.
    PolicyEgress = 1,
    /// A program ran on an interface with no endpoint entry.
    NoEndpoint = 2,
    /// Truncated or malformed IP/L4 header.
    Malformed = 3,
    /// A non-first IP fragment for an isolated endpoint (it carries no ports).
    Fragment = 4,
    /// IPv6 extension headers for an isolated endpoint.
    Ipv6ExtensionHeader = 5,
    /// A flow that must be remembered to be judged (a Service flow awaiting translation) could
    /// not be recorded.
    TrackingFull = 6,
    /// A pod sent a packet from an address that is not its own ([`MAP_LOCAL_ADDRS`]).
    SpoofedSource = 7,
}

pub const STAT_DROP_BASE: u32 = 16;
pub const DROP_REASONS: [DropReason; 8] = [
    DropReason::PolicyIngress,
    DropReason::PolicyEgress,
    DropReason::NoEndpoint,
    DropReason::Malformed,
    DropReason::Fragment,
    DropReason::Ipv6ExtensionHeader,
    DropReason::TrackingFull,
    DropReason::SpoofedSource,
];
pub const STAT_SLOTS: u32 = 32;

impl AllowReason {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::NotIsolated),
            1 => Some(Self::Policy),
            2 => Some(Self::FromHost),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::NotIsolated => "not-isolated",
            Self::Policy => "policy",
            Self::FromHost => "from-host",
        }
    }
}

impl DropReason {
    pub const fn from_u8(value: u8) -> Option<Self> {
        if (value as usize) < DROP_REASONS.len() {
            Some(DROP_REASONS[value as usize])
        } else {
            None
        }
    }

    pub const fn stat_index(self) -> u32 {
        STAT_DROP_BASE + self as u32
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::PolicyIngress => "policy-ingress",
            Self::PolicyEgress => "policy-egress",
            Self::NoEndpoint => "no-endpoint",
            Self::Malformed => "malformed",
            Self::Fragment => "fragment",
            Self::Ipv6ExtensionHeader => "ipv6-extension-header",
            Self::TrackingFull => "tracking-full",
            Self::SpoofedSource => "spoofed-source",
        }
    }
}

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

/// Why a flow was admitted.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowReason {
    /// No policy selects the endpoint for this direction.
    NotIsolated = 0,
    /// A rule admits it: [`FlowEvent::class`] is the lowest class both the peer and the port
    /// hold, which names the rules (of that port set) that can have admitted it.
    Policy = 1,
    /// Ingress from the node itself.
    FromHost = 2,
}

/// One verdict on one new flow, as [`MAP_EVENTS`] carries it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at the verdict.
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
    /// When the current window began (`bpf_ktime_get_ns()`).
    pub window_ns: u64,
    /// Events sent in the current window.
    pub sent: u32,
    /// Events suppressed since the last one sent.
    pub suppressed: u32,
}

/// [`MAP_EVENT_SCRATCH`] slots.
pub const SCRATCH_MAIN: u32 = 0;
pub const SCRATCH_TRANSLATED: u32 = 1;

const _: () = {
    assert!(core::mem::size_of::<FlowEvent>() == 64);
    assert!(core::mem::size_of::<FlowConfig>() == 8);
    assert!(core::mem::size_of::<EventLimit>() == 16);
    assert!(core::mem::size_of::<Addr>() == 16);
    assert!(core::mem::size_of::<EndpointInfo>() == 40);
    assert!(core::mem::size_of::<IdentityValue>() == 4);
    assert!(core::mem::size_of::<PeerKey>() == 12);
    assert!(core::mem::size_of::<PortKey>() == 8);
    assert!(core::mem::offset_of!(PortKey, port_be) * 8 == PORT_KEY_FIXED_BITS as usize);
    assert!(core::mem::size_of::<CtKey>() == 44);
    assert!(core::mem::offset_of!(CtKey, sport) == 32);
    assert!(core::mem::offset_of!(CtKey, ifindex) == 40);
    assert!(core::mem::size_of::<CtValue>() == 16);
    assert!(core::mem::size_of::<OriginalKey>() == 20);
    assert!(core::mem::size_of::<OriginalValue>() == 24);
    assert!(MAX_CLASSES == ClassMask::BITS as usize);
    assert!(STAT_DROP_BASE + DROP_REASONS.len() as u32 <= STAT_SLOTS);
};

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all of these are `bytemuck::Pod` (no padding, every bit pattern valid).
    unsafe impl aya::Pod for Addr {}
    unsafe impl aya::Pod for EndpointInfo {}
    unsafe impl aya::Pod for IdentityValue {}
    unsafe impl aya::Pod for PeerKey {}
    unsafe impl aya::Pod for PortKey {}
    unsafe impl aya::Pod for CtKey {}
    unsafe impl aya::Pod for CtValue {}
    unsafe impl aya::Pod for OriginalKey {}
    unsafe impl aya::Pod for OriginalValue {}
    unsafe impl aya::Pod for FlowEvent {}
    unsafe impl aya::Pod for FlowConfig {}
    unsafe impl aya::Pod for EventLimit {}
}
