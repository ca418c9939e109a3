//! Pod changes applied to the last compiled state in place, with the same result as a full
//! [`Compiler::compile`] of the changed cluster.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use palisade_common::{Addr, DIR_EGRESS, DIR_INGRESS};

use super::{
    Block, Compiler, IdentityKey, NodeState, NodeView, PeerPod, Prefix, as_peer, endpoint::Context,
    selecting_policies,
};
use crate::{
    k8s::cluster::{Cluster, ObjectKey, pod_addrs, pod_node},
    policy::model::Policy,
};

/// How [`Compiler::apply_pod_change`] brought the state up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodUpdate {
    /// In place, touching only the entries the change concerns.
    Incremental,
    /// By a full compile: the change was one the in-place path does not handle exactly.
    Recompiled,
}

/// What the last full compile saw besides pods, which pod changes leave as they are.
#[derive(Clone, Debug)]
pub(super) struct Snapshot {
    pub node: String,
    pub node_addrs: Vec<IpAddr>,
    pub policies: Vec<Policy>,
    /// The policies (indices into `policies`) selecting each local endpoint.
    pub selecting: HashMap<ObjectKey, Vec<usize>>,
    /// Addresses claimed by more than one pod, or by a pod and the node.
    pub contested: HashSet<Addr>,
    /// See [`super::host_blocks`]: a pod address inside one has a CIDR entry of its own.
    pub host_blocks: Vec<Block>,
    /// Local endpoints with more classes than class bits (they carry an error).
    pub overflowed: HashSet<ObjectKey>,
}

impl Snapshot {
    fn in_host_block(&self, addr: &Addr) -> bool {
        let host = Prefix::host(*addr);
        self.host_blocks.iter().any(|b| b.holds(&host))
    }

    fn policies_of(&self, indices: &[usize]) -> Vec<&Policy> {
        indices.iter().map(|i| &self.policies[*i]).collect()
    }
}

impl Compiler {
    /// Brings `state`, the last state this compiler made for `node`, up to date after pod `key`
    /// was added, changed or deleted: `cluster` holds its new version, or lacks it. Everything
    /// else (namespaces, policies, other pods, the node) must be as this compiler last saw it;
    /// compile again after any other change.
    ///
    /// The result equals a full [`Compiler::compile`] of `cluster` (same ids, same entries).
    /// Handled in place, exactly:
    /// - a peer pod whose identity exists: its addresses are written or deleted, nothing else
    ///   (one map write per address, whatever the number of policies);
    /// - a new identity, or one whose last pod left: its peer entries are added to or removed
    ///   from each local endpoint, from that endpoint's rules evaluated against that identity
    ///   alone; an endpoint with an egress rule with named ports that selects it is recomputed
    ///   whole (its classes follow the destinations' ports);
    /// - a local pod: its own endpoint is computed afresh.
    ///
    /// Falls back to a full compile when: nothing was compiled yet or the node differs; an
    /// address of the pod is claimed by another pod or the node (which one wins depends on
    /// key order); an address is inside an ipBlock of an egress rule with named ports (it has
    /// a CIDR entry of its own, so every endpoint's CIDR entries change); an endpoint involved
    /// has, or would get, more classes than class bits (its error is in `state.errors`).
    pub fn apply_pod_change(
        &mut self,
        state: &mut NodeState,
        cluster: &Cluster,
        node: &NodeView<'_>,
        key: &ObjectKey,
    ) -> PodUpdate {
        match self.try_apply(state, cluster, node, key) {
            Ok(()) => PodUpdate::Incremental,
            Err(reason) => {
                tracing::debug!(pod = %key, reason, "pod change: full compile");
                *state = self.compile(cluster, node);
                PodUpdate::Recompiled
            }
        }
    }

    /// The in-place path; `Err` says why it cannot be used. The snapshot is taken out while
    /// it runs: after an `Err` the compiler needs a full compile, which puts it back.
    fn try_apply(
        &mut self,
        state: &mut NodeState,
        cluster: &Cluster,
        node: &NodeView<'_>,
        key: &ObjectKey,
    ) -> Result<(), &'static str> {
        let mut last = self.last.take().ok_or("nothing compiled yet")?;
        if last.node != node.name || last.node_addrs != node.addrs {
            return Err("another node");
        }
        let pod = cluster.pods.get(key);
        let new = pod.and_then(|pod| as_peer(key, pod));
        let local = pod.filter(|pod| new.is_some() && pod_node(pod) == node.name);
        let old_addrs: &[Addr] = self.peers.get(key).map_or(&[], |p| &p.addrs);

