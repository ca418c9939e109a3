//! Writing a [`NodeState`] into the maps as a difference against what was written before, so
//! that no packet ever sees half of an update.
//!
//! A packet is judged by one endpoint's entries: its [`EndpointInfo`] (flags and "any" classes)
//! and the [`PeerKey`]/[`PortKey`] entries under its endpoint id. Each endpoint owns a *pair* of
//! ids (`2p` and `2p + 1`), one live and one idle: a change to an endpoint's rules is written
//! whole under the idle id, then the endpoint's [`EndpointInfo`] is replaced by one naming that
//! id (a single map value update, atomic for readers), and only then are the old id's entries
//! deleted. A packet therefore sees the endpoint's old rules or its new ones, never a mix. This
//! is the double buffer, per endpoint: it costs one rewrite of the endpoint's own entries per
//! change, never a rewrite of the node.
//!
//! One exception keeps the common case cheap: when a change only *adds* entries and leaves every
//! existing value (and the [`EndpointInfo`]) as it was - a new peer identity appears, a new pod
//! joins a selected label set with new named ports - the entries are added in place. Any mix of
//! old entries and some new ones then grants a subset of what the new state grants (peer masks
//! are unions; a port lookup that misses a new, longer prefix finds a shorter one whose classes
//! cover every port under it), so no packet is judged by rules looser than the new ones. That
//! holds for NetworkPolicy classes, where more bits only ever admit more. A tier's verdict is
//! its first matching rule, which is not monotone: with an Admin `Deny` bit new in one entry a
//! packet reads and an `Accept` bit new in another, a packet seeing only the second would be
//! accepted where the old and the new rules both deny. So at an endpoint a
//! ClusterNetworkPolicy applies to, adds go in place only when at most one entry is new per
//! direction (what a new peer identity adds): every entry a packet reads is of one direction,
//! so it then sees exactly the old rules or the new ones.
//!
//! The other exception is its mirror: when a change only *takes class bits away* at an
//! endpoint no ClusterNetworkPolicy applies to - same flags, no new entry, no entry or "any"
//! mask gaining a bit, as when a policy is deleted and the surviving classes keep their bits
//! (`policy/compile/slots.rs`) - the entries are shrunk and deleted in place, and the
//! [`EndpointInfo`] rewritten under the same id if its masks lost bits. Without tiers a
//! verdict only asks whether `peer mask & port mask` holds a NetworkPolicy class, which is
//! monotone in every entry, and a port lookup that misses a deleted longer prefix finds a
//! shorter one carrying no class the longer one lacked; so any mix of old and new entries
//! grants a subset of what the old state grants and a superset of the new one's, as if the
//! change came a little later. A tier's first matching rule is not monotone (a Deny bit gone
//! before the Accept bit beside it would admit what neither state admits), hence the
//! condition.
//!
//! The address-to-identity and CIDR maps are shared by every endpoint. New entries are written
//! after the endpoints' new rules and before they are switched on; stale ones are deleted last.
//! A pod that changes identity does so in one value write.

mod adopt;
mod apply;
mod maps;

use std::collections::BTreeMap;

use palisade_common::{
    Addr, ClassMask, EP_EGRESS_ISOLATED, EP_INGRESS_ISOLATED, EndpointInfo, MAP_CIDRS,
    MAP_ENDPOINTS, MAP_PEERS, MAP_POD_IDENTITIES, MAP_PORTS, PORT_KEY_FIXED_BITS,
};

pub(super) use self::adopt::highest_ids;
use self::maps::Maps;
use crate::{
    k8s::cluster::ObjectKey,
    policy::{
        NodeState,
        compile::{self, EndpointState, TierMasks},
        ports::PortPrefix,
    },
};

/// What one sync changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub writes: usize,
    pub deletes: usize,
    /// Endpoints whose rules were switched to their idle id.
    pub swaps: usize,
    /// Writes that failed, each naming the pod (now isolated) or the map.
    pub failures: Vec<String>,
    /// Interfaces whose endpoint was switched off: their tracked flows are deleted after the
    /// write (the programs pass a tracked flow's packets without reading the endpoint).
    pub switched_off: Vec<u32>,
}

/// One endpoint's entries, without its id: (direction, peer) and (prefix length, direction,
/// protocol, port) to class masks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Rules {
    /// `EndpointInfo` without its id.
    flags: u32,
    any_peer: [ClassMask; 2],
    any_port: [ClassMask; 2],
    tiers: TierMasks,
    peers: BTreeMap<(u8, u32), ClassMask>,
    ports: BTreeMap<(u32, u8, u8, [u8; 2]), ClassMask>,
}

impl Rules {
    fn info(&self, id: u32) -> EndpointInfo {
        compile::info(id, self.flags, self.any_peer, self.any_port, &self.tiers)
    }

