//! # How a packet is judged
//!
//! Programs sit on the node side of each pod's veth: [`PROG_FROM_POD`] on TC ingress (what the
//! pod sends: the pod's *egress* policy) and [`PROG_TO_POD`] on TC egress (what the pod receives:
//! its *ingress* policy). The interface index names the endpoint ([`MAP_ENDPOINTS`]).
//!
//! A policy rule is `peers x ports`. Per endpoint and direction the agent groups rules into
//! *classes* (a bit in a [`ClassMask`], at most [`MAX_CLASSES`]), each a set of peers times a
//! set of ports: rules with the same peers share one (their ports unioned), and so do rules
//! with the same port set. A peer gets the bits of the classes of every rule that lists it; a
//! (protocol, port) gets the bits of every class whose port set contains it. A new connection is
//! allowed when the two masks share a bit, which is exact because every peer of a class is
//! admitted on every port of that class. Entries therefore grow as peers + ports, never as
//! peers x ports, and an `endPort` range costs at most 30 port prefixes. Rules past
//! [`MAX_CLASSES`] classes at an endpoint allow nothing there (fail closed; the agent reports
//! each one).
//!
//! Lookup precedence for a packet at endpoint E, direction D, peer address A, protocol P, port N:
//!
//! 1. not IP (ARP, ...): pass; malformed or truncated IP: drop ([`DropReason::Malformed`]).
//!    Then, before anything else, the fast path: [`MAP_CONNTRACK`] holds the packet's flow at
//!    E, and 4 below passes it. Only a packet of a tracked flow passes here, so nothing the
//!    steps between would check is skipped: the entry was made by E's own verdict (2 and 3
//!    held then; its key holds E's ifindex and the local address 3 checked, or
//!    [`CT_F_LOCAL_OWN`] is clear and 3 is checked here too), and the agent deletes the
//!    entries of an endpoint it switches off. Fragments, neighbour discovery and packets
//!    carrying the Service mark (5) are not answered here.
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
//!    A non-first fragment (no ports) passes when its datagram's first fragment passed this
//!    endpoint in this direction within [`FRAGMENT_LIFETIME_NS`] ([`MAP_FRAGMENTS`]), or the
//!    endpoint is not isolated; otherwise it is dropped ([`DropReason::Fragment`]).
//! 4. [`MAP_CONNTRACK`] holds the packet's flow at this endpoint (ifindex), opened in either
//!    direction (one key for a packet and its reply, the endpoint's side first: [`CtKey::of`]),
//!    and the entry has not been idle past its state's timeout ([`MAP_CT_CONFIG`]): pass. A
//!    TCP SYN without ACK is never found here: it opens a connection, and is judged by 5-9
//!    every time. Established flows are kept across policy changes. Entries are per endpoint,
//!    so a flow admitted at one pod's veth never admits a packet on another pod's veth,
//!    whatever addresses it carries. ICMP is keyed by role ([`CtKey::kind`]): an echo request
//!    is never the reply of one.
//! 5. E neither isolated for D (no NetworkPolicy selects it for D) nor tiered for D (no
//!    ClusterNetworkPolicy rule applies to it in D: [`EP_INGRESS_TIERED`], [`EP_EGRESS_TIERED`]):
//!    pass (and track the flow). Otherwise, when D is egress and A is in [`MAP_SERVICES`], the
//!    verdict waits for kube-proxy's translation ([`MAP_ORIGINAL_DST`]): the hook that sees the
//!    translated packet applies 6-9 to the real destination and tracks the flow under its
//!    original destination, at the sending pod's endpoint.
//! 6. D is ingress and A is the node itself ([`IDENTITY_HOST`]): pass (kubelet probes; no tier
//!    rule can name the node as an ingress peer).
//!    Then the classes that hold the flow: `m` = peer mask & port mask, where
//!    peer mask = `any_peer[D]` | [`MAP_PEERS`]\[(E, identity(A), D)\] | [`MAP_PEERS`]\[(E, cidr(A), D)\]
//!    with identity(A) from [`MAP_POD_IDENTITIES`] (exact address) and cidr(A) the longest match
//!    in [`MAP_CIDRS`], and port mask = `any_port[D]` | longest match in [`MAP_PORTS`] for
//!    (E, D, P, N). Class bits are numbered in precedence order: the Admin tier's rules (by
//!    priority, then name, then written order), NetworkPolicy classes, the Baseline tier's
//!    rules. So the first rule of a tier that matches is the lowest bit of `m` in that tier's
//!    bits ([`decide`]): three lookups whatever the number of policies and tiers.
//! 7. Admin tier: the lowest bit of `m & admin[D]`, if any: `Deny` drops
//!    ([`DropReason::TierIngress`] / [`DropReason::TierEgress`]), `Accept` passes and tracks,
//!    `Pass` goes on to 8.
//! 8. E isolated for D: a NetworkPolicy class in `m` passes and tracks; none drops
//!    ([`DropReason::PolicyIngress`] / [`DropReason::PolicyEgress`]). Final either way.
//! 9. Baseline tier: the lowest bit of `m & baseline[D]`, if any: `Deny` drops, `Accept` and
//!    `Pass` pass; none: the default, pass. Both pass and track.
//!
//!    A drop at 7, 8 or 9 passes (and is tracked) when the endpoint is in audit mode
//!    ([`EP_AUDIT`], or [`CFG_AUDIT_ALL`] for the node).
//!
//! Every drop after parsing and every new flow (5-9) owes a [`FlowEvent`] to [`MAP_EVENTS`],
//! within the sender's budget; packets of tracked flows (4) owe none.
//!
//! Before any of this, what arrives from outside the node ([`PROG_FROM_UPLINK`]) is dropped
//! when its source is an address of a local pod or of the node itself, so step 6 and the
//! ingress rules naming local pods cannot be satisfied from outside (see `SECURITY.md`).
//!
//! Addresses are 16 bytes everywhere; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`) so one
//! trie serves both families and an IPv4 prefix /n is stored as /(96+n).
//!
//! # One lookup, written once
//!
//! Steps 6-9 are [`admit`], generic over where the maps are ([`PolicyMaps`]): the programs read
//! the kernel's maps, the agent its compiled copy of them (`palisade explain`, the property tests
//! against the policy evaluator) or the live maps through aya. [`EndpointInfo::judged`] is the
//! test of step 5.

