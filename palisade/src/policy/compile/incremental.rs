//! Changes applied to the last compiled state in place, with the same result as a full
//! [`Compiler::compile`] of the changed cluster: pods ([`Compiler::apply_pod_change`]),
//! policies and namespaces, one object at a time ([`Compiler::apply_change`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use crate::k8s::cluster::PodInfo;
use palisade_common::{Addr, DIR_EGRESS, DIR_INGRESS};

use palisade_common::{IDENTITY_CIDR_FLAG, IDENTITY_HOST};

use super::{
    Block, Compiler, EndpointMemo, IdentityKey, Journal, Kept, Live, NodeState, NodeView,
    PeerEdits, PeerPod, Prefix, V4_ROOT, as_peer, block_prefixes,
    endpoint::Context,
    host_blocks, selecting_policies, selects_pod,
    slots::{ClassSlots, Placements},
};
use crate::{
    k8s::cluster::{Cluster, ObjectKey, namespace_audited, pod_addrs, pod_labels, pod_node},
    policy::model::{Policy, PolicyError},
};

/// One object of the cluster that was added, changed or deleted: the cluster given with it
/// holds its new version, or lacks it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClusterChange {
    Namespace(String),
    Pod(ObjectKey),
    Policy(ObjectKey),
    /// A ClusterNetworkPolicy, by name.
    ClusterPolicy(String),
    /// A Node, by name (its labels and addresses matter to `nodes` peers).
    Node(String),
}

/// How [`Compiler::apply_change`] brought the state up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
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
    pub policies: BTreeMap<ObjectKey, Policy>,
    /// What reading each policy reported, for the policies that reported something.
    pub policy_errors: BTreeMap<ObjectKey, Vec<PolicyError>>,
    /// How many policies name each ipBlock prefix (a prefix leaves the CIDR trie with the last).
    pub prefix_uses: BTreeMap<Prefix, usize>,
    /// The policies selecting each local endpoint, in key order.
    pub selecting: HashMap<ObjectKey, Vec<ObjectKey>>,
    /// Addresses claimed by more than one pod, or by a pod and the node.
    pub contested: HashSet<Addr>,
    /// See [`super::host_blocks`]: a pod address inside one has a CIDR entry of its own.
    pub host_blocks: Vec<Block>,
    /// Local endpoints with more classes than class bits (they carry an error).
    pub overflowed: HashSet<ObjectKey>,
    /// The labels and addresses of every Node, when some ClusterNetworkPolicy has a `nodes`
    /// peer (otherwise Nodes change nothing).
    pub nodes: Option<BTreeMap<String, NodeFacts>>,
    /// The ClusterNetworkPolicies, read and ranked. While there are any, every change is
    /// applied by a full compile (their subjects and peers are not yet followed in place).
    pub tiers: Vec<crate::policy::tiers::ClusterPolicy>,
}

impl Snapshot {
    fn in_host_block(&self, addr: &Addr) -> bool {
        let host = Prefix::host(*addr);
        self.host_blocks.iter().any(|b| b.holds(&host))
    }

    fn policies_of(&self, keys: &[ObjectKey]) -> Vec<&Policy> {
        keys.iter().filter_map(|k| self.policies.get(k)).collect()
    }

    /// The policies selecting local endpoint `key`.
    fn selecting_of(&self, key: &ObjectKey) -> Vec<&Policy> {
        self.selecting
            .get(key)
            .map_or_else(Vec::new, |keys| self.policies_of(keys))
    }
}

/// What a `nodes` peer reads of a Node.
pub(super) type NodeFacts = (BTreeMap<String, String>, Vec<String>);

/// The labels and addresses of `node`.
pub(super) fn node_facts(node: &k8s_openapi::api::core::v1::Node) -> NodeFacts {
    let addresses = node
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten());
    (
        node.metadata.labels.clone().unwrap_or_default(),
        addresses.map(|a| a.address.clone()).collect(),
    )
}

