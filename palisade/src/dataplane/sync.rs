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
//! cover every port under it), so no packet is judged by rules looser than the new ones.
//!
//! The address-to-identity and CIDR maps are shared by every endpoint. New entries are written
//! after the endpoints' new rules and before they are switched on; stale ones are deleted last.
//! A pod that changes identity does so in one value write.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie, MapData, lpm_trie::Key},
};
use palisade_common::{
    Addr, ClassMask, EP_EGRESS_ISOLATED, EP_INGRESS_ISOLATED, EndpointInfo, IdentityValue,
    MAP_CIDRS, MAP_ENDPOINTS, MAP_PEERS, MAP_POD_IDENTITIES, MAP_PORTS, PORT_KEY_FIXED_BITS,
    PeerKey, PortKey,
};

use super::DataplaneError;
use crate::{k8s::cluster::ObjectKey, policy::NodeState};

/// What one sync changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub writes: usize,
    pub deletes: usize,
    /// Endpoints whose rules were switched to their idle id.
    pub swaps: usize,
    /// Writes that failed, each naming the pod (now isolated) or the map.
    pub failures: Vec<String>,
}

/// One endpoint's entries, without its id: (direction, peer) and (prefix length, direction,
/// protocol, port) to class masks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Rules {
    /// `EndpointInfo` without its id.
    flags: u32,
    any_peer: [ClassMask; 2],
    any_port: [ClassMask; 2],
    peers: BTreeMap<(u8, u32), ClassMask>,
    ports: BTreeMap<(u32, u8, u8, [u8; 2]), ClassMask>,
}

impl Rules {
    fn info(&self, id: u32) -> EndpointInfo {
        EndpointInfo {
            id,
            flags: self.flags,
            any_peer: self.any_peer,
            any_port: self.any_port,
        }
    }

    /// Whether `self` only adds entries to `old`: same info, every old entry kept as it was.
    fn only_adds_to(&self, old: &Self) -> bool {
        self.flags == old.flags
            && self.any_peer == old.any_peer
            && self.any_port == old.any_port
            && old.peers.iter().all(|(k, v)| self.peers.get(k) == Some(v))
            && old.ports.iter().all(|(k, v)| self.ports.get(k) == Some(v))
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

fn peer_key(id: u32, (direction, peer): (u8, u32)) -> PeerKey {
    PeerKey {
        endpoint: id,
        peer,
        direction,
        _pad: [0; 3],
    }
}

fn port_key(id: u32, (len, direction, protocol, port_be): (u32, u8, u8, [u8; 2])) -> Key<PortKey> {
    Key::new(
        len,
        PortKey {
            endpoint: id,
            direction,
            protocol,
            port_be,
        },
    )
}

fn map_err(map: &'static str, op: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, op, source }
}

fn rules_of(state: &NodeState, key: &ObjectKey) -> Option<Rules> {
    let ep = state.endpoints.get(key)?;
    Some(Rules {
        flags: ep.flags,
        any_peer: ep.any_peer,
        any_port: ep.any_port,
        peers: ep.peers.clone(),
        ports: ep
            .ports
            .iter()
            .map(|((direction, protocol, prefix), mask)| {
                let len = PORT_KEY_FIXED_BITS + u32::from(prefix.len);
                (
                    (len, *direction, *protocol, prefix.value.to_be_bytes()),
                    *mask,
                )
            })
            .collect(),
    })
}

/// The maps, opened once per sync.
struct Maps<'a> {
    endpoints: HashMap<&'a mut MapData, u32, EndpointInfo>,
    identities: HashMap<&'a mut MapData, Addr, IdentityValue>,
    cidrs: LpmTrie<&'a mut MapData, Addr, IdentityValue>,
    peers: HashMap<&'a mut MapData, PeerKey, ClassMask>,
    ports: LpmTrie<&'a mut MapData, PortKey, ClassMask>,
}

impl<'a> Maps<'a> {
    fn open(ebpf: &'a mut Ebpf) -> Result<Self, DataplaneError> {
        let mut endpoints = None;
        let mut identities = None;
        let mut cidrs = None;
        let mut peers = None;
        let mut ports = None;
        for (name, map) in ebpf.maps_mut() {
            match name {
                MAP_ENDPOINTS => {
                    endpoints =
                        Some(HashMap::try_from(map).map_err(map_err(MAP_ENDPOINTS, "open"))?)
                }
                MAP_POD_IDENTITIES => {
                    identities =
                        Some(HashMap::try_from(map).map_err(map_err(MAP_POD_IDENTITIES, "open"))?)
                }
                MAP_CIDRS => {
                    cidrs = Some(LpmTrie::try_from(map).map_err(map_err(MAP_CIDRS, "open"))?)
                }
                MAP_PEERS => {
                    peers = Some(HashMap::try_from(map).map_err(map_err(MAP_PEERS, "open"))?)
                }
                MAP_PORTS => {
                    ports = Some(LpmTrie::try_from(map).map_err(map_err(MAP_PORTS, "open"))?)
                }
                _ => {}
            }
        }
        let missing = |name| DataplaneError::Missing { kind: "map", name };
        Ok(Self {
            endpoints: endpoints.ok_or(missing(MAP_ENDPOINTS))?,
            identities: identities.ok_or(missing(MAP_POD_IDENTITIES))?,
            cidrs: cidrs.ok_or(missing(MAP_CIDRS))?,
            peers: peers.ok_or(missing(MAP_PEERS))?,
            ports: ports.ok_or(missing(MAP_PORTS))?,
        })
    }

