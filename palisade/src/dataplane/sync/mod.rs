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
//! What was written is kept as the compiled state's own allocations ([`Rules`] holds the
//! `Arc`s of [`EndpointState`]): an endpoint whose entries are the allocation written last is
//! unchanged without a comparison, and replicas moving from one allocation to another share one
//! ordered walk of the two ([`Deltas`]), so a sync costs one diff per distinct rule set and
//! one write per changed entry per endpoint.
//!
//! The address-to-identity and CIDR maps are shared by every endpoint. New entries are written
//! after the endpoints' new rules and before they are switched on; stale ones are deleted last.
//! A pod that changes identity does so in one value write.

mod adopt;
mod apply;
mod maps;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use palisade_common::{
    Addr, ClassMask, EP_EGRESS_ISOLATED, EP_INGRESS_ISOLATED, EndpointInfo, MAP_CIDRS,
    MAP_ENDPOINTS, MAP_PEERS, MAP_POD_IDENTITIES, MAP_PORTS, PORT_KEY_FIXED_BITS,
};

pub(super) use self::adopt::highest_ids;
use self::maps::Maps;
use crate::{
    k8s::cluster::ObjectKey,
    policy::{
        compile::{self, EndpointState, PeerEntries, PortEntries, TierMasks},
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

/// One endpoint's entries, without its id: its [`EndpointInfo`]'s parts and the compiled
/// peer and port entries, shared with the [`NodeState`] they were written from (replicas'
/// entries are one allocation there, and stay one here).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Rules {
    /// `EndpointInfo` without its id.
    flags: u32,
    any_peer: [ClassMask; 2],
    any_port: [ClassMask; 2],
    tiers: TierMasks,
    peers: Arc<PeerEntries>,
    ports: Arc<PortEntries>,
}

impl Rules {
    fn of(ep: &EndpointState) -> Self {
        Self {
            flags: ep.flags,
            any_peer: ep.any_peer,
            any_port: ep.any_port,
            tiers: ep.tiers,
            peers: ep.peers.clone(),
            ports: ep.ports.clone(),
        }
    }

    fn info(&self, id: u32) -> EndpointInfo {
        compile::info(id, self.flags, self.any_peer, self.any_port, &self.tiers)
    }

    /// The same [`EndpointInfo`] but for its id.
    fn same_info(&self, other: &Self) -> bool {
        self.flags == other.flags
            && self.any_peer == other.any_peer
            && self.any_port == other.any_port
            && self.tiers == other.tiers
    }
}

/// How one endpoint's written rules would become new ones (see [`Deltas`]).
struct Change {
    peers: Arc<Delta<(u8, u32)>>,
    ports: Arc<Delta<(u8, u8, PortPrefix)>>,
}

impl Change {
    /// No entry changes.
    fn none(&self) -> bool {
        self.peers.is_empty() && self.ports.is_empty()
    }

    /// Whether the new rules only add entries to `old`: same info, every old entry kept as it
    /// was; and, at an endpoint a ClusterNetworkPolicy applies to, at most one entry new in
    /// each direction (see the module documentation).
    fn only_adds(&self, old: &Rules, new: &Rules) -> bool {
        let adds = new.same_info(old) && self.peers.only_adds() && self.ports.only_adds();
        if !adds || new.tiers == TierMasks::default() {
            return adds;
        }
        let mut added = [0usize; 2];
        let peers = self.peers.added.iter().map(|((d, _), _)| *d);
        let ports = self.ports.added.iter().map(|((d, _, _), _)| *d);
        for direction in peers.chain(ports) {
            added[usize::from(direction & 1)] += 1;
        }
        added.iter().all(|n| *n <= 1)
    }

    /// Whether the new rules only take class bits away from `old`, at an endpoint no
    /// ClusterNetworkPolicy applies to: the same flags, no entry and no bit that `old` lacks.
    fn only_removes(&self, old: &Rules, new: &Rules) -> bool {
        let within = |new: &[ClassMask; 2], old: &[ClassMask; 2]| {
            new.iter().zip(old).all(|(n, o)| n & !o == 0)
        };
        let untiered = TierMasks::default();
        new.flags == old.flags
            && new.tiers == untiered
            && old.tiers == untiered
            && within(&new.any_peer, &old.any_peer)
            && within(&new.any_port, &old.any_port)
            && self.peers.only_removes()
            && self.ports.only_removes()
    }
}

/// How one map of entries became another, entry by entry.
#[derive(Debug)]
struct Delta<K> {
    /// Entries the new map has and the old one lacks.
    added: Vec<(K, ClassMask)>,
    /// Entries of both whose value changed, with the new value.
    changed: Vec<(K, ClassMask)>,
    /// Entries only the old map has.
    gone: Vec<K>,
    /// Whether every changed value only lost bits.
    shrinks: bool,
}

impl<K: Ord + Copy> Delta<K> {
    /// One ordered walk of both maps.
    fn between(old: &BTreeMap<K, ClassMask>, new: &BTreeMap<K, ClassMask>) -> Self {
        let mut delta = Self {
            added: Vec::new(),
            changed: Vec::new(),
            gone: Vec::new(),
            shrinks: true,
        };
        let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some((k, _)), None) => {
                    delta.gone.push(**k);
                    a.next();
                }
                (None, Some((k, v))) => {
                    delta.added.push((**k, **v));
                    b.next();
                }
                (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                    std::cmp::Ordering::Less => {
                        delta.gone.push(**ka);
                        a.next();
                    }
                    std::cmp::Ordering::Greater => {
                        delta.added.push((**kb, **vb));
                        b.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if va != vb {
                            delta.changed.push((**kb, **vb));
                            delta.shrinks &= **vb & !**va == 0;
                        }
                        a.next();
                        b.next();
                    }
                },
            }
        }
        delta
    }

    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.gone.is_empty()
    }

    fn only_adds(&self) -> bool {
        self.changed.is_empty() && self.gone.is_empty()
    }

    fn only_removes(&self) -> bool {
        self.added.is_empty() && self.shrinks
    }
}