    /// Whether `self` only adds entries to `old`: same info, every old entry kept as it was;
    /// and, at an endpoint a ClusterNetworkPolicy applies to, at most one entry new in each
    /// direction (see the module documentation).
    fn only_adds_to(&self, old: &Self) -> bool {
        let adds = self.flags == old.flags
            && self.any_peer == old.any_peer
            && self.any_port == old.any_port
            && self.tiers == old.tiers
            && old.peers.iter().all(|(k, v)| self.peers.get(k) == Some(v))
            && old.ports.iter().all(|(k, v)| self.ports.get(k) == Some(v));
        if !adds || self.tiers == TierMasks::default() {
            return adds;
        }
        // Every old entry is kept, so the new ones are the surplus, counted per direction.
        let mut new = [0usize; 2];
        let peers = (self.peers.keys())
            .filter(|k| !old.peers.contains_key(k))
            .map(|k| k.0);
        let ports = (self.ports.keys())
            .filter(|k| !old.ports.contains_key(k))
            .map(|k| k.1);
        for direction in peers.chain(ports) {
            new[usize::from(direction & 1)] += 1;
        }
        new.iter().all(|n| *n <= 1)
    }

    /// Whether `self` only takes class bits away from `old`, at an endpoint no
    /// ClusterNetworkPolicy applies to: the same flags, no entry and no bit that `old` lacks.
    fn only_removes_from(&self, old: &Self) -> bool {
        let within = |new: &ClassMask, old: &ClassMask| new & !old == 0;
        let untiered = TierMasks::default();
        self.flags == old.flags
            && self.tiers == untiered
            && old.tiers == untiered
            && self
                .any_peer
                .iter()
                .zip(&old.any_peer)
                .all(|(n, o)| within(n, o))
            && self
                .any_port
                .iter()
                .zip(&old.any_port)
                .all(|(n, o)| within(n, o))
            && (self.peers.iter()).all(|(k, v)| old.peers.get(k).is_some_and(|o| within(v, o)))
            && (self.ports.iter()).all(|(k, v)| old.ports.get(k).is_some_and(|o| within(v, o)))
    }
}

/// A local pod as written: its interface, its pair of ids and which one is live.
#[derive(Clone, Debug)]
struct Endpoint {
    ifindex: u32,
    pair: u32,
    live: u32,
    rules: Rules,
    /// Entries that may exist under the idle id (a swap that did not finish).
    idle: Option<Rules>,
}

impl Endpoint {
    fn id(&self) -> u32 {
        self.pair * 2 + self.live
    }

    fn idle_id(&self) -> u32 {
        self.pair * 2 + (1 - self.live)
    }
}

/// A copy of every entry this process wrote, so the next sync writes only the difference.
#[derive(Default)]
pub(super) struct Written {
    endpoints: BTreeMap<ObjectKey, Endpoint>,
    identities: BTreeMap<Addr, u32>,
    cidrs: BTreeMap<(u32, Addr), u32>,
    next_pair: u32,
    /// Pods whose rules could not be written, isolated with [`NO_RULES`], by interface.
    quarantined: BTreeMap<ObjectKey, u32>,
}

fn rules_of(state: &NodeState, key: &ObjectKey) -> Option<Rules> {
    let ep = state.endpoints.get(key)?;
    Some(Rules {
        flags: ep.flags,
        any_peer: ep.any_peer,
        any_port: ep.any_port,
        tiers: ep.tiers,
        peers: ep.peers.clone(),
        ports: ep.ports.iter().map(port_entry).collect(),
    })
}

/// An endpoint's port entry as the map keys it.
fn port_entry(
    ((direction, protocol, prefix), mask): (&(u8, u8, PortPrefix), &ClassMask),
) -> ((u32, u8, u8, [u8; 2]), ClassMask) {
    let len = PORT_KEY_FIXED_BITS + u32::from(prefix.len);
    (
        (len, *direction, *protocol, prefix.value.to_be_bytes()),
        *mask,
    )
}

impl Rules {
    /// Whether these are exactly `ep`'s rules, without building them (what most endpoints of
    /// most syncs are: a sync after one change rewrites a few endpoints of many).
    fn equal_to(&self, ep: &EndpointState) -> bool {
        self.flags == ep.flags
            && self.any_peer == ep.any_peer
            && self.any_port == ep.any_port
            && self.tiers == ep.tiers
            && self.peers == ep.peers
            && self.ports.len() == ep.ports.len()
            && self
                .ports
                .iter()
                .map(|(k, m)| (*k, *m))
                .eq(ep.ports.iter().map(port_entry))
    }
}