use crate::{
    Addr, ClassMask, DIR_EGRESS, DIR_INGRESS, EP_EGRESS_ISOLATED, EP_EGRESS_TIERED,
    EP_INGRESS_ISOLATED, EP_INGRESS_TIERED, EndpointInfo, IDENTITY_HOST, PROTO_SCTP, PROTO_TCP,
    PROTO_UDP, PeerKey, PortKey,
};
#[cfg(doc)]
use crate::{
    CFG_AUDIT_ALL, CT_F_LOCAL_OWN, CtKey, DropReason, EP_AUDIT, FRAGMENT_LIFETIME_NS, FlowEvent,
    MAP_CIDRS, MAP_CONNTRACK, MAP_CT_CONFIG, MAP_ENDPOINTS, MAP_EVENTS, MAP_FRAGMENTS,
    MAP_LOCAL_ADDRS, MAP_ORIGINAL_DST, MAP_PEERS, MAP_POD_IDENTITIES, MAP_PORTS, MAP_SERVICES,
    MAX_CLASSES, PROG_FROM_POD, PROG_FROM_UPLINK, PROG_TO_POD,
};

/// The lookups steps 6-9 make, wherever the maps are. Absent entries are `None` or an empty
/// mask, never an error; `Error` is for maps that cannot be read at all (the programs' and the
/// compiled state's are `core::convert::Infallible`).
pub trait PolicyMaps {
    type Error;