/// The deltas computed within one sync, by the pair of allocations they are between:
/// replicas written from one allocation to another share one walk. Both allocations are held
/// with their delta, so an address names one map while this lives.
#[derive(Default)]
struct Deltas {
    peers: DeltaMemo<(u8, u32)>,
    ports: DeltaMemo<(u8, u8, PortPrefix)>,
}

type DeltaMemo<K> = HashMap<
    [usize; 2],
    (
        Arc<BTreeMap<K, ClassMask>>,
        Arc<BTreeMap<K, ClassMask>>,
        Arc<Delta<K>>,
    ),
>;

impl Deltas {
    fn change(&mut self, old: &Rules, new: &Rules) -> Change {
        Change {
            peers: delta(&mut self.peers, &old.peers, &new.peers),
            ports: delta(&mut self.ports, &old.ports, &new.ports),
        }
    }
}

fn delta<K: Ord + Copy>(
    memo: &mut DeltaMemo<K>,
    old: &Arc<BTreeMap<K, ClassMask>>,
    new: &Arc<BTreeMap<K, ClassMask>>,
) -> Arc<Delta<K>> {
    let key = [Arc::as_ptr(old) as usize, Arc::as_ptr(new) as usize];
    if let Some((_, _, delta)) = memo.get(&key) {
        return delta.clone();
    }
    // One allocation against itself: an empty walk, without reading either.
    let delta = if Arc::ptr_eq(old, new) {
        Delta::between(&BTreeMap::new(), &BTreeMap::new())
    } else {
        Delta::between(old, new)
    };
    let delta = Arc::new(delta);
    memo.insert(key, (old.clone(), new.clone(), delta.clone()));
    delta
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

/// An endpoint's port entry as the map keys it: (prefix length, direction, protocol, port).
fn port_map_key((direction, protocol, prefix): (u8, u8, PortPrefix)) -> (u32, u8, u8, [u8; 2]) {
    let len = PORT_KEY_FIXED_BITS + u32::from(prefix.len);
    (len, direction, protocol, prefix.value.to_be_bytes())
}

/// A port entry's key as the compiler keys it, if the map's key is one a sync writes.
fn port_state_key(
    (len, direction, protocol, port_be): (u32, u8, u8, [u8; 2]),
) -> Option<(u8, u8, PortPrefix)> {
    let len = u8::try_from(len.checked_sub(PORT_KEY_FIXED_BITS)?)
        .ok()
        .filter(|l| *l <= 16)?;
    let prefix = PortPrefix {
        value: u16::from_be_bytes(port_be),
        len,
    };
    Some((direction, protocol, prefix))
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
    use std::sync::Arc;

    use palisade_common::ClassMask;

    use super::{Deltas, Rules, TierMasks};
    use crate::policy::ports::PortPrefix;

    fn rules(tiered: bool, peers: &[(u8, u32, ClassMask)], ports: &[(u8, u16)]) -> Rules {
        let mut tiers = TierMasks::default();
        if tiered {
            tiers.admin = [0b1; 2];
            tiers.deny = [0b1; 2];
        }
        let prefix = |port: u16| PortPrefix {
            value: port,
            len: 16,
        };
        Rules {
            flags: 0,
            tiers,
            peers: Arc::new(peers.iter().map(|(d, p, m)| ((*d, *p), *m)).collect()),
            ports: Arc::new(
                (ports.iter())
                    .map(|(d, port)| ((*d, 6, prefix(*port)), 0b11))
                    .collect(),
            ),
            ..Rules::default()
        }
    }

    fn adds(new: &Rules, old: &Rules) -> bool {
        Deltas::default().change(old, new).only_adds(old, new)
    }

    fn removes(new: &Rules, old: &Rules) -> bool {
        Deltas::default().change(old, new).only_removes(old, new)
    }

    #[test]
    fn adds_in_place_at_a_tiered_endpoint_only_one_entry_per_direction() {
        let old = rules(true, &[(0, 7, 0b10)], &[(0, 80)]);
        // A new peer identity: one entry each way, in place.
        let one_each = rules(true, &[(0, 7, 0b10), (0, 9, 0b11), (1, 9, 0b1)], &[(0, 80)]);
        assert!(adds(&one_each, &old));
        // A new peer entry and a new port entry of one direction: a packet could read one
        // new and one old, so the endpoint is swapped.
        let two_ingress = rules(true, &[(0, 7, 0b10), (0, 9, 0b11)], &[(0, 80), (0, 443)]);
        assert!(!adds(&two_ingress, &old));
        // The same without tiers is monotone: in place.
        let untiered_old = rules(false, &[(0, 7, 0b10)], &[(0, 80)]);
        let untiered = rules(false, &[(0, 7, 0b10), (0, 9, 0b11)], &[(0, 80), (0, 443)]);
        assert!(adds(&untiered, &untiered_old));
        // A changed value is never an add.
        let changed = rules(false, &[(0, 7, 0b11)], &[(0, 80)]);
        assert!(!adds(&changed, &untiered_old));
    }

    #[test]
    fn removes_in_place_only_without_tiers_and_only_bits_taken_away() {
        let old = rules(false, &[(0, 7, 0b110), (1, 8, 0b100)], &[(0, 80), (0, 443)]);
        let shrunk = rules(false, &[(0, 7, 0b010)], &[(0, 80)]);
        assert!(removes(&shrunk, &old));
        let gained = rules(false, &[(0, 7, 0b011)], &[(0, 80)]);
        assert!(!removes(&gained, &old));
        let new_entry = rules(false, &[(0, 7, 0b010), (0, 9, 0b010)], &[(0, 80)]);
        assert!(!removes(&new_entry, &old));
        let tiered_old = rules(true, &[(0, 7, 0b110)], &[(0, 80)]);
        let tiered = rules(true, &[(0, 7, 0b010)], &[(0, 80)]);
        assert!(!removes(&tiered, &tiered_old));
    }

    #[test]
    fn a_delta_names_every_entry_added_changed_and_gone_once() {
        let old = rules(false, &[(0, 1, 0b1), (0, 2, 0b11), (1, 3, 0b1)], &[(0, 80)]);
        let new = rules(
            false,
            &[(0, 2, 0b01), (0, 4, 0b1), (1, 3, 0b1)],
            &[(0, 443)],
        );
        let mut deltas = Deltas::default();
        let change = deltas.change(&old, &new);
        assert_eq!(change.peers.added, [((0, 4), 0b1)]);
        assert_eq!(change.peers.changed, [((0, 2), 0b01)]);
        assert_eq!(change.peers.gone, [(0, 1)]);
        assert!(change.peers.shrinks);
        assert_eq!(change.ports.added.len(), 1);
        assert_eq!(change.ports.gone.len(), 1);
        // Asked again for the same allocations: the same walk, not a new one.
        let again = deltas.change(&old, &new);
        assert!(Arc::ptr_eq(&change.peers, &again.peers));
        // One allocation against itself: nothing to write.
        assert!(deltas.change(&new, &new.clone()).none());
    }

    #[test]
    fn port_keys_survive_the_round_trip_through_the_map() {
        for (value, len) in [(0, 0), (80, 16), (0x8000, 1), (1024, 6)] {
            let key = (0, 6, PortPrefix { value, len });
            assert_eq!(super::port_state_key(super::port_map_key(key)), Some(key));
        }
        assert_eq!(super::port_state_key((3, 0, 6, [0, 80])), None);
        assert_eq!(super::port_state_key((200, 0, 6, [0, 80])), None);
    }
}
