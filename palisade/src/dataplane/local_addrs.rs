//! The addresses each local pod may send from ([`MAP_LOCAL_ADDRS`], address -> ifindex of its
//! host-side veth), kept beside the endpoint sync rather than inside it: they are written before
//! the sync switches any endpoint on and removed after it has switched the stale ones off, so an
//! endpoint that [`palisade_common::PROG_FROM_POD`] can find always has its addresses in place.
//!
//! An address that moves from one endpoint to another in one sync (a pod recreated with the same
//! IP on a new veth) is overwritten in place, never removed in between.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};
use palisade_common::{Addr, EndpointKey, MAP_LOCAL_ADDRS};

use super::DataplaneError;
use crate::{k8s::cluster::ObjectKey, policy::NodeState};

/// A copy of every entry this process wrote.
#[derive(Default)]
pub(super) struct LocalAddrs {
    written: BTreeMap<Addr, EndpointKey>,
}

/// Every address of every endpoint the sync will write (those whose interface is known).
fn wanted(state: &NodeState, ifindex: &BTreeMap<ObjectKey, u32>) -> BTreeMap<Addr, EndpointKey> {
    ifindex
        .iter()
        .filter_map(|(key, &index)| Some((state.endpoints.get(key)?, index)))
        .flat_map(|(ep, index)| ep.addrs.iter().map(move |a| (Addr::from(*a), index)))
        .collect()
}

fn open(ebpf: &mut Ebpf) -> Result<HashMap<&mut MapData, Addr, EndpointKey>, DataplaneError> {
    let map = ebpf
        .map_mut(MAP_LOCAL_ADDRS)
        .ok_or(DataplaneError::Missing {
            kind: "map",
            name: MAP_LOCAL_ADDRS,
        })?;
    HashMap::try_from(map).map_err(|source| DataplaneError::Map {
        map: MAP_LOCAL_ADDRS,
        op: "open",
        source,
    })
}

impl LocalAddrs {
    /// Reads back what an earlier agent left in the (pinned) map, so that addresses of pods
    /// that went while no agent ran are removed by the next [`Self::remove_stale`] instead of
    /// staying as sources some later pod on a reused interface could send from.
    pub(super) fn adopt(&mut self, ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
        let map = open(ebpf)?;
        for item in map.iter() {
            let (addr, index) = item.map_err(|source| DataplaneError::Map {
                map: MAP_LOCAL_ADDRS,
                op: "read",
                source,
            })?;
            self.written.insert(addr, index);
        }
        Ok(())
    }

    /// Before the endpoint sync: writes the addresses `state` gives its endpoints, where they
    /// differ from what was written. Returns the number of writes.
    pub(super) fn add(
        &mut self,
        ebpf: &mut Ebpf,
        state: &NodeState,
        ifindex: &BTreeMap<ObjectKey, u32>,
    ) -> Result<usize, DataplaneError> {
        let mut map = open(ebpf)?;
        let mut writes = 0;
        for (addr, index) in wanted(state, ifindex) {
            if self.written.get(&addr) == Some(&index) {
                continue;
            }
            map.insert(addr, index, 0)
                .map_err(|source| DataplaneError::Map {
                    map: MAP_LOCAL_ADDRS,
                    op: "insert",
                    source,
                })?;
            self.written.insert(addr, index);
            writes += 1;
        }
        Ok(writes)
    }

    /// After the endpoint sync succeeded: removes the addresses no endpoint of `state` has.
    /// Returns the number of deletes.
    pub(super) fn remove_stale(
        &mut self,
        ebpf: &mut Ebpf,
        state: &NodeState,
        ifindex: &BTreeMap<ObjectKey, u32>,
    ) -> Result<usize, DataplaneError> {
        let mut map = open(ebpf)?;
        let wanted = wanted(state, ifindex);
        let stale: Vec<Addr> = self
            .written
            .keys()
            .filter(|a| !wanted.contains_key(*a))
            .copied()
            .collect();
        for addr in &stale {
            // Best effort, as for the other maps: a missing entry is fine.
            let _ = map.remove(addr);
            self.written.remove(addr);
        }
        Ok(stale.len())
    }
}
