//! Writing a [`NodeState`] into the maps as a diff against what was written before.
//!
//! Order matters for failing closed: entries that grant access to an endpoint are written
//! before the endpoint entry that makes the programs read them, and removed after it; an
//! endpoint that becomes isolated is written first of all.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie, MapData, lpm_trie::Key},
};
use palisade_common::{
    Addr, ClassMask, EndpointInfo, IdentityValue, MAP_CIDRS, MAP_ENDPOINTS, MAP_PEERS,
    MAP_POD_IDENTITIES, MAP_PORTS, PORT_KEY_FIXED_BITS, PeerKey, PortKey,
};

use super::DataplaneError;
use crate::{cluster::ObjectKey, policy::NodeState};

/// What one sync changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    pub writes: usize,
    pub deletes: usize,
}

/// A copy of every entry this process wrote, so the next sync writes only the difference.
#[derive(Default)]
pub(super) struct Written {
    endpoints: BTreeMap<u32, EndpointInfo>,
    identities: BTreeMap<Addr, u32>,
    cidrs: BTreeMap<(u32, Addr), u32>,
    peers: BTreeMap<PeerKey, ClassMask>,
    ports: BTreeMap<(u32, PortKey), ClassMask>,
    endpoint_ids: BTreeMap<ObjectKey, u32>,
    next_endpoint_id: u32,
}

struct Desired {
    endpoints: BTreeMap<u32, EndpointInfo>,
    identities: BTreeMap<Addr, u32>,
    cidrs: BTreeMap<(u32, Addr), u32>,
    peers: BTreeMap<PeerKey, ClassMask>,
    ports: BTreeMap<(u32, PortKey), ClassMask>,
}

fn map_err(map: &'static str, op: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, op, source }
}

fn hash<'a, K: aya::Pod, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<HashMap<&'a mut MapData, K, V>, DataplaneError> {
    let map = ebpf
        .map_mut(name)
        .ok_or(DataplaneError::Missing { kind: "map", name })?;
    HashMap::try_from(map).map_err(map_err(name, "open"))
}

fn trie<'a, K: aya::Pod, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<LpmTrie<&'a mut MapData, K, V>, DataplaneError> {
    let map = ebpf
        .map_mut(name)
        .ok_or(DataplaneError::Missing { kind: "map", name })?;
    LpmTrie::try_from(map).map_err(map_err(name, "open"))
}

/// Entries of `new` that differ from `old`, and keys of `old` that `new` lacks.
fn diff<K: Ord + Copy, V: PartialEq + Copy>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> (Vec<(K, V)>, Vec<K>) {
    let upserts = new
        .iter()
        .filter(|(k, v)| old.get(k) != Some(v))
        .map(|(k, v)| (*k, *v))
        .collect();
    let deletes = old
        .keys()
        .filter(|k| !new.contains_key(k))
        .copied()
        .collect();
    (upserts, deletes)
}

impl Written {
    fn desired(&mut self, state: &NodeState, ifindex: &BTreeMap<ObjectKey, u32>) -> Desired {
        let mut d = Desired {
            endpoints: BTreeMap::new(),
            identities: state.identities.clone(),
            cidrs: state
                .cidrs
                .iter()
                .map(|(p, id)| ((p.len, p.addr), *id))
                .collect(),
            peers: BTreeMap::new(),
            ports: BTreeMap::new(),
        };
        self.endpoint_ids
            .retain(|k, _| state.endpoints.contains_key(k) && ifindex.contains_key(k));
        for (key, ep) in &state.endpoints {
            let Some(ifindex) = ifindex.get(key) else {
                continue;
            };
            let id = *self.endpoint_ids.entry(key.clone()).or_insert_with(|| {
                self.next_endpoint_id += 1;
                self.next_endpoint_id
            });
            d.endpoints.insert(
                *ifindex,
                EndpointInfo {
                    id,
                    flags: ep.flags,
                    any_peer: ep.any_peer,
                    any_port: ep.any_port,
                },
            );
            for ((direction, peer), mask) in &ep.peers {
                d.peers.insert(
                    PeerKey {
                        endpoint: id,
                        peer: *peer,
                        direction: *direction,
                        _pad: [0; 3],
                    },
                    *mask,
                );
            }
            for ((direction, protocol, prefix), mask) in &ep.ports {
                let key = PortKey {
                    endpoint: id,
                    direction: *direction,
                    protocol: *protocol,
                    port_be: prefix.value.to_be_bytes(),
                };
                d.ports
                    .insert((PORT_KEY_FIXED_BITS + u32::from(prefix.len), key), *mask);
            }
        }
        d
    }