    /// [`MAP_POD_IDENTITIES`]\[addr\]: the identity of the pod (or [`IDENTITY_HOST`]) with
    /// exactly this address.
    fn pod_identity(&self, addr: &Addr) -> Result<Option<u32>, Self::Error>;

    /// The CIDR class of the longest prefix in [`MAP_CIDRS`] that holds `addr`.
    fn cidr_identity(&self, addr: &Addr) -> Result<Option<u32>, Self::Error>;

    /// [`MAP_PEERS`]\[key\], or no class.
    fn peer_classes(&self, key: &PeerKey) -> Result<ClassMask, Self::Error>;

    /// The classes of the longest match of `key` (its port's 16 bits included) in
    /// [`MAP_PORTS`], or no class.
    fn port_classes(&self, key: &PortKey) -> Result<ClassMask, Self::Error>;
}

/// What steps 6-9 say about a new flow at an endpoint that is isolated or tiered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Step 6: ingress from the node itself.
    FromHost,
    /// Admitted by this class: a tier's `Accept` (steps 7, 9), a NetworkPolicy rule (step 8),
    /// or a Baseline `Pass` (step 9: on to the default, allow).
    Class(u8),
    /// Step 8: the endpoint is isolated and no NetworkPolicy class holds both the peer and the
    /// port (the caller decides about audit mode).
    Denied,
    /// Steps 7 and 9: the first tier rule that matches, this class, says `Deny`.
    TierDenied(u8),
    /// Step 9: not isolated, and no tier rule matches: the default, allow.
    NoRule,
}

impl Admission {
    /// Whether the flow passes (audit mode aside).
    pub const fn allows(self) -> bool {
        !matches!(self, Self::Denied | Self::TierDenied(_))
    }
}

impl EndpointInfo {
    /// Step 5: whether some policy isolates the endpoint for `direction`.
    #[inline(always)]
    pub const fn isolated(&self, direction: u8) -> bool {
        let flag = if direction == DIR_INGRESS {
            EP_INGRESS_ISOLATED
        } else {
            EP_EGRESS_ISOLATED
        };
        self.flags & flag != 0
    }

    /// Step 5: whether a new flow in `direction` needs judging at all: a NetworkPolicy
    /// isolates the endpoint, or a ClusterNetworkPolicy rule applies to it.
    #[inline(always)]
    pub const fn judged(&self, direction: u8) -> bool {
        let flags = if direction == DIR_INGRESS {
            EP_INGRESS_ISOLATED | EP_INGRESS_TIERED
        } else {
            EP_EGRESS_ISOLATED | EP_EGRESS_TIERED
        };
        self.flags & flags != 0
    }
}

