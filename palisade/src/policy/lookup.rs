//! A userspace replica of the eBPF verdict (steps 5-8 of the precedence in `palisade_common`),
//! reading [`NodeState`] the way the programs read the maps. Tests compare it with the policy
//! semantics; `palisade explain` will answer from it.

use std::net::IpAddr;

use palisade_common::{
    DIR_INGRESS, EP_EGRESS_ISOLATED, EP_INGRESS_ISOLATED, IDENTITY_HOST, PROTO_SCTP, PROTO_TCP,
    PROTO_UDP,
};

use super::compile::{NodeState, addr_of};
use crate::k8s::cluster::ObjectKey;

/// Whether a new flow at `endpoint` in `direction` with `peer` to `protocol`/`port` is admitted.
/// `None` when the endpoint is unknown (the eBPF side then drops: fail closed).
pub fn admits(
    state: &NodeState,
    endpoint: &ObjectKey,
    direction: u8,
    peer: IpAddr,
    protocol: u8,
    port: u16,
) -> Option<bool> {
    let ep = state.endpoints.get(endpoint)?;
    let d = usize::from(direction);
    let isolated = if direction == DIR_INGRESS {
        EP_INGRESS_ISOLATED
    } else {
        EP_EGRESS_ISOLATED
    };
    if ep.flags & isolated == 0 {
        return Some(true);
    }
    let addr = addr_of(&peer);
    let (mut peer_mask, mut port_mask) = (ep.any_peer[d], ep.any_port[d]);
    if let Some(id) = state.identities.get(&addr) {
        if *id == IDENTITY_HOST && direction == DIR_INGRESS {
            return Some(true);
        }
        peer_mask |= ep.peers.get(&(direction, *id)).copied().unwrap_or(0);
    }
    // Longest prefix match over the CIDR trie.
    if let Some((_, id)) = state
        .cidrs
        .iter()
        .filter(|(p, _)| p.contains_addr(&addr))
        .max_by_key(|(p, _)| p.len)
    {
        peer_mask |= ep.peers.get(&(direction, *id)).copied().unwrap_or(0);
    }
    if peer_mask == 0 {
        return Some(false);
    }
    if matches!(protocol, PROTO_TCP | PROTO_UDP | PROTO_SCTP)
        && let Some((_, mask)) = ep
            .ports
            .iter()
            .filter(|((dir, proto, p), _)| {
                *dir == direction && *proto == protocol && p.first() <= port && port <= p.last()
            })
            .max_by_key(|((_, _, p), _)| p.len)
    {
        port_mask |= *mask;
    }
    Some(peer_mask & port_mask != 0)
}