    /// Writes `rules`' entries under `id`, skipping those `old` already holds with that value.
    fn write_rules(
        &mut self,
        id: u32,
        rules: &Rules,
        old: Option<&Rules>,
        report: &mut SyncReport,
    ) -> Result<(), DataplaneError> {
        for (k, v) in &rules.peers {
            if old.is_some_and(|o| o.peers.get(k) == Some(v)) {
                continue;
            }
            self.peers
                .insert(peer_key(id, *k), v, 0)
                .map_err(map_err(MAP_PEERS, "insert"))?;
            report.writes += 1;
        }
        for (k, v) in &rules.ports {
            if old.is_some_and(|o| o.ports.get(k) == Some(v)) {
                continue;
            }
            self.ports
                .insert(&port_key(id, *k), v, 0)
                .map_err(map_err(MAP_PORTS, "insert"))?;
            report.writes += 1;
        }
        Ok(())
    }

    /// Deletes every entry of `rules` under `id` (best effort: a missing entry is fine).
    fn delete_rules(&mut self, id: u32, rules: &Rules, report: &mut SyncReport) {
        for k in rules.peers.keys() {
            let _ = self.peers.remove(&peer_key(id, *k));
            report.deletes += 1;
        }
        for k in rules.ports.keys() {
            let _ = self.ports.remove(&port_key(id, *k));
            report.deletes += 1;
        }
    }
}

/// Entries of one map grouped by endpoint id.
type ById<K> = BTreeMap<u32, BTreeMap<K, ClassMask>>;

impl Written {
    /// Entries this process holds in each map it writes (both ids of an endpoint mid-swap
    /// count once: the idle id's entries are deleted within the same sync).
    pub(super) fn entry_counts(&self) -> Vec<(&'static str, usize)> {
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

    /// Reads back what an earlier agent wrote into (pinned) maps, so the first sync writes only
    /// the difference and allowed flows never see their rules go and come back. `ifindex` names
    /// the local pods' interfaces now: an endpoint entry on an interface no pod has any more is
    /// switched off, and entries under ids no endpoint owns are deleted.
    pub(super) fn adopt(
        &mut self,
        ebpf: &mut Ebpf,
        ifindex: &BTreeMap<ObjectKey, u32>,
    ) -> Result<SyncReport, DataplaneError> {
        let mut maps = Maps::open(ebpf)?;
        let mut report = SyncReport::default();
        let owner: BTreeMap<u32, &ObjectKey> = ifindex.iter().map(|(k, i)| (*i, k)).collect();

        let mut peers: ById<(u8, u32)> = BTreeMap::new();
        for item in maps.peers.iter() {
            let (k, v) = item.map_err(map_err(MAP_PEERS, "read"))?;
            peers
                .entry(k.endpoint)
                .or_default()
                .insert((k.direction, k.peer), v);
        }
        let mut ports: ById<(u32, u8, u8, [u8; 2])> = BTreeMap::new();
        for item in maps.ports.iter() {
            let (k, v) = item.map_err(map_err(MAP_PORTS, "read"))?;
            let d = k.data();
            ports
                .entry(d.endpoint)
                .or_default()
                .insert((k.prefix_len(), d.direction, d.protocol, d.port_be), v);
        }
        let ids = peers.keys().chain(ports.keys()).copied();
        self.next_pair = self.next_pair.max(ids.max().unwrap_or(0) / 2);

        let endpoints: Vec<(u32, EndpointInfo)> = maps
            .endpoints
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(MAP_ENDPOINTS, "read"))?;
        for (index, info) in endpoints {
            self.next_pair = self.next_pair.max(info.id / 2);
            let Some(key) = owner.get(&index) else {
                // Its pod went while no agent ran: off now; its rules go with the orphans.
                let _ = maps.endpoints.remove(&index);
                report.deletes += 1;
                continue;
            };
            let take = |id: u32, peers: &mut ById<_>, ports: &mut ById<_>| Rules {
                flags: info.flags,
                any_peer: info.any_peer,
                any_port: info.any_port,
                peers: peers.remove(&id).unwrap_or_default(),
                ports: ports.remove(&id).unwrap_or_default(),
            };
            let rules = take(info.id, &mut peers, &mut ports);
            let idle = take(info.id ^ 1, &mut peers, &mut ports);
            let idle = (!idle.peers.is_empty() || !idle.ports.is_empty()).then_some(idle);
            self.endpoints.insert(
                (*key).clone(),
                Endpoint {
                    ifindex: index,
                    pair: info.id / 2,
                    live: info.id % 2,
                    rules,
                    idle,
                },
            );
        }
        for (id, entries) in peers {
            for k in entries.keys() {
                let _ = maps.peers.remove(&peer_key(id, *k));
                report.deletes += 1;
            }
        }
        for (id, entries) in ports {
            for k in entries.keys() {
                let _ = maps.ports.remove(&port_key(id, *k));
                report.deletes += 1;
            }
        }
        for item in maps.identities.iter() {
            let (addr, v) = item.map_err(map_err(MAP_POD_IDENTITIES, "read"))?;
            self.identities.insert(addr, v.identity);
        }
        for item in maps.cidrs.iter() {
            let (k, v) = item.map_err(map_err(MAP_CIDRS, "read"))?;
            self.cidrs.insert((k.prefix_len(), k.data()), v.identity);
        }
        tracing::info!(
            endpoints = self.endpoints.len(),
            identities = self.identities.len(),
            cidrs = self.cidrs.len(),
            deleted = report.deletes,
            "adopted the dataplane state left in the maps"
        );
        Ok(report)
    }

