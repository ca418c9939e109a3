//! The five maps a sync writes, opened once per sync, and the keys of one endpoint's entries.

use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie, MapData, lpm_trie::Key},
};
use palisade_common::{
    Addr, ClassMask, EndpointInfo, IdentityValue, MAP_CIDRS, MAP_ENDPOINTS, MAP_PEERS,
    MAP_POD_IDENTITIES, MAP_PORTS, PeerKey, PortKey,
};
use std::collections::BTreeMap;

use super::{Change, Rules, SyncReport, port_map_key};
use crate::dataplane::DataplaneError;
use crate::policy::ports::PortPrefix;

pub(super) fn peer_key(id: u32, (direction, peer): (u8, u32)) -> PeerKey {
    PeerKey {
        endpoint: id,
        peer,
        direction,
        _pad: [0; 3],
    }
}

pub(super) fn port_key(
    id: u32,
    (len, direction, protocol, port_be): (u32, u8, u8, [u8; 2]),
) -> Key<PortKey> {
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

pub(super) fn map_err(
    map: &'static str,
    op: &'static str,
) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, op, source }
}

/// The maps, opened once per sync.
pub(super) struct Maps<'a> {
    pub(super) endpoints: HashMap<&'a mut MapData, u32, EndpointInfo>,
    pub(super) identities: HashMap<&'a mut MapData, Addr, IdentityValue>,
    pub(super) cidrs: LpmTrie<&'a mut MapData, Addr, IdentityValue>,
    pub(super) peers: HashMap<&'a mut MapData, PeerKey, ClassMask>,
    pub(super) ports: LpmTrie<&'a mut MapData, PortKey, ClassMask>,
}

impl<'a> Maps<'a> {
    pub(super) fn open(ebpf: &'a mut Ebpf) -> Result<Self, DataplaneError> {
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

    /// Writes every entry of `rules` under `id`.
    pub(super) fn write_rules(
        &mut self,
        id: u32,
        rules: &Rules,
        report: &mut SyncReport,
    ) -> Result<(), DataplaneError> {
        self.write_entries(id, rules.peers.iter(), rules.ports.iter(), report)
    }

    /// Writes the entries `change` adds or changes under `id`, and deletes those it removes.
    pub(super) fn write_change(
        &mut self,
        id: u32,
        change: &Change,
        report: &mut SyncReport,
    ) -> Result<(), DataplaneError> {
        let (peers, ports) = (&change.peers, &change.ports);
        let peer_values = peers
            .added
            .iter()
            .chain(&peers.changed)
            .map(|(k, v)| (k, v));
        let port_values = ports
            .added
            .iter()
            .chain(&ports.changed)
            .map(|(k, v)| (k, v));
        self.write_entries(id, peer_values, port_values, report)?;
        for k in &peers.gone {
            let _ = self.peers.remove(&peer_key(id, *k));
            report.deletes += 1;
        }
        for k in &ports.gone {
            let _ = self.ports.remove(&port_key(id, port_map_key(*k)));
            report.deletes += 1;
        }
        Ok(())
    }

    fn write_entries<'e>(
        &mut self,
        id: u32,
        peers: impl Iterator<Item = (&'e (u8, u32), &'e ClassMask)>,
        ports: impl Iterator<Item = (&'e (u8, u8, PortPrefix), &'e ClassMask)>,
        report: &mut SyncReport,
    ) -> Result<(), DataplaneError> {
        for (k, v) in peers {
            self.peers
                .insert(peer_key(id, *k), v, 0)
                .map_err(map_err(MAP_PEERS, "insert"))?;
            report.writes += 1;
        }
        for (k, v) in ports {
            self.ports
                .insert(&port_key(id, port_map_key(*k)), v, 0)
                .map_err(map_err(MAP_PORTS, "insert"))?;
            report.writes += 1;
        }
        Ok(())
    }

    /// Deletes every entry of `rules` under `id` (best effort: a missing entry is fine).
    pub(super) fn delete_rules(&mut self, id: u32, rules: &Rules, report: &mut SyncReport) {
        for k in rules.peers.keys() {
            let _ = self.peers.remove(&peer_key(id, *k));
            report.deletes += 1;
        }
        for k in rules.ports.keys() {
            let _ = self.ports.remove(&port_key(id, port_map_key(*k)));
            report.deletes += 1;
        }
    }
}

/// Entries of one map grouped by endpoint id.
pub(super) type ById<K> = BTreeMap<u32, BTreeMap<K, ClassMask>>;