impl Compiler {
    /// Node `name` changed: nothing to do unless a `nodes` peer exists and its labels or
    /// addresses changed (its heartbeats and conditions change nothing).
    fn try_apply_node(&mut self, cluster: &Cluster, name: &str) -> Result<(), &'static str> {
        let last = self.last.as_ref().ok_or("nothing compiled yet")?;
        let Some(nodes) = &last.nodes else {
            return Ok(());
        };
        if nodes.get(name) == cluster.nodes.get(name).map(|n| node_facts(n)).as_ref() {
            Ok(())
        } else {
            Err("a Node that a `nodes` peer may select changed")
        }
    }

    /// Brings `state`, the last state this compiler made for `node`, up to date after `change`;
    /// `cluster` is the cluster after it. Everything else must be as this compiler last saw it:
    /// apply several changes one at a time, in any order, each with the cluster after all of
    /// them or after it alone. The result equals a full [`Compiler::compile`] of `cluster`.
    pub fn apply_change(
        &mut self,
        state: &mut NodeState,
        cluster: &Cluster,
        node: &NodeView<'_>,
        change: &ClusterChange,
    ) -> Update {
        let applied = match change {
            ClusterChange::Pod(key) => self.try_apply(state, cluster, node, key),
            ClusterChange::Policy(key) => self.try_apply_policy(state, cluster, node, key),
            ClusterChange::Namespace(name) => self.try_apply_namespace(state, cluster, node, name),
            ClusterChange::ClusterPolicy(_) => Err("a ClusterNetworkPolicy changed"),
            ClusterChange::Node(name) => self.try_apply_node(cluster, name),
        };
        match applied {
            Ok(()) => Update::Incremental,
            Err(reason) => {
                tracing::debug!(?change, reason, "change: full compile");
                *state = self.compile(cluster, node);
                Update::Recompiled
            }
        }
    }

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
    ) -> Update {
        self.apply_change(state, cluster, node, &ClusterChange::Pod(key.clone()))
    }

    /// The last full compile's snapshot, taken out for an in-place change (a full compile
    /// puts it back after an `Err`), if it was made for this node.
    fn take_last(&mut self, node: &NodeView<'_>) -> Result<Snapshot, &'static str> {
        let last = self.last.take().ok_or("nothing compiled yet")?;
        if last.node != node.name || last.node_addrs != node.addrs {
            return Err("another node");
        }
        if !last.tiers.is_empty() {
            return Err("ClusterNetworkPolicies are compiled whole");
        }
        Ok(last)
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
        let mut last = self.take_last(node)?;
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
        if state.endpoints.remove(key).is_some() {
            self.journal.endpoint(key);
        }
        self.slots.forget(key);
        last.selecting.remove(key);
        let old = self.peers.remove(key);
        for a in old.iter().flat_map(|o| &o.addrs) {
            state.identities.remove(a);
            self.journal.identity(*a);
        }
        // The new version joins as a peer before the old one's identity loses a member, so
        // that an update keeping the identity keeps it (and its id).
        if let Some((ident, addrs)) = new {
            let joined = !self.identities.contains_key(&ident);
            let id = self.identity_id(&ident);
            for a in &addrs {
                state.identities.insert(*a, id);
                self.journal.identity(*a);
            }
            *self.members.entry(id).or_default() += 1;
            self.peers.insert(key.clone(), PeerPod { id, addrs });
            if joined {
                self.live.insert(id, ident.clone());
                let journal = &mut self.journal;
                update_endpoints(
                    (&self.live, &mut self.slots),
                    &last,
                    cluster,
                    state,
                    journal,
                    (id, &ident),
                    true,
                )?;
            }
        }
        if let Some(old) = old {
            let members = self.members.entry(old.id).or_default();
            *members = members.saturating_sub(1);
            if *members == 0 {
                self.members.remove(&old.id);
                if let Some(ident) = self.live.remove(old.id) {
                    self.identities.remove(&ident);
                    let journal = &mut self.journal;
                    let (live, id) = ((&self.live, &mut self.slots), old.id);
                    update_endpoints(live, &last, cluster, state, journal, (id, &ident), false)?;
                }
            }
        }
        // The new version's own endpoint.
        if let Some(pod) = local {
            let chosen = selecting_policies(&last.policies, key, pod);
            let live = (&self.live, &mut self.slots);
            endpoint_afresh(live, &last, cluster, state, key, pod, &chosen)?;
            self.journal.endpoint(key);
            last.selecting.insert(key.clone(), chosen);
        }
        self.last = Some(last);
        Ok(())
    }
}