        // Every check before the first write.
        if old_addrs.iter().any(|a| last.contested.contains(a)) {
            return Err("an address of the old version is claimed twice");
        }
        if let Some((_, addrs)) = &new {
            for (i, a) in addrs.iter().enumerate() {
                let taken = state.identities.contains_key(a) && !old_addrs.contains(a);
                if taken || addrs[..i].contains(a) {
                    return Err("an address of the new version is claimed twice");
                }
            }
        }
        let addrs = old_addrs.iter().chain(new.iter().flat_map(|(_, a)| a));
        if addrs.into_iter().any(|a| last.in_host_block(a)) {
            return Err("an address inside an ipBlock of an egress rule with named ports");
        }
        if last.overflowed.contains(key) {
            return Err("the pod's endpoint has more classes than class bits");
        }

        // The old version leaves: its endpoint and its addresses.
        state.endpoints.remove(key);
        last.selecting.remove(key);
        let old = self.peers.remove(key);
        for a in old.iter().flat_map(|o| &o.addrs) {
            state.identities.remove(a);
        }
        // The new version joins as a peer before the old one's identity loses a member, so
        // that an update keeping the identity keeps it (and its id).
        if let Some((ident, addrs)) = new {
            let joined = !self.identities.contains_key(&ident);
            let id = self.identity_id(&ident);
            for a in &addrs {
                state.identities.insert(*a, id);
            }
            *self.members.entry(id).or_default() += 1;
            self.peers.insert(key.clone(), PeerPod { id, addrs });
            if joined {
                self.live.insert(id, ident.clone());
                update_endpoints(&self.live, &last, cluster, state, id, &ident, true)?;
            }
        }
        if let Some(old) = old {
            let members = self.members.entry(old.id).or_default();
            *members = members.saturating_sub(1);
            if *members == 0 {
                self.members.remove(&old.id);
                if let Some(ident) = self.live.remove(&old.id) {
                    self.identities.remove(&ident);
                    update_endpoints(&self.live, &last, cluster, state, old.id, &ident, false)?;
                }
            }
        }
        // The new version's own endpoint.
        if let Some(pod) = local {
            let chosen = selecting_policies(&last.policies, key, pod);
            endpoint_afresh(&self.live, &last, cluster, state, key, pod, &chosen)?;
            last.selecting.insert(key.clone(), chosen);
        }
        self.last = Some(last);
        Ok(())
    }
}

/// Identity `id` joined (`joined`) or left: its peer entries at every local endpoint.
fn update_endpoints(
    live: &BTreeMap<u32, IdentityKey>,
    last: &Snapshot,
    cluster: &Cluster,
    state: &mut NodeState,
    id: u32,
    ident: &IdentityKey,
    joined: bool,
) -> Result<(), &'static str> {
    let ctx = Context {
        cluster,
        identities: live,
        cidrs: &state.cidrs,
        addrs: &state.identities,
    };
    let mut recompute = Vec::new();
    for (key, ep) in &mut state.endpoints {
        let chosen = last.selecting.get(key).map_or(&[][..], Vec::as_slice);
        let Some(masks) = ctx.identity_masks(ep, &last.policies_of(chosen), ident) else {
            recompute.push(key.clone());
            continue;
        };
        for direction in [DIR_INGRESS, DIR_EGRESS] {
            let mask = masks[usize::from(direction)];
            if joined && mask != 0 {
                ep.peers.insert((direction, id), mask);
            } else if !joined {
                ep.peers.remove(&(direction, id));
            }
        }
    }
    for key in recompute {
        let pod = cluster
            .pods
            .get(&key)
            .ok_or("a local endpoint's pod is gone")?;
        let chosen = last.selecting.get(&key).cloned().unwrap_or_default();
        endpoint_afresh(live, last, cluster, state, &key, pod, &chosen)?;
    }
    Ok(())
}

/// Computes one local endpoint whole, as a full compile does.
fn endpoint_afresh(
    live: &BTreeMap<u32, IdentityKey>,
    last: &Snapshot,
    cluster: &Cluster,
    state: &mut NodeState,
    key: &ObjectKey,
    pod: &Pod,
    chosen: &[usize],
) -> Result<(), &'static str> {
    let ctx = Context {
        cluster,
        identities: live,
        cidrs: &state.cidrs,
        addrs: &state.identities,
    };
    let endpoint = ctx.endpoint(key, pod, pod_addrs(pod), &last.policies_of(chosen));
    if endpoint.degraded.iter().any(|e| !e.is_empty()) {
        return Err("an endpoint would have more classes than class bits");
    }
    state.endpoints.insert(key.clone(), endpoint);
    Ok(())
}
