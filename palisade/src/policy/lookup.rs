//! The eBPF verdict's policy steps (5-9 of `palisade_common::precedence`) over [`NodeState`]:
//! the same [`admit`] the programs run, reading the compiled state the way the programs read
//! the maps. Tests compare it with the policy semantics; `palisade explain` answers from it.

use std::{convert::Infallible, net::IpAddr};

use palisade_common::{Addr, ClassMask, PeerKey, PolicyMaps, PortKey, admit};

use super::compile::{EndpointState, NodeState};
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
    // The compiled state is per endpoint, so the id the maps' keys carry is not needed.
    let info = ep.info(0);
    if !info.judged(direction) {
        return Some(true);
    }
    let maps = Compiled {
        state,
        endpoint: ep,
    };
    let Ok(admission) = admit(&maps, &info, direction, &Addr::from(peer), protocol, port);
    Some(admission.allows())
}

/// One endpoint's view of the compiled maps: what the programs would find in them.
struct Compiled<'a> {
    state: &'a NodeState,
    endpoint: &'a EndpointState,
}

impl PolicyMaps for Compiled<'_> {
    type Error = Infallible;

    fn pod_identity(&self, addr: &Addr) -> Result<Option<u32>, Infallible> {
        Ok(self.state.identities.get(addr).copied())
    }

    fn cidr_identity(&self, addr: &Addr) -> Result<Option<u32>, Infallible> {
        // Longest prefix match over the CIDR trie.
        Ok(self
            .state
            .cidrs
            .iter()
            .filter(|(p, _)| p.contains_addr(addr))
            .max_by_key(|(p, _)| p.len)
            .map(|(_, id)| *id))
    }

    fn peer_classes(&self, key: &PeerKey) -> Result<ClassMask, Infallible> {
        let entry = (key.direction, key.peer);
        Ok(self.endpoint.peers.get(&entry).copied().unwrap_or(0))
    }

    fn port_classes(&self, key: &PortKey) -> Result<ClassMask, Infallible> {
        let port = u16::from_be_bytes(key.port_be);
        Ok(self
            .endpoint
            .ports
            .iter()
            .filter(|((dir, proto, p), _)| {
                *dir == key.direction
                    && *proto == key.protocol
                    && p.first() <= port
                    && port <= p.last()
            })
            .max_by_key(|((_, _, p), _)| p.len)
            .map_or(0, |(_, mask)| *mask))
    }
}