/// Identity `id` joined (`joined`) or left: its peer entries at every local endpoint.
fn update_endpoints(
    (live, slots): (&Live, &mut ClassSlots),
    last: &Snapshot,
    cluster: &Cluster,
    state: &mut NodeState,
    journal: &mut Journal,
    (id, ident): (u32, &IdentityKey),
    joined: bool,
) -> Result<(), &'static str> {
    let ctx = Context {
        cluster,
        identities: live,
        cidrs: &state.cidrs,
        addrs: &state.identities,
    };
    let mut recompute = Vec::new();
    let mut edits = PeerEdits::default();
    for (key, ep) in &mut state.endpoints {
        let Some(masks) = ctx.identity_masks(ep, &last.selecting_of(key), ident) else {
            recompute.push(key.clone());
            continue;
        };
        let edit = [DIR_INGRESS, DIR_EGRESS].map(|direction| {
            let mask = masks[usize::from(direction)];
            ((direction, id), (joined && mask != 0).then_some(mask))
        });
        if edits.apply(ep, edit) {
            journal.endpoint(key);
        }
    }
    for key in recompute {
        let pod = cluster
            .pods
            .get(&key)
            .ok_or("a local endpoint's pod is gone")?;
        let chosen = last.selecting.get(&key).cloned().unwrap_or_default();
        endpoint_afresh((live, slots), last, cluster, state, &key, pod, &chosen)?;
        journal.endpoint(&key);
    }
    Ok(())
}

/// Computes one local endpoint whole, as a full compile does.
fn endpoint_afresh(
    (live, slots): (&Live, &mut ClassSlots),
    last: &Snapshot,
    cluster: &Cluster,
    state: &mut NodeState,
    key: &ObjectKey,
    pod: &PodInfo,
    chosen: &[ObjectKey],
) -> Result<(), &'static str> {
    let ctx = Context {
        cluster,
        identities: live,
        cidrs: &state.cidrs,
        addrs: &state.identities,
    };
    let mut endpoint = ctx.endpoint(key, pod, pod_addrs(pod), &last.policies_of(chosen), &[]);
    if endpoint.degraded.iter().any(|e| !e.is_empty()) {
        return Err("an endpoint would have more classes than class bits");
    }
    slots.place(key, &mut endpoint, &mut Placements::default());
    if let Some(old) = state.endpoints.get(key) {
        Kept::default().keep(&mut endpoint, old);
    }
    state.endpoints.insert(key.clone(), endpoint);
    Ok(())
}

impl Compiler {
    /// Policy `key` was added, changed or deleted (`cluster` holds its new version, or lacks
    /// it). In place:
    /// - the endpoints it selected before or selects now are computed afresh, their
    ///   NetworkPolicy classes placed in the bits they held (`slots.rs`);
    /// - a prefix no policy names any more leaves the CIDR trie and every endpoint's peers; a
    ///   new one gets the next class id (in prefix order, as a full compile allocates them) and,
    ///   at every other endpoint, the classes of the longest prefix that was there and holds
    ///   it. That is exact: every ipBlock of an endpoint's policies is a cidr or except in the
    ///   trie, so a cidr or except holds the new prefix exactly when it holds that parent (two
    ///   prefixes that both contain a third are nested), and the parent is of the new prefix's
    ///   family since the IPv4 root is always in the trie.
    ///
    /// Falls back to a full compile when the old or the new version has an ipBlock in an egress
    /// rule with named ports (pod addresses inside it get CIDR entries of their own), or an
    /// endpoint it concerns has more classes than class bits.
    fn try_apply_policy(
        &mut self,
        state: &mut NodeState,
        cluster: &Cluster,
        node: &NodeView<'_>,
        key: &ObjectKey,
    ) -> Result<(), &'static str> {
        let mut last = self.take_last(node)?;
        let new = cluster.policies.get(key).map(|p| Policy::from_api(p));
        let old = last.policies.get(key);
        let old_new = old.into_iter().chain(new.as_ref().map(|(p, _)| p));
        if !host_blocks(old_new).is_empty() {
            return Err("an ipBlock in an egress rule with named ports");
        }
        // The endpoints it concerns, before the first write.
        let mut affected = Vec::new();
        for ep_key in state.endpoints.keys() {
            let before = last.selecting.get(ep_key).is_some_and(|k| k.contains(key));
            let now = new.as_ref().is_some_and(|(policy, _)| {
                cluster
                    .pods
                    .get(ep_key)
                    .is_some_and(|pod| selects_pod(policy, ep_key, pod_labels(pod)))
            });
            if before || now {
                if last.overflowed.contains(ep_key) {
                    return Err("an endpoint it selects has more classes than class bits");
                }
                affected.push((ep_key.clone(), now));
            }
        }

