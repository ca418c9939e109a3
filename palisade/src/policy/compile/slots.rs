//! NetworkPolicy class bits that survive a recompute.
//!
//! An endpoint's classes are computed densely, numbered in the order its policies are read
//! (`endpoint.rs`), so one policy more or less at the front renumbers every class after it:
//! every peer and port entry of the endpoint changes value, and the dataplane rewrites the
//! endpoint whole under its idle id (`dataplane/sync`). At a node whose 50 replicas are all
//! selected by the policy deleted, that was 102,500 writes for one delete.
//!
//! So the compiler remembers, per endpoint and direction, which NetworkPolicy class held which
//! *slot* of the bits between the Admin tier's and the Baseline tier's, by the rules it
//! listed, and places a recomputed endpoint's classes there: a class takes the free slot whose
//! last class listed most of its rules (a class that gained or lost a policy's rules is still
//! the same class: its ports grow or shrink, its bit stays), a class with no rule held before
//! takes a slot no class held (so no bit changes meaning within one update, when there is
//! room), and the slot of a class that left stays empty until it is needed. The tiers' bits
//! keep their order (the Admin tier's lowest, the Baseline tier's after the last slot in use),
//! which is all the programs read ([`palisade_common::decide`] finds a tier's first rule as the
//! lowest bit of that tier's mask; a NetworkPolicy class is any bit outside both).
//!
//! A full compile places its endpoints the same way, from the same memory, so it reproduces
//! exactly what the changes applied in place left (the property tests and the agent's periodic
//! check compare the two). What a fresh process compiles first is dense: an agent restarted
//! after deletes rewrites those endpoints once, atomically, with their classes renumbered.

use std::{collections::HashMap, sync::Arc};

use palisade_common::{ClassMask, MAX_CLASSES};

use super::{Class, ClassKind, EndpointState, PeerEntries, PortEntries, RuleRef, TierMasks};
use crate::{
    k8s::{cluster::ObjectKey, cnp::Tier},
    policy::ports::PortSet,
};

/// Per endpoint and direction, the NetworkPolicy class in each slot (its rules and ports), as
/// last placed (no rules: an empty slot). Replicas placed alike share one record.
#[derive(Clone, Debug, Default)]
pub(super) struct ClassSlots(HashMap<ObjectKey, Arc<[Vec<Slot>; 2]>>);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Slot {
    rules: Vec<RuleRef>,
    ports: Option<PortSet>,
}

/// The placements made within one compile or one change, by what each was made from, so that
/// replicas (one computed endpoint, shared, placed from one shared record) are placed once and
/// share the result: their entries stay one allocation, which the dataplane then compares and
/// writes as one.
#[derive(Default)]
pub(super) struct Placements(HashMap<[usize; 4], Placement>);

/// One placement: the parts it read and the parts it made (both held, so that no address in
/// a key is reused while the memo lives).
struct Placement {
    from: Parts,
    prev: Option<Arc<[Vec<Slot>; 2]>>,
    to: Parts,
    slots: Option<Arc<[Vec<Slot>; 2]>>,
}

/// What placing reads and changes of an endpoint.
#[derive(Clone)]
struct Parts {
    peers: Arc<PeerEntries>,
    ports: Arc<PortEntries>,
    classes: Arc<[Vec<Class>; 2]>,
    any_peer: [ClassMask; 2],
    any_port: [ClassMask; 2],
    tiers: TierMasks,
}

impl Parts {
    fn of(ep: &EndpointState) -> Self {
        Self {
            peers: ep.peers.clone(),
            ports: ep.ports.clone(),
            classes: ep.classes.clone(),
            any_peer: ep.any_peer,
            any_port: ep.any_port,
            tiers: ep.tiers,
        }
    }

    fn put(&self, ep: &mut EndpointState) {
        ep.peers = self.peers.clone();
        ep.ports = self.ports.clone();
        ep.classes = self.classes.clone();
        ep.any_peer = self.any_peer;
        ep.any_port = self.any_port;
        ep.tiers = self.tiers;
    }

