//! A new agent's first look at the maps: what an earlier agent left pinned is read back, so
//! the first sync writes only the difference.

use std::{collections::BTreeMap, sync::Arc};

use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie},
};
use palisade_common::{
    Addr, EndpointInfo, IdentityValue, MAP_CIDRS, MAP_ENDPOINTS, MAP_PEERS, MAP_POD_IDENTITIES,
    MAP_PORTS,
};

use super::{
    Endpoint, Rules, SyncReport, Written,
    maps::{ById, Maps, map_err, peer_key, port_key},
    port_map_key, port_state_key,
};
use crate::{
    dataplane::DataplaneError,
    k8s::cluster::ObjectKey,
    policy::{compile::TierMasks, ports::PortPrefix},
};

impl Written {
    /// Reads back what an earlier agent wrote into (pinned) maps, so the first sync writes only
    /// the difference and allowed flows never see their rules go and come back. `ifindex` names
    /// the local pods' interfaces now: an endpoint entry on an interface no pod has any more is
    /// switched off, and entries under ids no endpoint owns are deleted.
    pub(in crate::dataplane) fn adopt(
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
        let mut ports: ById<(u8, u8, PortPrefix)> = BTreeMap::new();
        let mut malformed = Vec::new();
        for item in maps.ports.iter() {
            let (k, v) = item.map_err(map_err(MAP_PORTS, "read"))?;
            let d = k.data();
            let map_key = (k.prefix_len(), d.direction, d.protocol, d.port_be);
            match port_state_key(map_key) {
                Some(key) => {
                    ports.entry(d.endpoint).or_default().insert(key, v);
                }
                // No sync writes such a key: it is nobody's.
                None => malformed.push((d.endpoint, map_key)),
            }
        }
        for (id, k) in malformed {
            let _ = maps.ports.remove(&port_key(id, k));
            report.deletes += 1;
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
                tiers: TierMasks {
                    admin: info.admin,
                    baseline: info.baseline,
                    deny: info.deny,
                    pass: info.pass,
                },
                peers: Arc::new(peers.remove(&id).unwrap_or_default()),
                ports: Arc::new(ports.remove(&id).unwrap_or_default()),
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
                let _ = maps.ports.remove(&port_key(id, port_map_key(*k)));
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
}

/// The highest identity in the pod identity map and the highest CIDR class in the CIDR map.
pub(in crate::dataplane) fn highest_ids(ebpf: &Ebpf) -> Result<(u32, u32), DataplaneError> {
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