    pub(super) fn apply(
        &mut self,
        ebpf: &mut Ebpf,
        state: &NodeState,
        ifindex: &BTreeMap<ObjectKey, u32>,
    ) -> Result<SyncReport, DataplaneError> {
        let d = self.desired(state, ifindex);
        let mut report = SyncReport::default();
        let (ep_up, ep_del) = diff(&self.endpoints, &d.endpoints);
        // 1. Endpoints that gain isolation: before anything else, so no window is open.
        let (tighten, loosen): (Vec<_>, Vec<_>) = ep_up.into_iter().partition(|(k, v)| {
            self.endpoints
                .get(k)
                .is_some_and(|old| v.flags & !old.flags != 0)
        });
        self.write_endpoints(ebpf, &tighten, &mut report)?;
        // 2. Grants: identities, CIDR classes, peers, ports.
        {
            let mut m: HashMap<_, Addr, IdentityValue> = hash(ebpf, MAP_POD_IDENTITIES)?;
            let (up, del) = diff(&self.identities, &d.identities);
            for (k, v) in up {
                m.insert(k, IdentityValue { identity: v }, 0)
                    .map_err(map_err(MAP_POD_IDENTITIES, "insert"))?;
                self.identities.insert(k, v);
                report.writes += 1;
            }
            for k in del {
                let _ = m.remove(&k);
                self.identities.remove(&k);
                report.deletes += 1;
            }
        }
        {
            let mut m: LpmTrie<_, Addr, IdentityValue> = trie(ebpf, MAP_CIDRS)?;
            let (up, del) = diff(&self.cidrs, &d.cidrs);
            for ((len, addr), v) in up {
                m.insert(&Key::new(len, addr), IdentityValue { identity: v }, 0)
                    .map_err(map_err(MAP_CIDRS, "insert"))?;
                self.cidrs.insert((len, addr), v);
                report.writes += 1;
            }
            for (len, addr) in del {
                let _ = m.remove(&Key::new(len, addr));
                self.cidrs.remove(&(len, addr));
                report.deletes += 1;
            }
        }
        let (peer_up, peer_del) = diff(&self.peers, &d.peers);
        let (port_up, port_del) = diff(&self.ports, &d.ports);
        {
            let mut m: HashMap<_, PeerKey, ClassMask> = hash(ebpf, MAP_PEERS)?;
            for (k, v) in peer_up {
                m.insert(k, v, 0).map_err(map_err(MAP_PEERS, "insert"))?;
                self.peers.insert(k, v);
                report.writes += 1;
            }
        }
        {
            let mut m: LpmTrie<_, PortKey, ClassMask> = trie(ebpf, MAP_PORTS)?;
            for ((len, k), v) in port_up {
                m.insert(&Key::new(len, k), v, 0)
                    .map_err(map_err(MAP_PORTS, "insert"))?;
                self.ports.insert((len, k), v);
                report.writes += 1;
            }
        }
        // 3. Endpoints that are new or only loosen, now that their grants are in.
        self.write_endpoints(ebpf, &loosen, &mut report)?;
        {
            let mut m: HashMap<_, u32, EndpointInfo> = hash(ebpf, MAP_ENDPOINTS)?;
            for k in ep_del {
                let _ = m.remove(&k);
                self.endpoints.remove(&k);
                report.deletes += 1;
            }
        }
        // 4. Grants nobody reads any more.
        {
            let mut m: HashMap<_, PeerKey, ClassMask> = hash(ebpf, MAP_PEERS)?;
            for k in peer_del {
                let _ = m.remove(&k);
                self.peers.remove(&k);
                report.deletes += 1;
            }
        }
        {
            let mut m: LpmTrie<_, PortKey, ClassMask> = trie(ebpf, MAP_PORTS)?;
            for (len, k) in port_del {
                let _ = m.remove(&Key::new(len, k));
                self.ports.remove(&(len, k));
                report.deletes += 1;
            }
        }
        Ok(report)
    }

    fn write_endpoints(
        &mut self,
        ebpf: &mut Ebpf,
        entries: &[(u32, EndpointInfo)],
        report: &mut SyncReport,
    ) -> Result<(), DataplaneError> {
        let mut m: HashMap<_, u32, EndpointInfo> = hash(ebpf, MAP_ENDPOINTS)?;
        for (k, v) in entries {
            m.insert(k, v, 0)
                .map_err(map_err(MAP_ENDPOINTS, "insert"))?;
            self.endpoints.insert(*k, *v);
            report.writes += 1;
        }
        Ok(())
    }
}