    /// The same allocations and the same masks.
    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.peers, &other.peers)
            && Arc::ptr_eq(&self.ports, &other.ports)
            && Arc::ptr_eq(&self.classes, &other.classes)
            && self.any_peer == other.any_peer
            && self.any_port == other.any_port
            && self.tiers == other.tiers
    }
}

impl ClassSlots {
    /// Renumbers the NetworkPolicy classes of `ep`, freshly computed (dense), into the slots
    /// they held at `key`, and remembers the result; an endpoint placed from the same
    /// computed entries and the same record as one in `done` takes that one's result.
    pub fn place(&mut self, key: &ObjectKey, ep: &mut EndpointState, done: &mut Placements) {
        let prev = self.0.remove(key);
        let from = Parts::of(ep);
        let memo_key = [
            Arc::as_ptr(&from.peers) as usize,
            Arc::as_ptr(&from.ports) as usize,
            Arc::as_ptr(&from.classes) as usize,
            prev.as_ref().map_or(0, |p| Arc::as_ptr(p) as usize),
        ];
        if let Some(placed) = done.0.get(&memo_key)
            && placed.from.same(&from)
            && placed.prev.as_ref().map(Arc::as_ptr) == prev.as_ref().map(Arc::as_ptr)
        {
            placed.to.put(ep);
            if let Some(slots) = &placed.slots {
                self.0.insert(key.clone(), slots.clone());
            }
            return;
        }
        let [ingress, egress] = prev.as_deref().cloned().unwrap_or_default();
        let next = [place(ep, 0, ingress), place(ep, 1, egress)];
        let slots = match &prev {
            Some(prev) if **prev == next => Some(prev.clone()),
            _ => next.iter().any(|s| !s.is_empty()).then(|| Arc::new(next)),
        };
        if let Some(slots) = &slots {
            self.0.insert(key.clone(), slots.clone());
        }
        let placement = Placement {
            from,
            prev,
            to: Parts::of(ep),
            slots,
        };
        done.0.insert(memo_key, placement);
    }

    /// The endpoint at `key` is gone.
    pub fn forget(&mut self, key: &ObjectKey) {
        self.0.remove(key);
    }

    /// Keeps only the endpoints `keep` names.
    pub fn retain(&mut self, keep: impl Fn(&ObjectKey) -> bool) {
        self.0.retain(|k, _| keep(k));
    }
}

/// An empty slot: no rule, no entry carries its bit.
fn hole() -> Class {
    Class {
        ports: PortSet::Ranges(Vec::new()),
        rules: Vec::new(),
        kind: ClassKind::Policy,
    }
}