impl Written {
    /// Entries this process holds in each map it writes (both ids of an endpoint mid-swap
    /// count once: the idle id's entries are deleted within the same sync).
    pub(in crate::dataplane) fn entry_counts(&self) -> Vec<(&'static str, usize)> {
        let rules = self.endpoints.values().map(|ep| &ep.rules);
        let (peers, ports) = rules.fold((0, 0), |(a, b), r| (a + r.peers.len(), b + r.ports.len()));
        vec![
            (MAP_ENDPOINTS, self.endpoints.len() + self.quarantined.len()),
            (MAP_POD_IDENTITIES, self.identities.len()),
            (MAP_CIDRS, self.cidrs.len()),
            (MAP_PEERS, peers),
            (MAP_PORTS, ports),
        ]
    }

    /// Takes a written endpoint out of service: isolated with no rules, its entries deleted.
    fn quarantine(&mut self, maps: &mut Maps<'_>, key: &ObjectKey, report: &mut SyncReport) {
        let Some(ep) = self.endpoints.remove(key) else {
            return;
        };
        self.isolate(maps, key, ep.ifindex, report);
        maps.delete_rules(ep.id(), &ep.rules, report);
        if let Some(idle) = &ep.idle {
            maps.delete_rules(ep.idle_id(), idle, report);
        }
    }

    /// Writes the entry that drops every new connection of the pod on `index`.
    fn isolate(
        &mut self,
        maps: &mut Maps<'_>,
        key: &ObjectKey,
        index: u32,
        report: &mut SyncReport,
    ) {
        let info = compile::info(
            NO_RULES,
            EP_INGRESS_ISOLATED | EP_EGRESS_ISOLATED,
            [0; 2],
            [0; 2],
            &TierMasks::default(),
        );
        match maps.endpoints.insert(index, info, 0) {
            Ok(()) => report.writes += 1,
            Err(e) => {
                // Not even that: with no entry the programs drop everything (no endpoint).
                let _ = maps.endpoints.remove(&index);
                report.failures.push(format!("{key}: isolating: {e}"));
            }
        }
        self.quarantined.insert(key.clone(), index);
    }
}

/// The id of a rule set that is never written: ids are `2 * pair + 0|1` with pairs from 1.
pub const NO_RULES: u32 = 0;

#[cfg(test)]
mod tests {
    use palisade_common::ClassMask;

    use super::{Rules, TierMasks};

    fn rules(tiered: bool, peers: &[(u8, u32, ClassMask)], ports: &[(u8, u16)]) -> Rules {
        let mut tiers = TierMasks::default();
        if tiered {
            tiers.admin = [0b1; 2];
            tiers.deny = [0b1; 2];
        }
        Rules {
            flags: 0,
            tiers,
            peers: peers.iter().map(|(d, p, m)| ((*d, *p), *m)).collect(),
            ports: (ports.iter())
                .map(|(d, port)| ((32, *d, 6, port.to_be_bytes()), 0b11))
                .collect(),
            ..Rules::default()
        }
    }

    #[test]
    fn adds_in_place_at_a_tiered_endpoint_only_one_entry_per_direction() {
        let old = rules(true, &[(0, 7, 0b10)], &[(0, 80)]);
        // A new peer identity: one entry each way, in place.
        let one_each = rules(true, &[(0, 7, 0b10), (0, 9, 0b11), (1, 9, 0b1)], &[(0, 80)]);
        assert!(one_each.only_adds_to(&old));
        // A new peer entry and a new port entry of one direction: a packet could read one
        // new and one old, so the endpoint is swapped.
        let two_ingress = rules(true, &[(0, 7, 0b10), (0, 9, 0b11)], &[(0, 80), (0, 443)]);
        assert!(!two_ingress.only_adds_to(&old));
        // The same without tiers is monotone: in place.
        let untiered_old = rules(false, &[(0, 7, 0b10)], &[(0, 80)]);
        let untiered = rules(false, &[(0, 7, 0b10), (0, 9, 0b11)], &[(0, 80), (0, 443)]);
        assert!(untiered.only_adds_to(&untiered_old));
        // A changed value is never an add.
        let changed = rules(false, &[(0, 7, 0b11)], &[(0, 80)]);
        assert!(!changed.only_adds_to(&untiered_old));
    }

    #[test]
    fn removes_in_place_only_without_tiers_and_only_bits_taken_away() {
        let old = rules(false, &[(0, 7, 0b110), (1, 8, 0b100)], &[(0, 80), (0, 443)]);
        let shrunk = rules(false, &[(0, 7, 0b010)], &[(0, 80)]);
        assert!(shrunk.only_removes_from(&old));
        let gained = rules(false, &[(0, 7, 0b011)], &[(0, 80)]);
        assert!(!gained.only_removes_from(&old));
        let new_entry = rules(false, &[(0, 7, 0b010), (0, 9, 0b010)], &[(0, 80)]);
        assert!(!new_entry.only_removes_from(&old));
        let tiered_old = rules(true, &[(0, 7, 0b110)], &[(0, 80)]);
        let tiered = rules(true, &[(0, 7, 0b010)], &[(0, 80)]);
        assert!(!tiered.only_removes_from(&tiered_old));
    }
}