/// Steps 6-9 for a new flow at `endpoint` in `direction` with `peer` (the source on ingress,
/// the destination on egress) to `protocol`/`port` (host byte order; ignored but for TCP, UDP
/// and SCTP). The caller has found the endpoint judged (step 5).
///
/// The answer depends only on `m` = peer mask & port mask (and, for step 6, on the peer's
/// identity), so a lookup is made only while it can still change `m`: once either mask is
/// empty, or the peer mask already holds every class of the port mask, the rest are skipped.
/// The order, and why:
///
/// 1. [`MAP_POD_IDENTITIES`]: always (step 6 needs it on ingress before anything else, and it
///    says which side is likely to decide).
/// 2. A known pod (or the node, on egress): the port's classes first ([`MAP_PORTS`]). A pod is
///    usually named by some rule, so the port is what usually denies: a port no class holds
///    ends the lookups there (a scan of closed ports costs two lookups, not five). Then its
///    identity's classes ([`MAP_PEERS`]), then, only if classes of the port are still
///    missing, its CIDR class ([`MAP_CIDRS`], [`MAP_PEERS`]).
/// 3. An unknown address: its CIDR class first, as before: an address no ipBlock holds (and no
///    rule open to every peer) ends the lookups without the port's.
///
/// Never more lookups than peer-first in any case but one: a known pod that no rule of the
/// endpoint names, on a port some class holds, costs the port lookup too (four, where the
/// worst case of both orders is five).
///
/// Inlined: the programs call it with their maps, and the verdict's frame has no room for
/// another call's.
#[inline(always)]
pub fn admit<M: PolicyMaps + ?Sized>(
    maps: &M,
    endpoint: &EndpointInfo,
    direction: u8,
    peer: &Addr,
    protocol: u8,
    port: u16,
) -> Result<Admission, M::Error> {
    let d = usize::from(direction == DIR_EGRESS);
    let (mut peer_mask, mut port_mask) = (endpoint.any_peer[d], endpoint.any_port[d]);
    let ports = matches!(protocol, PROTO_TCP | PROTO_UDP | PROTO_SCTP);
    let port_key = PortKey {
        endpoint: endpoint.id,
        direction,
        protocol,
        port_be: port.to_be_bytes(),
    };
    // Written out, not one closure per lookup: the programs' stack is counted in bytes.
    match maps.pod_identity(peer)? {
        Some(identity) => {
            if identity == IDENTITY_HOST && direction == DIR_INGRESS {
                return Ok(Admission::FromHost);
            }
            if ports {
                port_mask |= maps.port_classes(&port_key)?;
            }
            if port_mask & !peer_mask != 0 {
                peer_mask |= maps.peer_classes(&PeerKey::new(endpoint.id, identity, direction))?;
            }
            if port_mask & !peer_mask != 0
                && let Some(cidr) = maps.cidr_identity(peer)?
            {
                peer_mask |= maps.peer_classes(&PeerKey::new(endpoint.id, cidr, direction))?;
            }
        }
        None => {
            if let Some(cidr) = maps.cidr_identity(peer)? {
                peer_mask |= maps.peer_classes(&PeerKey::new(endpoint.id, cidr, direction))?;
            }
            if peer_mask != 0 && ports {
                port_mask |= maps.port_classes(&port_key)?;
            }
        }
    }
    Ok(decide(endpoint, d, peer_mask & port_mask))
}

/// Steps 7-9 once the classes that hold both the peer and the port (`matched`) are known, for
/// direction index `d` (0 ingress, 1 egress). Class bits are numbered in precedence order
/// (Admin rules, NetworkPolicy classes, Baseline rules), so the first rule of a tier that
/// matches is the lowest bit of `matched` within the tier's bits: no loop, no lookup.
#[inline(always)]
pub const fn decide(endpoint: &EndpointInfo, d: usize, matched: ClassMask) -> Admission {
    // Step 7: the Admin tier. Its bits are the lowest, so its first match is the lowest bit.
    let admin = matched & endpoint.admin[d];
    if admin != 0 {
        let first = admin & admin.wrapping_neg();
        let class = admin.trailing_zeros() as u8;
        if first & endpoint.deny[d] != 0 {
            return Admission::TierDenied(class);
        }
        if first & endpoint.pass[d] == 0 {
            return Admission::Class(class);
        }
    }
    // Step 8: NetworkPolicy decides for a pod it isolates, whatever the Baseline says.
    let isolated = if d == 0 {
        EP_INGRESS_ISOLATED
    } else {
        EP_EGRESS_ISOLATED
    };
    if endpoint.flags & isolated != 0 {
        let policy = matched & !(endpoint.admin[d] | endpoint.baseline[d]);
        return if policy == 0 {
            Admission::Denied
        } else {
            Admission::Class(policy.trailing_zeros() as u8)
        };
    }
    // Step 9: the Baseline tier, then the default (allow). A Baseline Pass hands on to the
    // default, so only a Deny drops.
    let baseline = matched & endpoint.baseline[d];
    if baseline != 0 {
        let first = baseline & baseline.wrapping_neg();
        let class = baseline.trailing_zeros() as u8;
        return if first & endpoint.deny[d] != 0 {
            Admission::TierDenied(class)
        } else {
            Admission::Class(class)
        };
    }
    Admission::NoRule
}