        // Prefixes: the old version's uses go, the new version's come.
        let old_prefixes = old.map(block_prefixes).unwrap_or_default();
        let new_prefixes = new
            .as_ref()
            .map(|(p, _)| block_prefixes(p))
            .unwrap_or_default();
        let mut gone = Vec::new();
        for p in &old_prefixes {
            if let Some(uses) = last.prefix_uses.get_mut(p) {
                *uses -= 1;
                if *uses == 0 {
                    last.prefix_uses.remove(p);
                    gone.push(*p);
                }
            }
        }
        let mut added = Vec::new();
        for p in &new_prefixes {
            let uses = last.prefix_uses.entry(*p).or_default();
            *uses += 1;
            if *uses == 1 && !state.cidrs.contains_key(p) {
                added.push(*p);
            }
        }
        // A prefix that stays for another reason: the IPv4 root, a pod's host prefix.
        let host_prefix = |p: &Prefix| {
            p.len == 128
                && last.in_host_block(&p.addr)
                && state
                    .identities
                    .get(&p.addr)
                    .is_some_and(|id| *id != IDENTITY_HOST)
        };
        let gone: Vec<(Prefix, u32)> = gone
            .into_iter()
            .filter(|p| *p != V4_ROOT && !last.prefix_uses.contains_key(p) && !host_prefix(p))
            .filter_map(|p| Some((p, state.cidrs.get(&p).copied()?)))
            .collect();
        for (p, id) in &gone {
            state.cidrs.remove(p);
            self.cidrs.remove(p);
            self.journal.cidrs = true;
            let mut edits = PeerEdits::default();
            for (key, ep) in &mut state.endpoints {
                let edit = [((DIR_INGRESS, *id), None), ((DIR_EGRESS, *id), None)];
                if edits.apply(ep, edit) {
                    self.journal.endpoint(key);
                }
            }
        }
        // `added` is in prefix order (a set's), the order a full compile allocates in.
        let mut parents = Vec::new();
        for p in &added {
            let parent = state
                .cidrs
                .iter()
                .filter(|(q, _)| q.contains(p))
                .max_by_key(|(q, _)| q.len)
                .map(|(_, id)| *id);
            parents.push(parent);
        }
        for (p, parent) in added.iter().zip(parents) {
            self.next_cidr += 1;
            let id = IDENTITY_CIDR_FLAG | self.next_cidr;
            self.cidrs.insert(*p, id);
            state.cidrs.insert(*p, id);
            self.journal.cidrs = true;
            let Some(parent) = parent else { continue };
            let mut edits = PeerEdits::default();
            for (key, ep) in &mut state.endpoints {
                let edit = [DIR_INGRESS, DIR_EGRESS].map(|direction| {
                    let mask = ep.peers.get(&(direction, parent)).copied();
                    ((direction, id), mask)
                });
                if edits.apply(ep, edit) {
                    self.journal.endpoint(key);
                }
            }
        }