/// Places direction `d` of `ep` (dense: Admin tier, NetworkPolicy, Baseline tier classes, in
/// that order) by `prev`; returns its slots.
fn place(ep: &mut EndpointState, d: usize, prev: Vec<Slot>) -> Vec<Slot> {
    let classes = &ep.classes[d];
    let admin = classes
        .iter()
        .take_while(|c| matches!(c.kind, ClassKind::Tier(t, _) if t != Tier::Baseline))
        .count();
    let policy = classes[admin..]
        .iter()
        .take_while(|c| c.kind == ClassKind::Policy)
        .count();
    let baseline = classes.len() - admin - policy;
    let room = MAX_CLASSES.saturating_sub(admin + baseline).max(policy);
    // Most endpoints of most compiles: every class where it was, no slot empty.
    let unchanged = prev.len() == policy
        && (prev.iter().zip(&classes[admin..])).all(|(slot, class)| {
            slot.rules == class.rules && slot.ports.as_ref() == Some(&class.ports)
        });
    if unchanged {
        return prev;
    }

    // Rule -> the slots that listed it (an egress rule with named ports can be in several
    // classes, one per port set its peers resolve to).
    let mut held: HashMap<&RuleRef, Vec<usize>> = HashMap::new();
    for (s, slot) in prev.iter().enumerate().take(room) {
        for r in &slot.rules {
            held.entry(r).or_default().push(s);
        }
    }
    let mut taken = vec![false; room];
    let mut slot_of: Vec<Option<usize>> = Vec::with_capacity(policy);
    for class in &classes[admin..admin + policy] {
        // The free slot whose last class listed most of this one's rules, then had its ports,
        // then the lowest. A class placed before is placed there again (its own slot lists
        // all its rules and has its ports, which no other NetworkPolicy class of the endpoint
        // has), so a full compile reproduces what changes applied in place left.
        let mut votes: Vec<(usize, usize)> = Vec::new();
        for s in class.rules.iter().filter_map(|r| held.get(r)).flatten() {
            match votes.iter_mut().find(|(slot, _)| slot == s) {
                Some((_, n)) => *n += 1,
                None => votes.push((*s, 1)),
            }
        }
        let score = |(s, n): (usize, usize)| (n, prev[s].ports.as_ref() == Some(&class.ports));
        let best = (votes.into_iter())
            .filter(|(s, _)| !taken[*s])
            .max_by(|a, b| score(*a).cmp(&score(*b)).then(b.0.cmp(&a.0)))
            .map(|(s, _)| s);
        if let Some(s) = best {
            taken[s] = true;
        }
        slot_of.push(best);
    }
    for slot in slot_of.iter_mut().filter(|s| s.is_none()) {
        // A slot nobody held if there is one (its bit then means one thing throughout the
        // update), else any free one: there are at least `policy` slots.
        let s = (0..room)
            .find(|&s| !taken[s] && prev.get(s).is_none_or(|p| p.rules.is_empty()))
            .or_else(|| (0..room).find(|&s| !taken[s]))
            .expect("at least as many slots as NetworkPolicy classes");
        taken[s] = true;
        *slot = Some(s);
    }
    let slot_of: Vec<usize> = slot_of.into_iter().flatten().collect();
    let span = slot_of.iter().max().map_or(0, |s| s + 1);
    let mut slots = vec![Slot::default(); span];
    for (j, s) in slot_of.iter().enumerate() {
        let class = &classes[admin + j];
        slots[*s] = Slot {
            rules: class.rules.clone(),
            ports: Some(class.ports.clone()),
        };
    }
    if slot_of.iter().enumerate().all(|(j, s)| j == *s) {
        return slots; // already in place (and so the Baseline tier's bits too)
    }

    // Old bit -> new bit.
    let mut to = [0u8; MAX_CLASSES];
    for (i, t) in to.iter_mut().enumerate().take(classes.len()) {
        *t = if i < admin {
            i
        } else if i < admin + policy {
            admin + slot_of[i - admin]
        } else {
            admin + span + (i - admin - policy)
        } as u8;
    }
    let remap = |mask: ClassMask| {
        let mut out: ClassMask = 0;
        let mut rest = mask;
        while rest != 0 {
            out |= 1 << to[rest.trailing_zeros() as usize];
            rest &= rest - 1;
        }
        out
    };
    let dir = d as u8;
    for ((direction, _), mask) in ep.peers_mut() {
        if *direction == dir {
            *mask = remap(*mask);
        }
    }
    for ((direction, _, _), mask) in ep.ports_mut() {
        if *direction == dir {
            *mask = remap(*mask);
        }
    }
    ep.any_peer[d] = remap(ep.any_peer[d]);
    ep.any_port[d] = remap(ep.any_port[d]);
    let t = &mut ep.tiers;
    for mask in [
        &mut t.admin[d],
        &mut t.baseline[d],
        &mut t.deny[d],
        &mut t.pass[d],
    ] {
        *mask = remap(*mask);
    }
    let mut dense = std::mem::take(&mut ep.classes_mut()[d]).into_iter();
    let mut placed: Vec<Class> = dense.by_ref().take(admin).collect();
    placed.resize_with(admin + span, hole);
    for s in &slot_of {
        placed[admin + s] = dense.next().expect("one class per slot");
    }
    placed.extend(dense);
    ep.classes_mut()[d] = placed;
    slots
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use palisade_common::{DIR_INGRESS, PROTO_TCP};

    use crate::{
        k8s::{
            cluster::ObjectKey,
            fixtures::{apply_yaml, dual_stack_apps},
        },
        policy::{ClusterChange, Compiler, NodeView, compile::Update, lookup::admits},
    };

    /// Three policies for `x/server`, each its own class (distinct peers and ports), read in
    /// name order.
    const POLICIES: &str = r"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-first, namespace: x}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 80}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-second, namespace: x}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{podSelector: {matchLabels: {app: other}}}], ports: [{port: 443}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: c-third, namespace: x}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{namespaceSelector: {}}], ports: [{port: 8080}]}]
";

    const LATE: &str = r"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: d-late, namespace: x}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
    - from: [{podSelector: {matchExpressions: [{key: app, operator: In, values: [other]}]}}]
      ports: [{port: 9000}]
";

    #[test]
    fn a_deleted_policy_leaves_the_other_classes_their_bits_and_entries() {
        let mut cluster = dual_stack_apps(
            "x",
            &[
                ("server", "10.0.0.10", "fd00::10"),
                ("client", "10.0.0.20", "fd00::20"),
                ("other", "10.0.0.30", "fd00::30"),
            ],
        );
        apply_yaml(&mut cluster, POLICIES);
        let addrs: [IpAddr; 1] = ["10.0.0.1".parse().expect("addr")];
        let view = NodeView {
            name: "node-1",
            addrs: &addrs,
        };
        let mut compiler = Compiler::new();
        let mut state = compiler.compile(&cluster, &view);
        let server = ObjectKey::new("x", "server");
        let before = state.endpoints[&server].clone();
        let d = usize::from(DIR_INGRESS);
        assert_eq!(before.classes[d].len(), 3, "{:?}", before.classes[d]);

        let first = ObjectKey::new("x", "a-first");
        cluster.policies.remove(&first);
        let change = ClusterChange::Policy(first);
        let update = compiler.apply_change(&mut state, &cluster, &view, &change);
        assert_eq!(update, Update::Incremental);
        let after = state.endpoints[&server].clone();
        // Bit 0 is empty now; the other two classes kept bits 1 and 2, so every entry either
        // stayed as it was or lost bit 0, and none is new: the dataplane shrinks in place.
        assert!(after.classes[d][0].rules.is_empty());
        assert_eq!(after.classes[d][1..], before.classes[d][1..]);
        for (k, v) in before.peers.iter() {
            assert_eq!(
                after.peers.get(k).copied().unwrap_or(0),
                v & !1,
                "peer {k:?}"
            );
        }
        for (k, v) in before.ports.iter() {
            assert_eq!(
                after.ports.get(k).copied().unwrap_or(0),
                v & !1,
                "port {k:?}"
            );
        }
        assert!(after.peers.keys().all(|k| before.peers.contains_key(k)));
        assert!(after.ports.keys().all(|k| before.ports.contains_key(k)));
        // What the bits grant: client on 80 no more, client on 8080 and other on 443 still.
        let ask = |s: &crate::policy::NodeState, from: &str, port| {
            admits(
                s,
                &server,
                DIR_INGRESS,
                from.parse().expect("addr"),
                PROTO_TCP,
                port,
            )
            .expect("endpoint")
        };
        assert!(ask(&state, "10.0.0.20", 8080) && ask(&state, "fd00::30", 443));
        assert!(!ask(&state, "10.0.0.20", 80) && !ask(&state, "10.0.0.30", 80));
        // A full compile by the same compiler places them the same way.
        assert_eq!(compiler.clone().compile(&cluster, &view), state);

        // A later class takes the empty slot: its bit has no entry left, so that is only adds.
        apply_yaml(&mut cluster, LATE);
        let late = ClusterChange::Policy(ObjectKey::new("x", "d-late"));
        assert_eq!(
            compiler.apply_change(&mut state, &cluster, &view, &late),
            Update::Incremental
        );
        let classes = &state.endpoints[&server].classes[d];
        assert_eq!(classes.len(), 3);
        assert_eq!(&*classes[0].rules[0].policy.name, "d-late");
        assert_eq!(classes[1..], after.classes[d][1..]);
        assert!(ask(&state, "10.0.0.30", 9000) && !ask(&state, "10.0.0.20", 9000));
        // A fresh compiler, which has no slots to keep, numbers in policy order, granting the
        // same.
        let fresh = Compiler::new().compile(&cluster, &view);
        assert_eq!(
            &*fresh.endpoints[&server].classes[d][0].rules[0].policy.name,
            "b-second"
        );
        for (from, port) in [("10.0.0.20", 8080), ("10.0.0.30", 443), ("10.0.0.30", 9000)] {
            assert!(
                ask(&fresh, from, port) && ask(&state, from, port),
                "{from}:{port}"
            );
        }
        assert!(!ask(&fresh, "10.0.0.20", 80));
    }

    #[test]
    fn replicas_share_their_entries_through_compiles_and_changes() {
        use std::sync::Arc;

        use crate::k8s::fixtures::{cluster, namespace, pod};

        let web = |i: usize| ObjectKey::new("x", format!("web-{i}"));
        let replicas = (0..3).map(|i| {
            let name = format!("web-{i}");
            let ip = format!("10.0.0.{}", 10 + i);
            pod("x", &name).label("app", "server").ip(&ip).into()
        });
        let peers = [("client", "10.0.0.20"), ("other", "10.0.0.30")]
            .map(|(name, ip)| pod("x", name).label("app", name).ip(ip).into());
        let mut cluster = cluster(
            std::iter::once(namespace("x").into())
                .chain(replicas)
                .chain(peers),
        );
        apply_yaml(&mut cluster, POLICIES);
        let addrs: [IpAddr; 1] = ["10.0.0.1".parse().expect("addr")];
        let view = NodeView {
            name: "node-1",
            addrs: &addrs,
        };
        let shared = |s: &crate::policy::NodeState| {
            let first = &s.endpoints[&web(0)];
            (1..3).all(|i| {
                let other = &s.endpoints[&web(i)];
                Arc::ptr_eq(&first.peers, &other.peers)
                    && Arc::ptr_eq(&first.ports, &other.ports)
                    && Arc::ptr_eq(&first.classes, &other.classes)
            })
        };
        let mut compiler = Compiler::new();
        let mut state = compiler.compile(&cluster, &view);
        assert!(shared(&state), "a full compile computes replicas once");

        // A policy deleted, then one added: each placed once for all three.
        let first = ObjectKey::new("x", "a-first");
        cluster.policies.remove(&first);
        let change = ClusterChange::Policy(first);
        assert_eq!(
            compiler.apply_change(&mut state, &cluster, &view, &change),
            Update::Incremental
        );
        assert!(shared(&state), "after a delete");
        apply_yaml(&mut cluster, LATE);
        let late = ClusterChange::Policy(ObjectKey::new("x", "d-late"));
        compiler.apply_change(&mut state, &cluster, &view, &late);
        assert!(shared(&state), "after an add");
        assert_eq!(compiler.clone().compile(&cluster, &view), state);

        // A change that changes nothing gives the endpoints back the allocation they had.
        let before = state.endpoints[&web(0)].peers.clone();
        compiler.apply_change(&mut state, &cluster, &view, &late);
        assert!(Arc::ptr_eq(&before, &state.endpoints[&web(0)].peers));

        // A new peer identity is one edit of the shared entries, shared again after it.
        let newcomer = pod("x", "other-2")
            .label("app", "other")
            .label("v", "2")
            .ip("10.0.0.31");
        cluster.apply(newcomer.into());
        let key = ObjectKey::new("x", "other-2");
        assert_eq!(
            compiler.apply_pod_change(&mut state, &cluster, &view, &key),
            Update::Incremental
        );
        assert!(shared(&state), "after a new identity");
        assert!(!Arc::ptr_eq(&before, &state.endpoints[&web(0)].peers));
        assert_eq!(compiler.clone().compile(&cluster, &view), state);
    }
}
