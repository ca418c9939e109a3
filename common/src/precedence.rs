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

#[cfg(doc)]
use crate::{
    CFG_AUDIT_ALL, ClassMask, DropReason, EP_AUDIT, FlowEvent, IDENTITY_HOST, MAP_CIDRS,
    MAP_CONNTRACK, MAP_ENDPOINTS, MAP_EVENTS, MAP_LOCAL_ADDRS, MAP_ORIGINAL_DST, MAP_PEERS,
    MAP_POD_IDENTITIES, MAP_PORTS, MAP_SERVICES, MAX_CLASSES, PROG_FROM_POD, PROG_TO_POD,
};