        // The policy itself, then the endpoints it concerns.
        last.policies.remove(key);
        last.policy_errors.remove(key);
        if let Some((policy, errors)) = new {
            if !errors.is_empty() {
                last.policy_errors.insert(key.clone(), errors);
            }
            last.policies.insert(key.clone(), policy);
        }
        let mut memo = EndpointMemo::default();
        let mut placed = Placements::default();
        let mut kept = Kept::default();
        for (ep_key, now) in affected {
            let pod = cluster
                .pods
                .get(&ep_key)
                .ok_or("a local endpoint's pod is gone")?;
            let mut chosen = last.selecting.remove(&ep_key).unwrap_or_default();
            chosen.retain(|k| k != key);
            if now {
                let at = chosen.partition_point(|k| k < key);
                chosen.insert(at, key.clone());
            }
            let ctx = Context {
                cluster,
                identities: &self.live,
                cidrs: &state.cidrs,
                addrs: &state.identities,
            };
            let mut endpoint = memo.endpoint(
                &ctx,
                &ep_key,
                pod,
                (&chosen, &last.policies_of(&chosen)),
                &[],
            );
            if endpoint.degraded.iter().any(|e| !e.is_empty()) {
                return Err("an endpoint would have more classes than class bits");
            }
            self.slots.place(&ep_key, &mut endpoint, &mut placed);
            if let Some(old) = state.endpoints.get(&ep_key) {
                kept.keep(&mut endpoint, old);
            }
            if state.endpoints.get(&ep_key) != Some(&endpoint) {
                self.journal.endpoint(&ep_key);
                state.endpoints.insert(ep_key.clone(), endpoint);
            }
            last.selecting.insert(ep_key, chosen);
        }
        state.errors = last.errors(state);
        self.last = Some(last);
        Ok(())
    }

    /// Namespace `name` was added, changed or deleted: the peer entries of its identities at
    /// every endpoint (namespace selectors read its labels) and the audit flag of its own
    /// endpoints. Nothing else reads a namespace.
    fn try_apply_namespace(
        &mut self,
        state: &mut NodeState,
        cluster: &Cluster,
        node: &NodeView<'_>,
        name: &str,
    ) -> Result<(), &'static str> {
        let last = self.take_last(node)?;
        let ids: Vec<u32> = self.live.in_namespace(name).collect();
        let audited = namespace_audited(cluster, name);
        let ctx = Context {
            cluster,
            identities: &self.live,
            cidrs: &state.cidrs,
            addrs: &state.identities,
        };
        let mut recompute = Vec::new();
        let mut edits = PeerEdits::default();
        for (key, ep) in &mut state.endpoints {
            if &*key.namespace == name {
                let flags = ep.flags;
                ep.flags &= !palisade_common::EP_AUDIT;
                if audited {
                    ep.flags |= palisade_common::EP_AUDIT;
                }
                if ep.flags != flags {
                    self.journal.endpoint(key);
                }
            }
            let policies = last.selecting_of(key);
            if !ids.is_empty() && Context::per_peer_reads_namespaces(&policies) {
                recompute.push(key.clone());
                continue;
            }
            let mut edit = Vec::new();
            for id in &ids {
                let ident = self
                    .live
                    .get(*id)
                    .ok_or("an identity of the namespace is gone")?;
                let Some(masks) = ctx.identity_masks(ep, &policies, ident) else {
                    recompute.push(key.clone());
                    edit.clear();
                    break;
                };
                for direction in [DIR_INGRESS, DIR_EGRESS] {
                    let mask = masks[usize::from(direction)];
                    edit.push(((direction, *id), (mask != 0).then_some(mask)));
                }
            }
            if edits.apply(ep, edit) {
                self.journal.endpoint(key);
            }
        }
        for key in recompute {
            if last.overflowed.contains(&key) {
                return Err("an endpoint to recompute has more classes than class bits");
            }
            let pod = cluster
                .pods
                .get(&key)
                .ok_or("a local endpoint's pod is gone")?;
            let chosen = last.selecting.get(&key).cloned().unwrap_or_default();
            let live = (&self.live, &mut self.slots);
            endpoint_afresh(live, &last, cluster, state, &key, pod, &chosen)?;
            self.journal.endpoint(&key);
        }
        self.last = Some(last);
        Ok(())
    }
}

impl Snapshot {
    /// `NodeState::errors` as a full compile lists them: the policies' own, in key order, then
    /// the endpoints' (rules that got no class), in key order.
    fn errors(&self, state: &NodeState) -> Vec<PolicyError> {
        let own = self.policy_errors.values().flatten();
        let degraded = state
            .endpoints
            .values()
            .flat_map(|ep| ep.degraded.iter().flatten());
        own.chain(degraded).cloned().collect()
    }
}