    /// Writes `state` for the endpoints whose interface is known (`ifindex`), as described in
    /// the module documentation.
    ///
    /// Failing closed: a write that fails (a full map, most likely) never leaves a pod with
    /// more access than the new state grants. The endpoint it was for is *quarantined*: its
    /// entry is replaced by one that isolates both directions and names [`NO_RULES`], under
    /// which nothing is ever written, so every new connection of that pod is dropped until a
    /// later sync writes its rules whole. Each failure is returned in [`SyncReport::failures`]
    /// for the agent to shout about. Only a map that cannot be opened at all ends the sync.
    pub(super) fn apply(
        &mut self,
        ebpf: &mut Ebpf,
        state: &NodeState,
        ifindex: &BTreeMap<ObjectKey, u32>,
    ) -> Result<SyncReport, DataplaneError> {
        let mut maps = Maps::open(ebpf)?;
        let mut report = SyncReport::default();

        // Endpoints that are gone, or whose pod now has another interface: off first, so their
        // entries are never read again, then their entries.
        let stale: Vec<ObjectKey> = self
            .endpoints
            .iter()
            .filter(|(key, ep)| {
                !state.endpoints.contains_key(*key) || ifindex.get(*key) != Some(&ep.ifindex)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(ep) = self.endpoints.remove(&key) {
                let _ = maps.endpoints.remove(&ep.ifindex);
                report.deletes += 1;
                maps.delete_rules(ep.id(), &ep.rules, &mut report);
            }
        }
        let stale: Vec<ObjectKey> = self
            .quarantined
            .iter()
            .filter(|(key, index)| {
                !state.endpoints.contains_key(*key) || ifindex.get(*key) != Some(*index)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(index) = self.quarantined.remove(&key) {
                let _ = maps.endpoints.remove(&index);
                report.deletes += 1;
            }
        }

        // New rules, written where no packet reads them yet (or added in place).
        enum Plan {
            New(ObjectKey, u32, u32, Rules),
            Swap(ObjectKey, Rules),
        }
        let mut plans = Vec::new();
        for (key, &index) in ifindex {
            let Some(rules) = rules_of(state, key) else {
                continue;
            };
            let written = match self.endpoints.get_mut(key) {
                None => {
                    self.next_pair += 1;
                    let pair = self.next_pair;
                    let written = maps.write_rules(pair * 2, &rules, None, &mut report);
                    if written.is_err() {
                        maps.delete_rules(pair * 2, &rules, &mut report);
                    } else {
                        plans.push(Plan::New(key.clone(), index, pair, rules));
                    }
                    written
                }
                Some(ep) if ep.rules == rules => Ok(()),
                Some(ep) if rules.only_adds_to(&ep.rules) => {
                    let id = ep.id();
                    let written = maps.write_rules(id, &rules, Some(&ep.rules), &mut report);
                    if written.is_ok() {
                        ep.rules = rules;
                    } else {
                        // Some additions are in, untracked: quarantine, then clear them all.
                        self.quarantine(&mut maps, key, &mut report);
                        maps.delete_rules(id, &rules, &mut report);
                    }
                    written
                }
                Some(ep) => {
                    // A sync that failed half way may have left entries under the idle id:
                    // clear them, or they would go live with the swap.
                    if let Some(leftover) = ep.idle.take() {
                        maps.delete_rules(ep.idle_id(), &leftover, &mut report);
                    }
                    ep.idle = Some(rules.clone());
                    let written = maps.write_rules(ep.idle_id(), &rules, None, &mut report);
                    if written.is_ok() {
                        plans.push(Plan::Swap(key.clone(), rules));
                    } else {
                        self.quarantine(&mut maps, key, &mut report);
                    }
                    written
                }
            };
            if let Err(e) = written {
                report.failures.push(format!("{key}: {e}"));
                if !self.endpoints.contains_key(key) {
                    self.isolate(&mut maps, key, index, &mut report);
                }
            }
        }

        // Identities and CIDR classes the new rules may name. A missing identity or class makes
        // its addresses unknown peers: less access, never more.
        for (addr, id) in &state.identities {
            if self.identities.get(addr) != Some(id) {
                match maps
                    .identities
                    .insert(addr, IdentityValue { identity: *id }, 0)
                {
                    Ok(()) => {
                        self.identities.insert(*addr, *id);
                        report.writes += 1;
                    }
                    Err(e) => {
                        // A stale value would name the old identity: remove it.
                        let _ = maps.identities.remove(addr);
                        self.identities.remove(addr);
                        report.failures.push(format!("{MAP_POD_IDENTITIES}: {e}"));
                    }
                }
            }
        }
        for (prefix, id) in &state.cidrs {
            let k = (prefix.len, prefix.addr);
            if self.cidrs.get(&k) != Some(id) {
                let key = Key::new(prefix.len, prefix.addr);
                match maps.cidrs.insert(&key, IdentityValue { identity: *id }, 0) {
                    Ok(()) => {
                        self.cidrs.insert(k, *id);
                        report.writes += 1;
                    }
                    Err(e) => {
                        let _ = maps.cidrs.remove(&key);
                        self.cidrs.remove(&k);
                        report.failures.push(format!("{MAP_CIDRS}: {e}"));
                    }
                }
            }
        }

        // Switch: one value write per endpoint, then the old id's entries go.
        for plan in plans {
            match plan {
                Plan::New(key, index, pair, rules) => {
                    let ep = Endpoint {
                        ifindex: index,
                        pair,
                        live: 0,
                        rules,
                        idle: None,
                    };
                    match maps.endpoints.insert(index, ep.rules.info(ep.id()), 0) {
                        Ok(()) => {
                            report.writes += 1;
                            self.quarantined.remove(&key);
                            self.endpoints.insert(key, ep);
                        }
                        Err(e) => {
                            report.failures.push(format!("{key}: {e}"));
                            maps.delete_rules(ep.id(), &ep.rules, &mut report);
                            self.isolate(&mut maps, &key, index, &mut report);
                        }
                    }
                }
                Plan::Swap(key, rules) => {
                    let Some(ep) = self.endpoints.get_mut(&key) else {
                        continue;
                    };
                    if let Err(e) = maps
                        .endpoints
                        .insert(ep.ifindex, rules.info(ep.idle_id()), 0)
                    {
                        report.failures.push(format!("{key}: {e}"));
                        self.quarantine(&mut maps, &key, &mut report);
                        continue;
                    }
                    report.writes += 1;
                    report.swaps += 1;
                    let old = std::mem::replace(&mut ep.rules, rules);
                    let old_id = ep.id();
                    ep.live = 1 - ep.live;
                    ep.idle = None;
                    maps.delete_rules(old_id, &old, &mut report);
                }
            }
        }

        // Shared entries nobody names any more.
        let gone: Vec<Addr> = self
            .identities
            .keys()
            .filter(|a| !state.identities.contains_key(*a))
            .copied()
            .collect();
        for addr in gone {
            let _ = maps.identities.remove(&addr);
            self.identities.remove(&addr);
            report.deletes += 1;
        }
        let wanted: std::collections::BTreeSet<(u32, Addr)> =
            state.cidrs.keys().map(|p| (p.len, p.addr)).collect();
        let gone: Vec<(u32, Addr)> = self
            .cidrs
            .keys()
            .filter(|k| !wanted.contains(*k))
            .copied()
            .collect();
        for (len, addr) in gone {
            let _ = maps.cidrs.remove(&Key::new(len, addr));
            self.cidrs.remove(&(len, addr));
            report.deletes += 1;
        }
        for failure in &report.failures {
            tracing::error!(
                failure = %failure,
                "dataplane write failed; the pods concerned are isolated until their rules fit"
            );
        }
        Ok(report)
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
        let info = EndpointInfo {
            id: NO_RULES,
            flags: EP_INGRESS_ISOLATED | EP_EGRESS_ISOLATED,
            any_peer: [0; 2],
            any_port: [0; 2],
        };
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

/// The highest identity in the pod identity map and the highest CIDR class in the CIDR map.
pub(super) fn highest_ids(ebpf: &Ebpf) -> Result<(u32, u32), DataplaneError> {
    let map = |name| {
        ebpf.map(name)
            .ok_or(DataplaneError::Missing { kind: "map", name })
    };
    let identities: HashMap<_, Addr, IdentityValue> =
        HashMap::try_from(map(MAP_POD_IDENTITIES)?).map_err(map_err(MAP_POD_IDENTITIES, "open"))?;
    let cidrs: LpmTrie<_, Addr, IdentityValue> =
        LpmTrie::try_from(map(MAP_CIDRS)?).map_err(map_err(MAP_CIDRS, "open"))?;
    let mut highest = (0, 0);
    for item in identities.iter() {
        let (_, v) = item.map_err(map_err(MAP_POD_IDENTITIES, "read"))?;
        highest.0 = highest.0.max(v.identity);
    }
    for item in cidrs.iter() {
        let (_, v) = item.map_err(map_err(MAP_CIDRS, "read"))?;
        highest.1 = highest.1.max(v.identity);
    }
    Ok(highest)
}
